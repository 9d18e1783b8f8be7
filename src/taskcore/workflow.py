"""Workflows: chain, group and chord of task signatures, with results passed along.

A workflow is compiled, when it is enqueued, into steps with ids of their own. The
first steps are enqueued at once; every other step travels inside the envelope of the
step(s) before it (:class:`~taskcore.envelope.Step`) and is released by their success:
the worker puts it on its success outcome (``Outcome.then``) and the backend stores it
in the same atomic settle. A worker that dies between the two cannot lose the rest of
the workflow; a step that fails, is dead-lettered or cancelled releases nothing, so
the workflow stops there.

- ``chain(a.s(1), b.s(), c.s())``: ``b`` gets ``a``'s result as its first positional
  argument, ``c`` gets ``b``'s (``.si()`` signatures get none).
- ``group(a.s(1), a.s(2))``: run in parallel; its result is the list of theirs, in
  order.
- ``chord(group(...), cb.s())`` (the same as ``chain(group(...), cb.s())``): ``cb``
  gets that list once every member has succeeded, released by exactly one member's
  settle (a join in the backend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import msgspec

from .backend import FollowUp, Message
from .envelope import Codec, Envelope, Step, new_task_ids
from .errors import ResultTimeout, TaskValidationError
from .handle import TaskHandle
from .states import State

if TYPE_CHECKING:
    from .app import App
    from .task import Task

__all__ = ["Chain", "Chord", "Group", "Signature", "WorkflowHandle", "chain", "chord", "group"]

_encoder = msgspec.json.Encoder()


class Signature:
    """One call of a task in a workflow: ``task.s(*args, **kwargs)``.

    Validated when made: the arguments must fit the task as a complete call, or as a
    call that gets the previous step's result first (``immutable``: complete only).
    The workflow checks which of the two its place needs. A unique task
    (``unique=True``) or a ``unique_key`` is refused: a deduplicated step would never
    release the steps after it.
    """

    def __init__(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs)
        self.options = dict(options or {})
        self.immutable = immutable
        self.body: bytes | None = None  # the complete call, encoded
        complete: TaskValidationError | None = None
        try:
            self.body = task.encode_args(self.args, self.kwargs)
        except TaskValidationError as exc:
            complete = exc
        self.takes_previous = False
        if not immutable:
            try:
                task.check_partial(self.args, self.kwargs)
                self.takes_previous = True
            except TaskValidationError as exc:
                if complete is not None and _fits(task, (None, *self.args), self.kwargs):
                    raise exc from None  # the number fits a partial call, a type does not
        if complete is not None and not self.takes_previous:
            raise complete
        # the options are checked now as well (the same rules as enqueue's)
        self.plan = task.app._plan(task, **self.options)
        if self.plan.unique_key is not None or self.plan.hash_unique:
            # A duplicate is not stored and the existing task does not carry this
            # workflow's next steps, so they would never be released.
            why = (
                f"unique_key={self.plan.unique_key!r} is given"
                if self.plan.unique_key is not None
                else f"task {task.name!r} is declared unique=True"
            )
            raise TaskValidationError(
                f"{self!r}: {why}, but a workflow step cannot be deduplicated: a "
                "duplicate would not be stored, so the steps after it would never run and "
                "the workflow would wait forever. Enqueue the unique call on its own, or "
                "use a task without unique=True in the workflow; to make enqueueing a "
                "workflow idempotent, give its steps fixed ids (with_options(task_id=...)): "
                "a step whose id exists already is not stored again"
            )

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task.name}.{'si' if self.immutable else 's'}({', '.join(parts)})"

    async def enqueue(self) -> WorkflowHandle:
        """Enqueue this call alone (a workflow of one step)."""
        return await chain(self).enqueue()


class _Workflow:
    app: App

    async def enqueue(self) -> WorkflowHandle:
        """Validate the whole workflow, then enqueue its first steps in one call.

        Raises:
            TaskValidationError: a step cannot take what its place passes in (the
                first steps get nothing; a step after a group gets a list).
        """
        graph = _Graph()
        exits, as_list = graph.add(self, [], False)
        roots = graph.roots()
        handle = WorkflowHandle(
            self.app,
            [(n.id, n.sig.task.name) for n in graph.order],
            [n.id for n in exits],
            as_list,
        )
        await self.app.enqueue_steps(roots)
        return handle


class Chain(_Workflow):
    """Steps one after the other, each getting the previous result; see :func:`chain`."""

    def __init__(self, steps: Sequence[Signature | _Workflow]) -> None:
        if not steps:
            raise TaskValidationError("chain() needs at least one step")
        self.steps = list(steps)
        self.app = _app_of(self.steps)


class Group(_Workflow):
    """Members run in parallel; the result is the list of theirs; see :func:`group`."""

    def __init__(self, members: Sequence[Signature | _Workflow]) -> None:
        if not members:
            raise TaskValidationError("group() needs at least one member")
        self.members = list(members)
        self.app = _app_of(self.members)


class Chord(Chain):
    """A group and a callback that gets the list of its results; see :func:`chord`."""

    def __init__(self, header: Group | Sequence[Signature | _Workflow], body: Signature) -> None:
        g = header if isinstance(header, Group) else Group(header)
        super().__init__([g, body])


def chain(*steps: Signature | _Workflow) -> Chain:
    """Run ``steps`` one after the other; each gets the previous result as its first
    positional argument (a group's: the list of its members' results)."""
    return Chain(steps)


def group(*members: Signature | _Workflow) -> Group:
    """Run ``members`` in parallel; the group's result is the list of theirs, in order."""
    return Group(members)


def chord(header: Group | Sequence[Signature | _Workflow], body: Signature) -> Chord:
    """Run the group ``header``, then ``body`` with the list of its results, once all of
    its members have succeeded (if one fails, ``body`` never runs)."""
    return Chord(header, body)


def _fits(task: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    try:
        task.signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _app_of(items: Sequence[Signature | _Workflow]) -> App:
    apps = {id(x.task.app if isinstance(x, Signature) else x.app): x for x in items}
    if len(apps) != 1:
        raise TaskValidationError("the steps of a workflow must belong to one App")
    first = items[0]
    return first.task.app if isinstance(first, Signature) else first.app


@attrs.define(eq=False)
class _Node:
    sig: Signature
    id: str
    takes: bool  # gets its parents' results
    gather: bool
    parents: list[_Node]
    then: list[_Node] = attrs.Factory(list)


class _Graph:
    """A workflow's steps, in an order where every step comes after its parents."""

    def __init__(self) -> None:
        self.order: list[_Node] = []

    def add(
        self, item: Signature | _Workflow, parents: list[_Node], as_list: bool
    ) -> tuple[list[_Node], bool]:
        """Add ``item`` after ``parents`` (whose results it gets: as one list if
        ``as_list``); returns its last steps and whether its result is their list."""
        if isinstance(item, Signature):
            return [self._step(item, parents, as_list)], False
        if isinstance(item, Group):
            exits: list[_Node] = []
            for member in item.members:
                ends, member_list = self.add(member, parents, as_list)
                if member_list:
                    raise TaskValidationError(
                        f"a group member ({_describe(member)}) ends in a group: make it a "
                        "chord (a callback after the inner group) so the member has one result"
                    )
                exits += ends
            return exits, True
        if isinstance(item, Chain):
            for step in item.steps:
                parents, as_list = self.add(step, parents, as_list)
            return parents, as_list
        raise TaskValidationError(f"not a workflow step: {item!r}; use task.s(...)")

    def _step(self, sig: Signature, parents: list[_Node], as_list: bool) -> _Node:
        takes = bool(parents) and not sig.immutable
        if takes and not sig.takes_previous:
            raise TaskValidationError(
                f"step {sig!r} cannot take the previous result as its first argument "
                f"(expected {sig.task.name}{sig.task.signature}); leave that argument out, "
                "or use .si() for a step that ignores it"
            )
        if not takes and sig.body is None:
            raise TaskValidationError(
                f"step {sig!r} is missing arguments and has no previous result to take "
                f"(expected {sig.task.name}{sig.task.signature})"
            )
        node = _Node(sig, sig.plan.task_id or "", takes, as_list, list(parents))
        for p in parents:
            p.then.append(node)
        self.order.append(node)
        return node

    def roots(self) -> list[Step]:
        """Give every step its id and freeze the graph into the first steps' Steps."""
        fresh = iter(new_task_ids(len(self.order)))
        seen: set[str] = set()
        for node in self.order:
            node.id = node.id or next(fresh)
            if node.id in seen:
                raise TaskValidationError(f"task_id={node.id!r} is given to two steps")
            seen.add(node.id)
        frozen: dict[int, Step] = {}
        for node in reversed(self.order):  # children first: a Step holds its followers
            frozen[id(node)] = _freeze(node, [frozen[id(c)] for c in node.then])
        return [frozen[id(n)] for n in self.order if not n.parents]


def _freeze(node: _Node, then: list[Step]) -> Step:
    sig, plan = node.sig, node.sig.plan
    if node.takes:
        args = _encoder.encode({"a": list(sig.args), "k": sig.kwargs})
    else:
        assert sig.body is not None  # checked by _Graph._step
        args = sig.body
    return Step(
        id=node.id,
        task=plan.task,
        args=msgspec.Raw(args),
        queue=plan.queue,
        priority=plan.priority,
        delay=plan.delay,
        eta=plan.eta,
        deadline=plan.deadline,
        timeout=plan.timeout,
        result_ttl=plan.result_ttl,
        fairness_key=plan.fairness_key,
        rate_key=plan.rate_key,
        headers=plan.headers,
        needs=[p.id for p in node.parents] if node.takes else [],
        gather=node.gather,
        after=max(1, len(node.parents)),
        then=then,
    )


def _describe(item: Signature | _Workflow) -> str:
    return repr(item) if isinstance(item, Signature) else type(item).__name__.lower()


def step_message(
    step: Step, now: float, codec: Codec, trace: Mapping[str, str] | None = None
) -> tuple[Envelope, Message]:
    """The envelope and message of a step released at ``now``."""
    env = Envelope(
        id=step.id,
        task=step.task,
        args=step.args,
        queue=step.queue,
        priority=step.priority,
        enqueued_at=now,
        deadline=step.deadline,
        timeout=step.timeout,
        result_ttl=step.result_ttl,
        trace=dict(trace) if trace else {},
        headers=dict(step.headers),
        rate_key=step.rate_key,
        needs=step.needs,
        gather=step.gather,
        then=step.then,
    )
    msg = Message(
        id=step.id,
        task=step.task,
        queue=step.queue,
        priority=step.priority,
        enqueued_at=now,
        eligible_at=now + step.delay if step.eta is None else step.eta,
        body=codec.encode_envelope(env),
        deadline=step.deadline,
        fairness_key=step.fairness_key,
        result_ttl=step.result_ttl,
    )
    return env, msg


def follow_ups(env: Envelope, now: float, codec: Codec) -> tuple[FollowUp, ...]:
    """What a successful run of ``env`` releases (its ``then`` steps)."""
    return tuple(
        FollowUp(step_message(step, now, codec, env.trace)[1], step.after) for step in env.then
    )


class WorkflowHandle:
    """Refers to an enqueued workflow: its steps' ids, its result, cancellation.

    ``id``: the last step's id (a chain's, a chord's callback's; for a group, the last
    member's). ``ids``: every step, parents before children. A step after one that
    has not finished yet does not exist yet (``app.handle(id).status()`` is None).
    """

    def __init__(
        self, app: App, order: Sequence[tuple[str, str]], exits: Sequence[str], as_list: bool
    ) -> None:
        self.app = app
        self.steps = list(order)  # (id, task name)
        self.ids = [tid for tid, _ in order]
        self.exits = list(exits)
        self.as_list = as_list
        self.id = self.exits[-1]

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.ids[0]}..{self.id} steps={len(self.ids)}>"

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the workflow to finish; return its result (a group's: the list of
        its members' results, in order).

        Raises:
            TaskFailed: a step failed or was dead-lettered; the steps after it never ran.
                The error names that step (``task_id``) and its last error.
            TaskCancelled: a step was cancelled; likewise.
            ResultTimeout: not finished within ``timeout`` seconds.
        """
        end = math.inf if timeout is None else anyio.current_time() + timeout
        records = {}
        for tid, task in self.steps:
            rec = await self._wait(tid, task, end, timeout)
            if rec.state is not State.SUCCEEDED:
                await TaskHandle(self.app, tid).result(timeout=0)  # raises its error
            records[tid] = rec
        values = []
        for tid in self.exits:
            rec = records[tid]
            task_obj = self.app.tasks.get(rec.task)
            kind = Any if task_obj is None else task_obj.return_type
            values.append(None if rec.result is None else self.app.codec.decode(rec.result, kind))
        return values if self.as_list else values[0]

    async def _wait(self, tid: str, task: str, end: float, timeout: float | None) -> Any:
        """Wait for step ``tid`` to end; every step before it has succeeded."""
        pause = _LOOK_AGAIN_FIRST
        while True:
            left = end - anyio.current_time()
            # event-driven once the step exists (each backend wakes wait_done on settle)
            rec = await self.app.backend.wait_done(tid, max(0.0, left))
            if rec is not None and rec.state in (State.SUCCEEDED, *_STOPPED):
                return rec
            if left <= 0:
                raise ResultTimeout(
                    f"workflow step {tid} ({task}) is "
                    f"{'not created yet' if rec is None else rec.state} after {timeout} s; "
                    "wait longer or check that workers consume its queue",
                    task_id=tid,
                )
            if rec is None:
                # Its parents succeeded (result() waits for the steps in order), yet the
                # step does not exist. Memory and PostgreSQL store it in its parents'
                # settle, so only Redis gets here: the settling client delivers the
                # parent's outbox a round trip after the parent's record, or, if that
                # client died, the next reap() of any worker's maintenance does. The
                # Backend seam has no notification for a task coming into existence
                # (wait_done needs its record), so look again, backing off from a round
                # trip to a bound well under a maintenance interval, on the app's clock
                # (a FakeClock in tests) and within the caller's timeout.
                with anyio.move_on_after(left):
                    await self.app.clock.sleep(pause)
                pause = min(pause * 2, _LOOK_AGAIN_MAX)

    async def cancel(self) -> list[bool]:
        """Cancel every step that exists and has not finished (the steps after a
        cancelled one are never released)."""
        return await self.app.cancel(self.ids)


_STOPPED = (State.FAILED, State.DEAD, State.CANCELLED)
# seconds between looks for a step not delivered yet (Redis only: see WorkflowHandle._wait)
_LOOK_AGAIN_FIRST = 0.005
_LOOK_AGAIN_MAX = 0.5
