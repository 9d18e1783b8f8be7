"""Model-based testing of a backend against the in-memory reference (hypothesis).

:func:`backend_state_machine` builds a :class:`hypothesis.stateful.RuleBasedStateMachine`
that drives random sequences of operations (enqueue with priorities, delays, unique
and fairness keys; claim; settle with every outcome kind and stale tokens; extend;
cancel; retry; purge; pause; moving the fake clock; reap; coordination calls;
workflow steps whose successes release follow-ups and joins (``Outcome.then``); journal
appends, trims and reads) against the backend under test and the reference side by
side, and asserts that every observable result is the same: claimed ids in order,
lease fields, settle and extend answers, task records, queue statistics, journal
reads. Follow-ups are also checked against the machine's own account right after each
workflow step: released exactly when an accepted success (or a join's ``after``-th
distinct parent) releases them, never by a refused or unsuccessful outcome. Every
example opens (after ``declare``) with one workflow step and a journal append and
trim, as the first examples of a short run rarely reach those rules. A backend that
hands tasks to registered idle workers at enqueue (Redis) passes ``idle_waiter``: the
machine then registers a fake waiter, and each task handed to it must be the one the
reference's claim for it takes, handed exactly when :class:`IdleWaiter` says. Third-party
backends use it like this::

    from hypothesis import settings
    from taskcore.testing.stateful import backend_state_machine

    Machine = backend_state_machine(lambda clock: MyBackend(url, clock=clock))
    TestMyBackendModel = Machine.TestCase
    TestMyBackendModel.settings = settings(max_examples=25, stateful_step_count=30,
                                           deadline=None)

Each example runs on its own event loop (an anyio blocking portal) with one
:class:`~taskcore.clock.FakeClock` shared by both backends; ``make_backend`` must
return a fresh, empty backend every time it is called. Requires ``hypothesis``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import msgspec
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from taskcore.backend import (
    AttemptError,
    Backend,
    EnqueueResult,
    FollowUp,
    JournalEntry,
    Lease,
    Message,
    Outcome,
    OutcomeKind,
    QueueSpec,
    TaskFilter,
    TaskRecord,
    WorkerInfo,
)
from taskcore.clock import FakeClock
from taskcore.memory import MemoryBackend
from taskcore.scheduling import SchedulingPolicy
from taskcore.states import State
from taskcore.testing.conformance import make_message

__all__ = [
    "POLICIES",
    "BackendFactory",
    "HandOff",
    "IdleWaiter",
    "WaiterInbox",
    "backend_state_machine",
]

T = TypeVar("T")

BackendFactory = Callable[[FakeClock], contextlib.AbstractAsyncContextManager[Backend]]

POLICIES: tuple[SchedulingPolicy, ...] = (
    SchedulingPolicy.fifo(),
    SchedulingPolicy.strict_priority(),
    SchedulingPolicy.deadline_aware(),
    SchedulingPolicy.deadline_aware(batch_horizon=100.0),
    SchedulingPolicy.weighted_fair(),
    SchedulingPolicy.weighted_fair({"a": 3.0, "b": 0.5}, by="key", default_weight=1.0),
)
"""The policies a machine picks from for its queues."""


@attrs.frozen
class HandOff:
    """A task that an enqueue leased to a registered idle waiter (see :class:`IdleWaiter`)."""

    message: Message
    token: int
    attempt: int
    claimed_at: float
    ready_at: float | None
    next_due: float | None
    """The due time of the queue's first scheduled task, as the backend told the waiter."""


@attrs.frozen
class WaiterInbox:
    """What reached a registered idle waiter since it was last read: tasks handed to it,
    wake-up markers, and whether it is still registered."""

    handed: tuple[HandOff, ...]
    markers: int
    registered: bool


class IdleWaiter(Protocol):
    """The hand-off of a backend whose idle workers register for it (``idle_waiter`` of
    :func:`backend_state_machine`; the Redis backend has one).

    A registered waiter is handed a task by an enqueue of exactly that one task (the
    call's only message for the waiter's queue) when the task is created ready now,
    the registration is live (``until`` >= now), the queue is not paused, its policy is
    not weighted fair, nothing else is queued in it and no scheduled or retrying task
    of it is due: then it is the task the waiter's claim would take. The task is leased
    to the waiter (token 1, attempt 1, the waiter's worker and lease seconds) and the
    registration removed. Other wake-ups push a marker and remove it as well. A waiter
    on several queues is registered on each, with one list: once something reached
    that list, no other of its queues hands it a task (their wake-ups may still push
    markers). The machine registers one fake waiter, and checks each hand-off against
    the reference claiming for it."""

    async def register(
        self,
        backend: Backend,
        queues: Sequence[str],
        worker: str,
        lease_seconds: float,
        until: float,
    ) -> None:
        """Register the fake waiter on ``queues`` until ``until`` (its list is empty)."""

    async def unregister(self, backend: Backend, queues: Sequence[str]) -> None:
        """Remove the fake waiter's registrations on ``queues``, if any."""

    async def take(self, backend: Backend, queues: Sequence[str]) -> WaiterInbox:
        """What reached the fake waiter of ``queues``, read and removed; ``registered``:
        whether it is still registered on every one of them."""


_LEASE = 30.0
_STATES = tuple(State)
# where the fake idle waiter registers: on one queue, or on every queue with that one
# first or last (the queue whose keys hold its list)
_waiter_on = st.sampled_from(["this", "this", "first", "last"])

_task_spec = st.fixed_dictionaries(
    {
        "queue": st.integers(0, 9),
        "priority": st.integers(0, 4),
        "delay": st.sampled_from([0.0, 0.0, 0.0, 2.0, 10.0, 45.0]),
        "unique_key": st.none() | st.sampled_from(["u1", "u2", "u3"]),
        "fairness_key": st.none() | st.sampled_from(["a", "b", "c"]),
        "deadline": st.none() | st.sampled_from([1.0, 100.0, 4000.0]),
        "task": st.sampled_from(["mod.a", "mod.b"]),
    }
)

_outcome_spec = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(list(OutcomeKind)),
        "token": st.sampled_from(["current", "current", "current", "stale", "bogus"]),
        "error": st.booleans(),
        "result": st.none() | st.sampled_from([b"", b"42", b'{"x":1}']),
        "retry_in": st.none() | st.sampled_from([0.0, 1.0, 5.0]),
        "result_ttl": st.none() | st.sampled_from([1.0, 10.0]),
        "late": st.booleans(),
    }
)


# workflow steps (Outcome.then): what a parent's outcome is, and what it releases.
# "new" is a follow-up never released before (after 1), "join" one more parent of a
# join (a new one, or one still waiting), "again" the id of a follow-up released
# before (stored once: a second release finds it).
_step_spec = st.fixed_dictionaries(
    {
        "token": st.sampled_from(["current"] * 6 + ["stale", "bogus"]),
        "kind": st.sampled_from([OutcomeKind.SUCCEEDED] * 6 + list(OutcomeKind)),
        "result_ttl": st.sampled_from([None, None, 1.0, 10.0, 100.0]),
        "then": st.lists(
            st.sampled_from(["new", "new", "join", "join", "again"]), min_size=1, max_size=3
        ),
    }
)

_STREAMS = ("audit", "metrics", "logs")
_JOURNAL_KEYS = ("k1", "k2", "k3")
# journal times relative to the clock: several records share a time, and the bounds
# of reads and trims fall on records' times as well as between them
_AT = (-100.0, -10.0, -1.0, 0.0, 0.0, 0.0, 0.25)
_BOUND = (-100.0, -50.0, -10.0, -1.0, 0.0, 0.25, 1.0)
# journal_trim's cutoffs, relative to the clock (NaN: the stream is left alone)
_cutoffs = st.dictionaries(
    st.sampled_from([*_STREAMS, "no-such-stream"]),
    st.sampled_from([*_BOUND, math.inf, -math.inf, math.nan]),
    max_size=3,
)
_journal_batch = st.lists(
    st.tuples(
        st.sampled_from(_STREAMS),
        st.sampled_from(_AT),
        st.none() | st.sampled_from(_JOURNAL_KEYS),
        st.sampled_from([b"", b"\x00\xff", b"p"]),
    ),
    min_size=1,
    max_size=8,
)


async def _records(backend: Backend, ids: Sequence[str]) -> list[TaskRecord | None]:
    return [await backend.get(i) for i in ids]


async def _journal_views(backend: Backend) -> list[tuple[str, list[JournalEntry]]]:
    """Every stream read whole (oldest first), and each key's records in it."""
    out = []
    for stream in _STREAMS:
        out.append(
            (stream, await backend.journal_read(stream, limit=1_000_000, newest_first=False))
        )
        for key in _JOURNAL_KEYS:
            got = await backend.journal_read(stream, key=key, limit=1_000_000)
            out.append((f"{stream} key {key} (newest first)", got))
    return out


def _lease_view(lease: Lease) -> tuple[Any, ...]:
    """What must agree between backends (tokens are each backend's own)."""
    return (lease.message, lease.attempt, lease.worker, lease.expires_at, lease.claimed_at)


def backend_state_machine(
    make_backend: BackendFactory,
    *,
    make_reference: BackendFactory | None = None,
    queues: Sequence[str] = ("q1", "q2"),
    async_backend: str = "asyncio",
    idle_waiter: IdleWaiter | None = None,
) -> type[RuleBasedStateMachine]:
    """A state machine comparing ``make_backend``'s backends with the reference.

    Args:
        make_backend: builds a fresh, empty backend under test on the given clock.
        make_reference: builds the reference (default: :class:`MemoryBackend`).
        queues: queue names the machine uses.
        async_backend: anyio backend for the event loop ("asyncio" or "trio").
        idle_waiter: the backend's hand-off to registered idle workers, if it has one
            (:class:`IdleWaiter`): the machine then registers a fake waiter (a rule of
            its own), reads what reached it after every step that can hand off or wake,
            makes the reference claim each task handed to it, and checks that a task
            was handed exactly when the conditions there hold.

    Returns:
        The machine class; its ``TestCase`` attribute is a unittest/pytest test.
    """
    reference: BackendFactory = make_reference or (lambda clock: MemoryBackend(clock=clock))
    names = tuple(queues)

    class BackendComparison(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = FakeClock()
            self._stack = contextlib.ExitStack()
            self.portal: BlockingPortal = self._stack.enter_context(
                start_blocking_portal(backend=async_backend)
            )
            self.ref: Backend = self._stack.enter_context(
                self.portal.wrap_async_context_manager(reference(self.clock))
            )
            self.sut: Backend = self._stack.enter_context(
                self.portal.wrap_async_context_manager(make_backend(self.clock))
            )
            self.messages: dict[str, Message] = {}
            self.leases: dict[str, tuple[Lease, Lease]] = {}
            # ids made here, not by new_task_id: a replayed example draws the same
            # tasks from sorted(self.messages) and sorted(self.leases)
            self._ids = itertools.count()
            # workflow follow-ups released so far (by this machine's own account),
            # and the joins waiting: id -> (message, after, parents, kept until)
            self.released: dict[str, Message] = {}
            self.joins: dict[str, tuple[Message, int, set[str], float]] = {}
            self._payloads = itertools.count()
            self.journal_dirty = False
            # the fake idle waiter (idle_waiter): queues, worker, lease seconds, until
            self.waiter: tuple[tuple[str, ...], str, float, float] | None = None

        def teardown(self) -> None:
            self._stack.close()

        # -- helpers ------------------------------------------------------------
        def both(self, fn: Callable[[Backend], Awaitable[T]]) -> tuple[T, T]:
            return self.portal.call(fn, self.ref), self.portal.call(fn, self.sut)

        def same(self, fn: Callable[[Backend], Awaitable[T]], what: str) -> T:
            expected, got = self.both(fn)
            assert got == expected, f"{what}: reference {expected!r} != backend {got!r}"
            return got

        def new_id(self, kind: str) -> str:
            return f"{kind}{next(self._ids):05d}"

        def running(self) -> set[str]:
            """Leased ids whose lease is the current one: every claim goes through the
            machine, so a task running in the reference runs under the lease kept."""
            mine = TaskFilter(state=State.RUNNING, limit=1_000_000)
            return {r.id for r in self.portal.call(self.ref.list_tasks, mine)}

        def enqueue_both(self, msgs: list[Message]) -> list[EnqueueResult]:
            """Enqueue on both sides; then what reached the fake waiter (a task handed
            to it exactly when :class:`IdleWaiter` says)."""
            before = self.hand_off_states()
            got = self.same(lambda b: b.enqueue(msgs), "enqueue")
            assert len(got) == len(msgs)
            if self.waiter is not None:
                # the backend stores the call queue by queue, in order of first mention
                by_queue: dict[str, list[int]] = {}
                for i, m in enumerate(msgs):
                    by_queue.setdefault(m.queue, []).append(i)
                expect = False
                for q, mine in by_queue.items():
                    if q not in before:
                        continue
                    idle, pushes = before[q]
                    ready = [i for i in mine if got[i].created and got[i].state is State.QUEUED]
                    if ready and pushes:  # a push to the waiter's list: nothing after it
                        expect = idle and len(mine) == 1 and len(ready) == 1
                        break
                self.read_waiter(expect, f"enqueue of {[m.id for m in msgs]}")
            return got

        def hand_off_states(self, queued: int = 0) -> dict[str, tuple[bool, bool]]:
            """For each of the fake waiter's queues: (``idle_for_hand_off``, whether work
            that becomes ready there pushes something to the waiter: it is registered,
            live, and the queue is not paused)."""
            if self.waiter is None:
                return {}
            out = {}
            live = self.waiter[3] >= self.clock.now()
            for q in self.waiter[0]:
                [stats] = self.portal.call(self.ref.stats, [q])
                out[q] = (self.idle_for_hand_off(q, queued), live and not stats.paused)
            return out

        def idle_for_hand_off(self, q: str, queued: int = 0) -> bool:
            """The fake waiter is registered (live) on ``q``, and the reference's state of
            ``q`` lets a hand-off happen there: not paused, not weighted fair, ``queued``
            tasks queued, no scheduled or retrying task due."""
            if self.waiter is None or q not in self.waiter[0]:
                return False
            until = self.waiter[3]
            now = self.clock.now()
            if until < now:
                return False
            [stats] = self.portal.call(self.ref.stats, [q])
            if stats.paused or stats.policy.kind == "fair":
                return False
            if stats.states.get(State.QUEUED, 0) != queued:
                return False
            return not any(
                r.eligible_at <= now
                for s in (State.SCHEDULED, State.RETRYING)
                for r in self.portal.call(self.ref.list_tasks, TaskFilter(q, s, limit=1_000_000))
            )

        def next_due(self, queue: str) -> float | None:
            """The reference's first scheduled or retrying task's due time in ``queue``."""
            return min(
                (
                    r.eligible_at
                    for s in (State.SCHEDULED, State.RETRYING)
                    for r in self.portal.call(
                        self.ref.list_tasks, TaskFilter(queue, s, limit=1_000_000)
                    )
                ),
                default=None,
            )

        def read_waiter(self, expect: bool | None, what: str) -> None:
            """Read what reached the fake waiter (the backend's hand-off list): a task
            handed to it is claimed for it on the reference, which must lease the same
            task (``expect``: whether one must have been handed; None: not known)."""
            if idle_waiter is None or self.waiter is None:
                return
            qs, worker, lease_seconds, _ = self.waiter
            inbox = self.portal.call(idle_waiter.take, self.sut, qs)
            pushed = len(inbox.handed) + inbox.markers
            # every push unregisters the waiter on its queue: one at most per queue, and
            # one task at most (the first push makes it busy for the others)
            assert pushed <= len(qs), f"{what}: {pushed} pushes to {len(qs)} registrations"
            assert len(inbox.handed) <= 1, f"{what}: {inbox}"
            if len(qs) == 1:
                assert inbox.registered == (pushed == 0), f"{what}: {inbox} (registered?)"
            elif not pushed:
                assert inbox.registered, f"{what}: {inbox} (registered?)"
            if expect is not None:
                assert bool(inbox.handed) == expect, (
                    f"{what}: hand-off expected {expect}, waiter got {inbox}"
                )
            if pushed:  # (a real waiter's claim unregisters it on the others)
                self.portal.call(idle_waiter.unregister, self.sut, qs)
                self.waiter = None
            for h in inbox.handed:
                assert (h.token, h.attempt) == (1, 1), f"{what}: handed {h}"
                q = h.message.queue
                due = self.next_due(q)
                [ref] = self.portal.call(self.ref.claim, [q], 1, lease_seconds, worker)
                mine = Lease(
                    h.message,
                    h.token,
                    h.attempt,
                    worker,
                    h.claimed_at + lease_seconds,
                    h.claimed_at,
                    h.ready_at,
                )
                assert (*_lease_view(mine), mine.ready_at) == (
                    *_lease_view(ref),
                    ref.ready_at,
                ), f"{what}: handed {mine}, the reference's claim took {ref}"
                assert ref.attempt == 1, f"{what}: the reference's claim took {ref}"
                assert h.next_due == due, f"{what}: handed {h}, the reference's next due {due}"
                self.leases[ref.message.id] = (ref, mine)

        def pick(self, data: st.DataObject, pool: Sequence[str], extra: bool = True) -> list[str]:
            choices = list(pool) + (["no-such-task"] if extra else [])
            if not choices:
                return []
            return data.draw(st.lists(st.sampled_from(choices), max_size=5), label="ids")

        # -- rules ----------------------------------------------------------------
        @initialize(
            policies=st.lists(st.sampled_from(POLICIES), min_size=len(names), max_size=len(names)),
            data=st.data(),
        )
        def declare(self, policies: list[SchedulingPolicy], data: st.DataObject) -> None:
            specs = [QueueSpec(q, p) for q, p in zip(names, policies, strict=True)]
            self.both(lambda b: b.declare(specs))
            # Every example opens with a workflow step and journal records: the first
            # few dozen examples of a run (all that CI runs) are mostly one rule
            # repeated, often not these.
            self.workflow(
                data,
                data.draw(st.lists(_task_spec, min_size=1, max_size=3), label="parents"),
                3,
                data.draw(st.lists(_step_spec, min_size=1, max_size=3), label="steps"),
                data.draw(st.booleans(), label="via claim"),
            )
            self.journal_append(data.draw(_journal_batch, label="journal"), False)
            self.journal_trim(data.draw(_cutoffs, label="trim"))

        @rule(specs=st.lists(_task_spec, min_size=1, max_size=6), data=st.data())
        def enqueue(self, specs: list[dict[str, Any]], data: st.DataObject) -> None:
            msgs = []
            now = self.clock.now()
            for spec in specs:
                s = dict(spec)
                deadline = s.pop("deadline")
                queue = names[s.pop("queue") % len(names)]
                msgs.append(
                    make_message(
                        self.clock,
                        queue=queue,
                        deadline=None if deadline is None else now + deadline,
                        task_id=self.new_id("t"),
                        **s,
                    )
                )
            again = bool(self.messages) and data.draw(st.booleans(), label="re-enqueue an old id")
            if again:
                old = self.messages[data.draw(st.sampled_from(sorted(self.messages)))]
                other = data.draw(st.sampled_from(names), label="into queue")
                msgs.append(msgspec.structs.replace(old, queue=other))
            for m in msgs:
                self.messages.setdefault(m.id, m)
            self.enqueue_both(msgs)

        @rule(
            qs=st.lists(st.sampled_from([*names, "no-such-queue"]), min_size=1, max_size=3),
            limit=st.integers(1, 8),
            max_priority=st.integers(0, 4),
            worker=st.sampled_from(["w1", "w2"]),
        )
        def claim(self, qs: list[str], limit: int, max_priority: int, worker: str) -> None:
            self.claim_both(qs, limit, max_priority, worker)

        def claim_both(
            self,
            qs: list[str],
            limit: int,
            max_priority: int,
            worker: str,
            settle: Callable[[int], list[Outcome]] | None = None,
        ) -> None:
            """Claim on both sides (``settle(side)``: outcomes handed in with it)."""
            a, b = (
                self.portal.call(
                    be.claim,
                    qs,
                    limit,
                    _LEASE,
                    worker,
                    max_priority,
                    settle(side) if settle else (),
                )
                for side, be in enumerate((self.ref, self.sut))
            )
            assert [_lease_view(x) for x in b] == [_lease_view(x) for x in a], (
                f"claim({qs}, {limit}, max_priority={max_priority}): reference "
                f"{[x.message.id for x in a]} != backend {[x.message.id for x in b]}"
            )
            for x, y in zip(a, b, strict=True):
                self.leases[x.message.id] = (x, y)

        @precondition(lambda self: bool(self.leases))
        @rule(data=st.data(), specs=st.lists(_outcome_spec, min_size=1, max_size=5))
        def settle(self, data: st.DataObject, specs: list[dict[str, Any]]) -> None:
            ids = [data.draw(st.sampled_from(sorted(self.leases))) for _ in specs]
            now = self.clock.now()

            def outcomes(side: int) -> list[Outcome]:
                out = []
                for task_id, s in zip(ids, specs, strict=True):
                    lease = self.leases[task_id][side]
                    token = {
                        "current": lease.token,
                        "stale": lease.token - 1,
                        "bogus": lease.token + 1000,
                    }[s["token"]]
                    err = (
                        AttemptError(lease.attempt, "ValueError", f"boom {task_id[-4:]}", "tb", now)
                        if s["error"]
                        else None
                    )
                    retry_at = None if s["retry_in"] is None else now + s["retry_in"]
                    out.append(
                        Outcome(
                            task_id,
                            token,
                            s["kind"],
                            now,
                            result=s["result"],
                            error=err,
                            retry_at=retry_at,
                            result_ttl=s["result_ttl"],
                            late=s["late"],
                        )
                    )
                return out

            expected = self.portal.call(self.ref.settle, outcomes(0))
            got = self.portal.call(self.sut.settle, outcomes(1))
            assert got == expected, f"settle: reference {expected} != backend {got}"

        @precondition(lambda self: bool(self.leases))
        @rule(data=st.data(), seconds=st.sampled_from([10.0, 30.0]), bogus=st.booleans())
        def extend(self, data: st.DataObject, seconds: float, bogus: bool) -> None:
            ids = data.draw(st.lists(st.sampled_from(sorted(self.leases)), min_size=1, max_size=4))

            def pairs(side: int) -> list[tuple[str, int]]:
                return [(i, self.leases[i][side].token + (1000 if bogus else 0)) for i in ids]

            expected = self.portal.call(self.ref.extend, pairs(0), seconds)
            got = self.portal.call(self.sut.extend, pairs(1), seconds)
            assert got == expected, f"extend: reference {expected} != backend {got}"

        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            ids = self.pick(data, sorted(self.messages))
            self.same(lambda b: b.cancel(ids), f"cancel({ids})")

        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            ids = self.pick(data, sorted(self.messages))
            self.same(lambda b: b.retry(ids), f"retry({ids})")

        @rule(
            data=st.data(),
            fresh=st.lists(_task_spec, max_size=2),
            limit=st.integers(1, 3),
            steps=st.lists(_step_spec, min_size=1, max_size=3),
            via_claim=st.booleans(),
        )
        def workflow(
            self,
            data: st.DataObject,
            fresh: list[dict[str, Any]],
            limit: int,
            steps: list[dict[str, Any]],
            via_claim: bool,
        ) -> None:
            """Workflow steps: parents (new tasks claimed here, or running ones) settle
            with follow-ups (``Outcome.then``), by ``settle`` or handed in with a claim.

            Checked against the machine's own account, on both sides, right after: a
            follow-up of an accepted success is there (``after`` 1, or the join's
            ``after``-th distinct parent); one of a refused or unsuccessful outcome, or
            of a join still short of parents, is not; the records agree."""
            own = [  # parents of their own, so that there is work to claim
                make_message(
                    self.clock,
                    queue=names[spec["queue"] % len(names)],
                    priority=spec["priority"],
                    task=spec["task"],
                    task_id=self.new_id("t"),
                )
                for spec in fresh
            ]
            if own:
                self.messages.update((m.id, m) for m in own)
                self.enqueue_both(own)
            # one queue at a time: a claim over several that fills its limit in the
            # first promotes due tasks of the others on PostgreSQL, not on memory (open)
            for q in names:
                self.claim_both([q], limit, 4, "w2")
            if not self.leases:
                return
            live = sorted(self.running() & self.leases.keys())
            # mostly parents that can succeed; some whose lease is gone (refused)
            parents = live * 4 + sorted(self.leases)
            now = self.clock.now()
            draws: list[tuple[str, dict[str, Any], tuple[FollowUp, ...]]] = []
            started: dict[str, tuple[Message, int]] = {}
            for step in steps:
                parent = data.draw(st.sampled_from(parents), label="parent")
                chosen: dict[str, FollowUp] = {}
                for what in step["then"]:
                    if what == "again" and self.released:
                        fid = data.draw(st.sampled_from(sorted(self.released)), label="again")
                        chosen[fid] = FollowUp(self.released[fid])
                    elif what == "join":
                        waiting = sorted(self.joins.keys() | started.keys())
                        fid = data.draw(st.sampled_from(["new", *waiting]), label="join")
                        if fid == "new":
                            after = data.draw(st.sampled_from([2, 3]), label="after")
                            m = make_message(
                                self.clock,
                                queue=data.draw(st.sampled_from(names), label="queue"),
                                task="mod.join",
                                task_id=self.new_id("j"),
                            )
                            fid = m.id
                            started[fid] = (m, after)
                        msg, after = started[fid] if fid in started else self.joins[fid][:2]
                        chosen[fid] = FollowUp(msg, after)
                    else:
                        m = make_message(
                            self.clock,
                            queue=data.draw(st.sampled_from(names), label="queue"),
                            priority=data.draw(st.integers(0, 4), label="priority"),
                            delay=data.draw(st.sampled_from([0.0, 0.0, 5.0]), label="delay"),
                            task="mod.next",
                            task_id=self.new_id("n"),
                        )
                        chosen[m.id] = FollowUp(m)
                draws.append((parent, step, tuple(chosen.values())))

            def outcomes(side: int) -> list[Outcome]:
                out = []
                for parent, step, then in draws:
                    lease = self.leases[parent][side]
                    token = {
                        "current": lease.token,
                        "stale": lease.token - 1,
                        "bogus": lease.token + 1000,
                    }[step["token"]]
                    out.append(
                        Outcome(
                            parent,
                            token,
                            step["kind"],
                            now,
                            result=b"ok",
                            result_ttl=step["result_ttl"],
                            then=then,
                        )
                    )
                return out

            # what the reference (and the backend) must accept: a running parent's
            # current token, once (a second outcome for it in the batch is stale)
            expected: list[bool] = []
            settled: set[str] = set()
            for parent, step, _ in draws:
                ok = parent in live and step["token"] == "current" and parent not in settled
                expected.append(ok)
                if ok:
                    settled.add(parent)
            mentioned = sorted({f.message.id for _, _, then in draws for f in then})
            existed = {
                r.id for r in self.portal.call(_records, self.ref, mentioned) if r is not None
            }
            if via_claim:
                # handed in with a claim of no queue of the machine's: the Redis backend
                # delivers follow-ups after the claim script of the first queue (so that
                # claim cannot take them), while the reference records the outcomes first
                self.claim_both(["no-such-queue"], limit, 4, "w2", settle=outcomes)
            else:
                answer = self.portal.call(self.ref.settle, outcomes(0))
                got = self.portal.call(self.sut.settle, outcomes(1))
                assert got == answer, f"settle (workflow): reference {answer} != backend {got}"
                assert answer == expected, f"settle: expected {expected}, reference {answer}"

            released: set[str] = set()
            for (parent, step, then), ok in zip(draws, expected, strict=True):
                if not ok or step["kind"] is not OutcomeKind.SUCCEEDED:
                    continue
                keep = math.inf if step["result_ttl"] is None else now + step["result_ttl"]
                for f in then:
                    fid = f.message.id
                    if f.after <= 1:
                        released.add(fid)
                        continue
                    msg, after, counted, until = self.joins.get(
                        fid, (f.message, f.after, set(), keep)
                    )
                    counted = counted | {parent}
                    if len(counted) >= after:
                        self.joins.pop(fid, None)
                        released.add(fid)
                    else:
                        self.joins[fid] = (msg, after, counted, max(until, keep))
            # the reference's follow-ups as the settle stored them (before it claims one
            # handed to the fake waiter, below)
            stored = self.portal.call(_records, self.ref, mentioned)
            if self.waiter is not None:
                # the backend enqueues the released follow-ups after the settle, in one
                # call: one of them may be handed to the fake waiter (IdleWaiter)
                queue_of = {f.message.id: f.message.queue for _, _, then in draws for f in then}
                out = [i for i, fid in enumerate(mentioned) if fid in released]
                touched = {queue_of[mentioned[i]] for i in out} & set(self.waiter[0])
                expect: bool | None = None  # on several of its queues: the order decides
                if len(touched) <= 1:
                    q = next(iter(touched), self.waiter[0][0])
                    mine = [i for i in out if queue_of[mentioned[i]] == q]
                    rec = stored[mine[0]] if len(mine) == 1 else None
                    expect = (
                        rec is not None
                        and rec.id not in existed
                        and rec.state is State.QUEUED
                        and self.idle_for_hand_off(q, queued=1)
                    )
                self.read_waiter(expect, f"workflow step releasing {sorted(released)}")
            after_ref, after_sut = self.both(lambda be: _records(be, mentioned))
            for fid, a0, a, b in zip(mentioned, stored, after_ref, after_sut, strict=True):
                assert b == a, f"follow-up {fid}: reference {a} != backend {b}"
                if fid in released:
                    assert a0 is not None, f"follow-up {fid} released but not stored"
                    if fid not in existed:
                        assert a0.attempt == 0 and a0.state in (State.QUEUED, State.SCHEDULED), (
                            f"follow-up {fid} stored as {a0}"
                        )
                elif fid not in existed:
                    assert a is None, f"follow-up {fid} stored but not released: {a}"
            for f in (f for _, _, then in draws for f in then):
                if f.message.id in released:
                    self.released[f.message.id] = f.message
                    self.messages.setdefault(f.message.id, f.message)

        @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 11.0, 31.0, 61.0]))
        def advance(self, seconds: float) -> None:
            self.portal.call(self.clock.advance, seconds)

        @rule()
        def reap(self) -> None:
            a, b = self.both(lambda be: be.reap())
            assert sorted(b) == sorted(a), f"reap: reference {a} != backend {b}"
            now = self.clock.now()  # joins expire with the results they count
            self.joins = {k: j for k, j in self.joins.items() if j[3] > now}

        @rule(queue=st.sampled_from(names), states=st.lists(st.sampled_from(_STATES), max_size=3))
        def purge(self, queue: str, states: list[State]) -> None:
            self.same(lambda b: b.purge(queue, states), f"purge({queue}, {states})")

        @rule(queue=st.sampled_from(names), paused=st.booleans())
        def pause(self, queue: str, paused: bool) -> None:
            self.both(lambda b: b.pause(queue) if paused else b.resume(queue))

        @rule(
            queue=st.none() | st.sampled_from(names),
            state=st.none() | st.sampled_from(_STATES),
            task=st.none() | st.sampled_from(["mod.a", "mod.b"]),
            text=st.none() | st.sampled_from(["u1", "boom", "Lease", "0"]),
            limit=st.integers(0, 6),
            offset=st.integers(0, 4),
        )
        def list_tasks(
            self,
            queue: str | None,
            state: State | None,
            task: str | None,
            text: str | None,
            limit: int,
            offset: int,
        ) -> None:
            f = TaskFilter(queue, state, task, text, limit, offset)
            self.same(lambda b: b.list_tasks(f), f"list_tasks({f})")

        @rule(
            # a bucket has one rate and capacity (Backend.take_tokens)
            limit=st.sampled_from([("x", 0.5, 1.0), ("y", 2.0, 3.0)]),
            n=st.sampled_from([1.0, 2.0]),
        )
        def take_tokens(self, limit: tuple[str, float, float], n: float) -> None:
            bucket, rate, capacity = limit
            self.same(lambda b: b.take_tokens(bucket, rate, capacity, n), "take_tokens")

        @rule(key=st.sampled_from(["tick1", "tick2"]), ttl=st.sampled_from([30.0, 120.0]))
        def once(self, key: str, ttl: float) -> None:
            self.same(lambda b: b.once(key, ttl), f"once({key}, {ttl})")

        @rule(
            key=st.sampled_from(["k1", "k2"]),
            value=st.binary(max_size=8),
            ttl=st.none() | st.sampled_from([30.0, 90.0]),
        )
        def kv(self, key: str, value: bytes, ttl: float | None) -> None:
            self.both(lambda b: b.kv_set(key, value, ttl))

        @rule(
            key=st.sampled_from(["k1", "k2"]),
            old=st.just("stored") | st.none() | st.binary(max_size=8),
            new=st.binary(max_size=8),
            ttl=st.none() | st.sampled_from([30.0, 90.0]),
        )
        def kv_replace(
            self, key: str, old: bytes | str | None, new: bytes, ttl: float | None
        ) -> None:
            # "stored": the value the reference holds now (the compare-and-set wins)
            expected = self.portal.call(self.ref.kv_get, key) if old == "stored" else old
            assert not isinstance(expected, str)
            self.same(
                lambda b: b.kv_replace(key, expected, new, ttl),
                f"kv_replace({key}, {expected!r}, {new!r}, {ttl})",
            )

        @rule(
            worker=st.sampled_from(["w1", "w2"]),
            ttl=st.sampled_from([10.0, 60.0]),
            busy=st.integers(0, 3),
        )
        def heartbeat(self, worker: str, ttl: float, busy: int) -> None:
            now = self.clock.now()
            info = WorkerInfo(worker, "host", 1, names, 4, busy, now, now)
            self.both(lambda b: b.heartbeat(info, ttl))

        @rule(
            samples=st.lists(
                st.tuples(st.sampled_from(["t1", "t2"]), st.sampled_from([0.25, 1.5])), max_size=4
            )
        )
        def record_runtimes(self, samples: list[tuple[str, float]]) -> None:
            self.both(lambda b: b.record_runtimes(samples))

        @rule(entries=_journal_batch, twice=st.booleans())
        def journal_append(
            self, entries: list[tuple[str, float, str | None, bytes]], twice: bool
        ) -> None:
            now = self.clock.now()
            batch = [
                JournalEntry(stream, now + at, b"%d:%b" % (next(self._payloads), blob), key)
                for stream, at, key, blob in entries
            ]
            if twice:  # not deduplicated: stored (and read) twice
                batch.append(batch[0])
            self.both(lambda b: b.journal_append(batch))
            self.journal_dirty = True

        @rule(before=_cutoffs)
        def journal_trim(self, before: dict[str, float]) -> None:
            now = self.clock.now()
            cut = {k: now + v for k, v in before.items()}
            self.same(lambda b: b.journal_trim(cut), f"journal_trim({before} from now)")
            self.journal_dirty = True

        @rule(
            stream=st.sampled_from([*_STREAMS, "no-such-stream"]),
            since=st.none() | st.sampled_from(_BOUND),
            until=st.none() | st.sampled_from(_BOUND),
            key=st.none() | st.sampled_from([*_JOURNAL_KEYS, "no-such-key"]),
            limit=st.integers(0, 6),
            newest_first=st.booleans(),
        )
        def journal_read(
            self,
            stream: str,
            since: float | None,
            until: float | None,
            key: str | None,
            limit: int,
            newest_first: bool,
        ) -> None:
            now = self.clock.now()
            lo = None if since is None else now + since
            hi = None if until is None else now + until
            self.same(
                lambda b: b.journal_read(
                    stream, since=lo, until=hi, key=key, limit=limit, newest_first=newest_first
                ),
                f"journal_read({stream}, since=now{since:+}, until=now{until:+}, key={key}, "
                f"limit={limit}, newest_first={newest_first})"
                if since is not None and until is not None
                else f"journal_read({stream}, since={since}, until={until}, key={key}, "
                f"limit={limit}, newest_first={newest_first})",
            )

        # -- invariants -------------------------------------------------------------
        @invariant()
        def journal_agrees(self) -> None:
            """Every stream, and every key's records in it, read whole (after a step
            that appended or trimmed)."""
            if not self.journal_dirty:
                return
            self.journal_dirty = False
            a, b = self.both(_journal_views)
            for (what, x), (_, y) in zip(a, b, strict=True):
                assert y == x, f"journal {what}:\nreference {x}\nbackend   {y}"

        @invariant()
        def records_agree(self) -> None:
            everything = TaskFilter(limit=1_000_000)
            a, b = self.both(lambda be: be.list_tasks(everything))
            for x, y in zip(a, b, strict=False):
                assert y == x, f"record differs:\nreference {x}\nbackend   {y}"
            assert len(b) == len(a), f"reference has {len(a)} tasks, backend {len(b)}"

        @invariant()
        def stats_agree(self) -> None:
            self.same(lambda be: be.stats(), "stats")

        @invariant()
        def coordination_agrees(self) -> None:
            self.same(lambda be: be.kv_get("k1"), "kv_get(k1)")
            self.same(lambda be: be.kv_get("k2"), "kv_get(k2)")
            a, b = self.both(lambda be: be.workers())
            assert sorted(w.id for w in b) == sorted(w.id for w in a), "workers"
            ra, rb = self.both(lambda be: be.runtime_stats(["t1", "t2"]))
            assert ra.keys() == rb.keys(), "runtime_stats"
            for k in ra:
                assert rb[k].count == ra[k].count
                assert abs(rb[k].mean - ra[k].mean) <= 1e-9 * max(1.0, abs(ra[k].mean))

    if idle_waiter is None:
        BackendComparison.__name__ = BackendComparison.__qualname__ = "BackendComparison"
        return BackendComparison
    waiters = idle_waiter

    # Its own class, so that a machine without one draws the same examples as before.
    class WithIdleWaiter(BackendComparison):
        @rule(
            queue=st.sampled_from(names),
            lease=st.sampled_from([10.0, _LEASE]),
            live_for=st.sampled_from([0.0, 1.0, 3.0]),
            on=_waiter_on,
        )
        def register_waiter(self, queue: str, lease: float, live_for: float, on: str) -> None:
            """Register the fake idle waiter (its list is empty: read after every step),
            on ``queue`` or on every queue (``on``: ``queue`` first or last)."""
            self.read_waiter(False, "before registering")  # (an idle_worker round)
            if self.waiter is not None:
                self.portal.call(waiters.unregister, self.sut, self.waiter[0])
            until = self.clock.now() + live_for
            others = [q for q in names if q != queue]
            qs = {"this": [queue], "first": [queue, *others], "last": [*others, queue]}[on]
            self.waiter = (tuple(qs), "w-idle", lease, until)
            self.portal.call(waiters.register, self.sut, qs, "w-idle", lease, until)

        @rule(spec=_task_spec, data=st.data())
        def enqueue_one(self, spec: dict[str, Any], data: st.DataObject) -> None:
            """One task (no other draws a hand-off so often)."""
            self.enqueue([spec], data)

        @rule(
            rounds=st.lists(
                st.fixed_dictionaries(
                    {
                        "queue": st.sampled_from(names),
                        "lease": st.sampled_from([10.0, _LEASE]),
                        "drain": st.booleans(),
                        "before": st.sampled_from(["due", "queued", "nothing"]),
                        # how long it stays registered, and then how far the clock
                        # moves: live, at the end of its registration (still live),
                        # past it
                        "live": st.sampled_from([(3.0, 0.0), (1.0, 1.0), (0.5, 1.0)]),
                        "pause": st.sampled_from(["resume", "as is", "pause"]),
                        # with the task: no other, one more in that queue (a batch:
                        # no hand-off), one in the other queue (a call of its own)
                        "with": st.sampled_from(["alone", "same queue", "other queue"]),
                        "task": _task_spec,
                        # the worker waits on this queue, or on every queue
                        "on": _waiter_on,
                    }
                ),
                min_size=1,
                max_size=4,
            )
        )
        def idle_worker(self, rounds: list[dict[str, Any]]) -> None:
            """A worker goes idle on a queue and one task that is ready now is enqueued
            there: the common case of a hand-off. Before it, maybe the worker claimed
            all there was ("drain"), then maybe a task was queued there or a scheduled
            one came due (never handed past); then the queue is resumed or paused (a
            paused queue hands nothing off), or left so."""
            for r in rounds:
                queue, spec = r["queue"], r["task"]
                if r["drain"]:  # (every queue it waits on)
                    for q in [queue] if r["on"] == "this" else names:
                        self.claim_both([q], 1_000_000, 4, "w1")
                if r["before"] in ("queued", "due"):
                    delay = 1.0 if r["before"] == "due" else 0.0
                    m = make_message(self.clock, queue=queue, delay=delay, task_id=self.new_id("t"))
                    self.messages[m.id] = m
                    self.enqueue_both([m])
                    if delay:
                        self.portal.call(self.clock.advance, delay)
                if r["pause"] != "as is":
                    self.pause(queue, r["pause"] == "pause")
                    self.read_waiter(False, f"{r['pause']}({queue})")  # markers only
                live_for, then = r["live"]
                self.register_waiter(queue, r["lease"], live_for, r["on"])
                if then:
                    self.portal.call(self.clock.advance, then)
                deadline = spec["deadline"]
                m = make_message(
                    self.clock,
                    queue=queue,
                    priority=spec["priority"],
                    deadline=None if deadline is None else self.clock.now() + deadline,
                    unique_key=spec["unique_key"],
                    fairness_key=spec["fairness_key"],
                    task=spec["task"],
                    task_id=self.new_id("t"),
                )
                batch = [m]
                if r["with"] != "alone":
                    other = [q for q in names if q != queue or r["with"] == "same queue"]
                    batch.append(make_message(self.clock, queue=other[0], task_id=self.new_id("t")))
                for m in batch:
                    self.messages[m.id] = m
                self.enqueue_both(batch)

        @invariant()
        def waiter_agrees(self) -> None:
            """Markers only, outside the steps that enqueue (read there)."""
            self.read_waiter(False, "after the step")

    WithIdleWaiter.__name__ = WithIdleWaiter.__qualname__ = "BackendComparison"
    return WithIdleWaiter
