"""A blocking facade for sync callers (Django, Flask, scripts): same names, no await.

::

    with app.blocking() as tc:
        handle = tc.enqueue(resize, 42, width=320)
        print(handle.result(timeout=10))
        flow = tc.enqueue_workflow(chain(fetch.s(url), parse.s()))
        print(flow.result(timeout=60))

The facade runs the app's event loop in a background thread (an anyio blocking
portal); every call is forwarded there and waited for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .backend import QueueStats, TaskRecord
from .errors import TaskcoreError
from .handle import TaskHandle
from .states import State
from .task import Task

if TYPE_CHECKING:
    from .app import App
    from .ingest import Reject
    from .tasklogs import LogLine
    from .workflow import Signature, WorkflowHandle, _Workflow

__all__ = ["BlockingApp", "BlockingHandle", "BlockingWorkflowHandle"]

R = TypeVar("R")
T = TypeVar("T")


class BlockingHandle(Generic[R]):
    """The blocking twin of :class:`~taskcore.handle.TaskHandle`."""

    def __init__(self, portal: BlockingPortal, handle: TaskHandle[R]) -> None:
        self._portal = portal
        self._handle = handle
        self.id = handle.id
        self.created = handle.created

    def result(self, timeout: float | None = None) -> R:
        return self._portal.call(lambda: self._handle.result(timeout))

    def status(self) -> State | None:
        return self._portal.call(self._handle.status)

    def record(self) -> TaskRecord | None:
        return self._portal.call(self._handle.record)

    def cancel(self) -> bool:
        return self._portal.call(self._handle.cancel)

    def logs(self) -> list[LogLine]:
        """What the task logged while it ran, oldest line first (:meth:`App.task_logs`)."""
        return self._portal.call(self._handle.logs)


class BlockingWorkflowHandle:
    """The blocking twin of :class:`~taskcore.workflow.WorkflowHandle`."""

    def __init__(self, portal: BlockingPortal, handle: WorkflowHandle) -> None:
        self._portal = portal
        self._handle = handle
        self.id = handle.id
        self.ids = list(handle.ids)

    def __repr__(self) -> str:
        return repr(self._handle)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to finish; see :meth:`WorkflowHandle.result`."""
        return self._portal.call(lambda: self._handle.result(timeout))

    def cancel(self) -> list[bool]:
        """Cancel every step that exists and has not finished."""
        result: list[bool] = self._portal.call(self._handle.cancel)
        return result

    def step(self, task_id: str) -> BlockingHandle[Any]:
        """A handle on one step (``task_id`` from :attr:`ids`)."""
        return BlockingHandle(self._portal, self._handle.app.handle(task_id))


class BlockingApp:
    """Blocking versions of the :class:`~taskcore.app.App` calls."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._stack: contextlib.ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def __enter__(self) -> BlockingApp:
        stack = contextlib.ExitStack()
        self._portal = stack.enter_context(start_blocking_portal())
        self._stack = stack
        self._portal.call(self.app.open)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stack is not None and self._portal is not None:
            try:
                self._portal.call(self.app.aclose)
            finally:
                self._stack.close()
                self._stack = self._portal = None

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            raise TaskcoreError("use the blocking facade inside 'with app.blocking() as tc:'")
        return self._portal

    def _call(self, fn: Callable[[], Any]) -> Any:
        return self.portal.call(fn)

    def enqueue(self, task: Task[Any, R], *args: Any, **kwargs: Any) -> BlockingHandle[R]:
        handle = self._call(lambda: task.enqueue(*args, **kwargs))
        return BlockingHandle(self.portal, handle)

    def enqueue_with(
        self, task: Task[Any, R], options: Mapping[str, Any], *args: Any, **kwargs: Any
    ) -> BlockingHandle[R]:
        """Enqueue with per-call options (see :meth:`Task.with_options`)."""
        bound = task.with_options(**options)
        handle = self._call(lambda: bound.enqueue(*args, **kwargs))
        return BlockingHandle(self.portal, handle)

    def enqueue_many(
        self, task: Task[Any, R], calls: Sequence[Any], **options: Any
    ) -> list[BlockingHandle[R]]:
        handles = self._call(lambda: self.app.enqueue_many(task, calls, **options))
        return [BlockingHandle(self.portal, h) for h in handles]

    def emit(self, event: str, *args: Any, **kwargs: Any) -> list[BlockingHandle[Any]]:
        """Enqueue every task subscribed to ``event``; see :meth:`App.emit`."""
        handles = self._call(lambda: self.app.emit(event, *args, **kwargs))
        return [BlockingHandle(self.portal, h) for h in handles]

    def enqueue_workflow(self, workflow: Signature | _Workflow) -> BlockingWorkflowHandle:
        """Enqueue a chain, group, chord (or one signature) built with ``task.s()``;
        see :meth:`Chain.enqueue <taskcore.workflow.Chain.enqueue>`.

        Raises:
            TaskValidationError: a step cannot take what its place passes in; nothing
                is enqueued.
        """
        handle = self._call(workflow.enqueue)
        return BlockingWorkflowHandle(self.portal, handle)

    def handle(self, task_id: str) -> BlockingHandle[Any]:
        return BlockingHandle(self.portal, self.app.handle(task_id))

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        result: list[QueueStats] = self._call(lambda: self.app.stats(queues))
        return result

    def list_tasks(self, **filter: Any) -> list[TaskRecord]:
        result: list[TaskRecord] = self._call(lambda: self.app.list_tasks(**filter))
        return result

    def cancel(self, task_ids: Sequence[str]) -> list[bool]:
        result: list[bool] = self._call(lambda: self.app.cancel(task_ids))
        return result

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[TaskRecord]:
        result: list[TaskRecord] = self._call(lambda: self.app.dead_letters(queue, limit))
        return result

    def pause(self, queue: str) -> None:
        self._call(lambda: self.app.pause(queue))

    def resume(self, queue: str) -> None:
        self._call(lambda: self.app.resume(queue))

    def retry_dead(self, task_ids: Sequence[str]) -> list[bool]:
        result: list[bool] = self._call(lambda: self.app.retry_dead(task_ids))
        return result

    def purge(self, queue: str, states: Sequence[State] = (State.DEAD,)) -> int:
        result: int = self._call(lambda: self.app.purge(queue, states))
        return result

    def task_logs(self, task_id: str, *, runs: int = 100) -> list[LogLine]:
        """What a task logged while it ran, oldest line first; see :meth:`App.task_logs`."""
        result: list[LogLine] = self._call(lambda: self.app.task_logs(task_id, runs=runs))
        return result

    def rejects(
        self,
        run: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Reject]:
        """The records ingestion refused, oldest first; see :meth:`App.rejects`."""
        result: list[Reject] = self._call(
            lambda: self.app.rejects(run, since=since, until=until, limit=limit)
        )
        return result
