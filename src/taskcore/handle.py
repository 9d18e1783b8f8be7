"""Handles on enqueued tasks: status, result, cancel."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .backend import TaskRecord
from .errors import ResultTimeout, TaskCancelled, TaskError, TaskFailed
from .states import State

if TYPE_CHECKING:
    from .app import App
    from .tasklogs import LogLine

__all__ = ["TaskHandle"]

R = TypeVar("R")


class TaskHandle(Generic[R]):
    """Refers to one enqueued task by id.

    ``created`` is False when a unique key matched an existing task; the handle then
    refers to that task.
    """

    def __init__(
        self, app: App, task_id: str, *, created: bool = True, return_type: Any = Any
    ) -> None:
        self.app = app
        self.id = task_id
        self.created = created
        self._return_type = return_type

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    async def record(self) -> TaskRecord | None:
        """The task's current record (``None`` once expired or purged)."""
        return await self.app.backend.get(self.id)

    async def status(self) -> State | None:
        rec = await self.record()
        return None if rec is None else rec.state

    async def cancel(self) -> bool:
        """Cancel the task: at once if waiting, at its next lease renewal if running."""
        [done] = await self.app.backend.cancel([self.id])
        return done

    async def logs(self) -> list[LogLine]:
        """What the task logged while it ran, oldest line first (:meth:`App.task_logs`)."""
        return await self.app.task_logs(self.id)

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the task to finish and return its result.

        Raises:
            ResultTimeout: not finished within ``timeout`` seconds.
            TaskFailed: the task failed or was dead-lettered (its last error attached).
            TaskCancelled: the task was cancelled.
        """
        rec = await self.app.backend.wait_done(self.id, math.inf if timeout is None else timeout)
        if rec is None:
            raise TaskError(
                f"task {self.id} is unknown (never enqueued, or its record expired after its "
                "result TTL)",
                task_id=self.id,
            )
        if rec.state is State.SUCCEEDED:
            if rec.result is None:
                return None  # type: ignore[return-value]
            return self.app.codec.decode(rec.result, self._return_type)  # type: ignore[return-value]
        if rec.state is State.CANCELLED:
            raise TaskCancelled(f"task {self.id} ({rec.task}) was cancelled", task_id=self.id)
        if rec.state in (State.FAILED, State.DEAD):
            last = rec.errors[-1] if rec.errors else None
            detail = f"{last.type}: {last.message}" if last else "no error recorded"
            exc = TaskFailed(
                f"task {self.id} ({rec.task}) ended {rec.state} after {rec.attempt} attempt(s): "
                f"{detail}",
                task_id=self.id,
            )
            exc.errors = rec.errors  # type: ignore[attr-defined]
            raise exc
        raise ResultTimeout(
            f"task {self.id} ({rec.task}) is still {rec.state} after {timeout} s; "
            "wait longer or check that a worker consumes queue "
            f"{rec.queue!r}",
            task_id=self.id,
        )
