"""The backend conformance suite (pytest, anyio).

Subclass :class:`BackendConformance` and implement :meth:`make_backend`; pytest
collects every ``test_*`` method. Each test gets a fresh backend bound to a
:class:`~taskcore.clock.FakeClock`, so lease expiry, delays and TTLs are checked
without sleeping. The backend must start empty (the factory should use a fresh
namespace, schema or key prefix per test).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import pytest

from taskcore.backend import (
    AttemptError,
    Backend,
    ExtendStatus,
    FollowUp,
    JournalEntry,
    Lease,
    Message,
    Outcome,
    OutcomeKind,
    QueueSpec,
    TaskFilter,
    WorkerInfo,
)
from taskcore.clock import FakeClock
from taskcore.envelope import new_task_id
from taskcore.scheduling import SchedulingPolicy
from taskcore.states import State

__all__ = ["BackendConformance", "make_message"]

_counter = itertools.count()


def make_message(
    clock: FakeClock,
    *,
    task: str = "tests.noop",
    queue: str = "q",
    priority: int = 2,
    delay: float = 0.0,
    deadline: float | None = None,
    unique_key: str | None = None,
    fairness_key: str | None = None,
    body: bytes | None = None,
    task_id: str | None = None,
) -> Message:
    """A message as the core would build it, enqueued now on ``clock``."""
    now = clock.now()
    tid = task_id or new_task_id()
    return Message(
        id=tid,
        task=task,
        queue=queue,
        priority=priority,
        enqueued_at=now,
        eligible_at=now + delay,
        body=body
        if body is not None
        else b'{"id":"%s","task":"%s"}' % (tid.encode(), task.encode()),
        deadline=deadline,
        unique_key=unique_key,
        fairness_key=fairness_key,
    )


async def settle_half_a_chord(
    backend: Backend, clock: FakeClock, result_ttl: float = 100.0
) -> tuple[Message, Lease]:
    """Two members of a chord run; one succeeds (counted in the callback's join), the
    other is dead-lettered, so the join can never complete. Both results are kept
    ``result_ttl`` seconds. Returns the callback (never enqueued) and the lease of the
    member that succeeded."""
    await backend.enqueue([make_message(clock), make_message(clock)])
    a, b = await backend.claim(["q"], 2, 30, "w")
    callback = make_message(clock, queue="q3")
    ok = _ok(a, clock, result_ttl=result_ttl, then=(FollowUp(callback, after=2),))
    dead = Outcome(b.message.id, b.token, OutcomeKind.DEAD, clock.now(), result_ttl=result_ttl)
    assert await backend.settle([ok, dead]) == [True, True]
    return callback, a


def _ok(lease: Lease, clock: FakeClock, **kw: object) -> Outcome:
    return Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now(), **kw)  # type: ignore[arg-type]


def _err(attempt: int, clock: FakeClock, msg: str = "boom") -> AttemptError:
    return AttemptError(attempt, "ValueError", msg, "Traceback ...", clock.now())


class BackendConformance:
    """Every contract of :class:`~taskcore.backend.Backend`, as tests."""

    pytestmark = pytest.mark.anyio
    LEASE = 30.0

    def make_backend(self, clock: FakeClock) -> contextlib.AbstractAsyncContextManager[Backend]:
        raise NotImplementedError("subclass BackendConformance and implement make_backend")

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    async def backend(self, clock: FakeClock) -> AsyncIterator[Backend]:
        async with self.make_backend(clock) as backend:
            yield backend

    # -- helpers ----------------------------------------------------------------
    async def _enqueue(
        self, backend: Backend, clock: FakeClock, n: int = 1, **kw: object
    ) -> list[str]:
        msgs = [make_message(clock, **kw) for _ in range(n)]  # type: ignore[arg-type]
        res = await backend.enqueue(msgs)
        return [r.id for r in res]

    async def _claim(
        self, backend: Backend, limit: int = 1, queues: Sequence[str] = ("q",), **kw: object
    ) -> list[Lease]:
        return await backend.claim(list(queues), limit, self.LEASE, "w1", **kw)  # type: ignore[arg-type]

    # -- workflow follow-ups ------------------------------------------------------
    async def test_follow_ups_are_stored_with_an_accepted_success(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        same = make_message(clock)
        other = make_message(clock, queue="q2", delay=30)
        out = _ok(lease, clock, then=(FollowUp(same), FollowUp(other)))
        assert await backend.settle([out]) == [True]
        rec, rec2 = await backend.get(same.id), await backend.get(other.id)
        assert rec is not None and rec.state is State.QUEUED and rec.body == same.body
        assert rec2 is not None and rec2.state is State.SCHEDULED and rec2.queue == "q2"
        [nxt] = await self._claim(backend)
        assert nxt.message.id == same.id
        # a retried settle is refused as stale and stores nothing twice
        assert await backend.settle([out]) == [False]
        stats = {s.queue: s for s in await backend.stats(["q", "q2"])}
        assert stats["q"].states[State.RUNNING] == 1 and stats["q2"].states[State.SCHEDULED] == 1

    async def test_follow_ups_of_one_settle_arrive_in_outcome_order(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        """What one settle makes ready arrives in the order of its outcomes, a join at
        the place of the parent that completes it: equal tasks are claimed so."""
        await self._enqueue(backend, clock, 3, queue="src")
        first, a, b = await self._claim(backend, 3, ["src"])
        join = make_message(clock, queue="dst")
        ready, later = make_message(clock, queue="dst"), make_message(clock, queue="dst")
        # the join's first parent, alone
        assert await backend.settle([_ok(first, clock, then=(FollowUp(join, after=2),))]) == [True]
        outcomes = [
            _ok(a, clock, then=(FollowUp(ready),)),
            _ok(b, clock, then=(FollowUp(join, after=2), FollowUp(later))),
        ]
        assert await backend.settle(outcomes) == [True, True]
        got = await self._claim(backend, 3, ["dst"])
        assert [x.message.id for x in got] == [ready.id, join.id, later.id]
        # both of a join's parents in one settle: it arrives at the second (after the
        # first plain follow-up, before the last)
        await self._enqueue(backend, clock, 4, queue="src")
        p1, p2, p3, p4 = await self._claim(backend, 4, ["src"])
        chord = make_message(clock, queue="dst2")
        x, y = make_message(clock, queue="dst2"), make_message(clock, queue="dst2")
        outcomes = [
            _ok(p1, clock, then=(FollowUp(chord, after=2),)),
            _ok(p2, clock, then=(FollowUp(x),)),
            _ok(p3, clock, then=(FollowUp(chord, after=2),)),
            _ok(p4, clock, then=(FollowUp(y),)),
        ]
        assert await backend.settle(outcomes) == [True] * 4
        got = await self._claim(backend, 3, ["dst2"])
        assert [m.message.id for m in got] == [x.id, chord.id, y.id]

    async def test_follow_ups_of_parents_in_several_queues_arrive_in_outcome_order(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        """The same when one settle's parents are in different queues (a backend that
        settles queue by queue still delivers in outcome order)."""
        await self._enqueue(backend, clock, 2, queue="src")
        await self._enqueue(backend, clock, 1, queue="src2")
        p1, p3 = await self._claim(backend, 2, ["src"])
        [p2] = await self._claim(backend, 1, ["src2"])
        join, plain = make_message(clock, queue="dst"), make_message(clock, queue="dst")
        outcomes = [
            _ok(p1, clock, then=(FollowUp(join, after=2),)),
            _ok(p2, clock, then=(FollowUp(plain),)),
            _ok(p3, clock, then=(FollowUp(join, after=2),)),
        ]
        assert await backend.settle(outcomes) == [True] * 3
        got = await self._claim(backend, 2, ["dst"])
        assert [x.message.id for x in got] == [plain.id, join.id]

    async def test_refused_or_unsuccessful_outcomes_release_no_follow_ups(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await self._enqueue(backend, clock, 2)
        first, second = await self._claim(backend, 2)
        stale, failed = make_message(clock), make_message(clock, queue="q2")
        bad = Outcome(
            first.message.id,
            first.token + 1000,
            OutcomeKind.SUCCEEDED,
            clock.now(),
            then=(FollowUp(stale),),
        )
        dead = Outcome(
            second.message.id,
            second.token,
            OutcomeKind.DEAD,
            clock.now(),
            error=_err(1, clock),
            then=(FollowUp(failed),),
        )
        assert await backend.settle([bad, dead]) == [False, True]
        assert await backend.get(stale.id) is None
        assert await backend.get(failed.id) is None
        # the carried settle of claim() is the same record
        assert await backend.settle([_ok(first, clock)]) == [True]
        await self._enqueue(backend, clock)
        [third] = await self._claim(backend)
        carried = make_message(clock, queue="q2")
        await backend.claim(
            ["q"], 1, self.LEASE, "w1", settle=[_ok(third, clock, then=(FollowUp(carried),))]
        )
        rec = await backend.get(carried.id)
        assert rec is not None and rec.state is State.QUEUED

    async def test_join_releases_once_after_every_parent(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await self._enqueue(backend, clock, 2)
        await self._enqueue(backend, clock, 1, queue="q2")
        a, b = await self._claim(backend, 2)
        [c] = await self._claim(backend, 1, ["q2"])
        callback = make_message(clock, queue="q3")
        join = (FollowUp(callback, after=3),)
        assert await backend.settle([_ok(a, clock, then=join)]) == [True]
        assert await backend.get(callback.id) is None
        # a refused duplicate of a parent's settle does not count twice
        assert await backend.settle([_ok(a, clock, then=join)]) == [False]
        assert await backend.settle([_ok(b, clock, then=join)]) == [True]
        assert await backend.get(callback.id) is None
        assert await backend.settle([_ok(c, clock, then=join)]) == [True]
        rec = await backend.get(callback.id)
        assert rec is not None and rec.state is State.QUEUED
        [stats] = await backend.stats(["q3"])
        assert stats.states[State.QUEUED] == 1

    async def test_join_of_parents_settled_in_one_batch(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await self._enqueue(backend, clock, 2)
        await self._enqueue(backend, clock, 1, queue="q2")
        a, b = await self._claim(backend, 2)
        [c] = await self._claim(backend, 1, ["q2"])
        callback = make_message(clock)
        join = (FollowUp(callback, after=3),)
        assert await backend.settle([_ok(x, clock, then=join) for x in (a, b, c)]) == [True] * 3
        [stats] = await backend.stats(["q"])
        assert stats.states[State.QUEUED] == 1
        [lease] = await self._claim(backend)
        assert lease.message.id == callback.id

    async def test_incomplete_join_is_forgotten_once_the_results_it_counts_expire(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        # A chord whose member failed never completes its join. The join can only
        # complete usefully while the results it counts are kept, so reap forgets it
        # once the result TTL of the last parent it noted has run out.
        await self._enqueue(backend, clock, 3)
        kept = make_message(clock, queue="q2")  # parents noted at t=0 and t=40
        lost = make_message(clock, queue="q2")  # a parent noted at t=0 only
        [x1] = await self._claim(backend)
        both = (FollowUp(kept, after=3), FollowUp(lost, after=2))
        assert await backend.settle([_ok(x1, clock, result_ttl=60.0, then=both)]) == [True]
        clock.advance(40)
        [x2] = await self._claim(backend)
        out = _ok(x2, clock, result_ttl=60.0, then=(FollowUp(kept, after=3),))
        assert await backend.settle([out]) == [True]
        clock.advance(30)  # t=70: past x1's result TTL, within x2's
        await backend.reap()
        [x3] = await self._claim(backend)
        assert await backend.settle([_ok(x3, clock, result_ttl=60.0, then=both)]) == [True]
        # 'kept' was refreshed by x2 and completes; 'lost' was forgotten at t=70, so x3
        # starts it over as its only parent
        rec = await backend.get(kept.id)
        assert rec is not None and rec.state is State.QUEUED
        assert await backend.get(lost.id) is None
        [stats] = await backend.stats(["q2"])
        assert stats.states[State.QUEUED] == 1

    # -- enqueue ------------------------------------------------------------------
    async def test_enqueue_then_get(self, backend: Backend, clock: FakeClock) -> None:
        msg = make_message(clock, priority=1, fairness_key="tenant-a")
        [res] = await backend.enqueue([msg])
        assert res.created and res.id == msg.id and res.state is State.QUEUED
        rec = await backend.get(msg.id)
        assert rec is not None
        assert (rec.state, rec.task, rec.queue, rec.priority, rec.attempt) == (
            State.QUEUED,
            msg.task,
            "q",
            1,
            0,
        )
        assert rec.body == msg.body and rec.fairness_key == "tenant-a"
        assert await backend.get("nope") is None

    async def test_unique_key_dedupes_until_terminal(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        a = make_message(clock, unique_key="k")
        b = make_message(clock, unique_key="k")
        other_queue = make_message(clock, unique_key="k", queue="q2")
        res = await backend.enqueue([a, b, other_queue])
        assert [r.created for r in res] == [True, False, True]
        assert res[1].id == a.id
        [lease] = await self._claim(backend)
        assert (await backend.settle([_ok(lease, clock)])) == [True]
        [again] = await backend.enqueue([make_message(clock, unique_key="k")])
        assert again.created and again.id != a.id

    async def test_an_existing_id_is_answered_before_a_unique_key(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        """A message whose id names a task (here in another queue) and whose unique key
        matches another live task: nothing is stored, and the result names the id's
        task (the id is checked first, then the unique key)."""
        holder = make_message(clock, queue="q1")
        keyed = make_message(clock, queue="q2", unique_key="k")
        assert [r.created for r in await backend.enqueue([holder, keyed])] == [True, True]
        clash = make_message(clock, queue="q2", unique_key="k", task_id=holder.id)
        [res] = await backend.enqueue([clash])
        assert (res.id, res.created, res.state) == (holder.id, False, State.QUEUED)
        assert [t.id for t in await backend.list_tasks(TaskFilter(queue="q2"))] == [keyed.id]

    async def test_reenqueue_of_finished_id_keeps_unique_key_free(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first = make_message(clock, unique_key="k")
        await backend.enqueue([first])
        [lease] = await self._claim(backend)
        await backend.settle([_ok(lease, clock)])
        [again] = await backend.enqueue([first])  # same id, already finished
        assert not again.created and again.state is State.SUCCEEDED
        [fresh] = await backend.enqueue([make_message(clock, unique_key="k")])
        assert fresh.created

    async def test_dlq_retry_refused_while_unique_key_is_taken(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [dead_id] = await self._enqueue(backend, clock, unique_key="k")
        [lease] = await self._claim(backend)
        dead = Outcome(dead_id, lease.token, OutcomeKind.DEAD, clock.now(), error=_err(1, clock))
        await backend.settle([dead])
        [live] = await backend.enqueue([make_message(clock, unique_key="k")])
        assert live.created
        assert await backend.retry([dead_id]) == [False]
        rec = await backend.get(dead_id)
        assert rec is not None and rec.state is State.DEAD

    async def test_enqueue_same_id_twice_is_idempotent(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        msg = make_message(clock)
        await backend.enqueue([msg])
        [res] = await backend.enqueue([msg])
        assert not res.created and res.id == msg.id
        assert len(await self._claim(backend, 10)) == 1

    # -- claim order ------------------------------------------------------------
    async def _drain_order(self, backend: Backend, n: int) -> list[str]:
        leases = []
        for _ in range(n):
            leases += await self._claim(backend)
        return [lease.message.id for lease in leases]

    async def test_fifo_policy(self, backend: Backend, clock: FakeClock) -> None:
        await backend.declare([QueueSpec("q", SchedulingPolicy.fifo())])
        ids = []
        for p in (4, 0, 2, 1):
            ids += await self._enqueue(backend, clock, priority=p)
            clock.advance(0.001)
        assert await self._drain_order(backend, 4) == ids

    async def test_strict_priority_policy(self, backend: Backend, clock: FakeClock) -> None:
        await backend.declare([QueueSpec("q", SchedulingPolicy.strict_priority())])
        by_p = {}
        for p in (4, 3, 2, 1, 0):
            by_p[p] = await self._enqueue(backend, clock, 2, priority=p)
            clock.advance(0.001)
        clock.advance(10_000)
        expected = [i for p in range(5) for i in by_p[p]]
        assert await self._drain_order(backend, 10) == expected

    async def test_deadline_policy_orders_by_priority_when_fresh(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        ids = {p: (await self._enqueue(backend, clock, priority=p))[0] for p in (3, 4, 1, 2, 0)}
        assert await self._drain_order(backend, 5) == [ids[p] for p in range(5)]

    async def test_deadline_policy_ages_old_low_priority(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [old_p3] = await self._enqueue(backend, clock, priority=3)
        clock.advance(1741)  # P3 horizon 1800 s: old P3 due in 59 s, fresh P1 due in 60 s
        [fresh_p1] = await self._enqueue(backend, clock, priority=1)
        assert await self._drain_order(backend, 2) == [old_p3, fresh_p1]

    async def test_deadline_policy_explicit_deadline_wins(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [p1] = await self._enqueue(backend, clock, priority=1)
        [p4] = await self._enqueue(backend, clock, priority=4, deadline=clock.now() + 5)
        assert await self._drain_order(backend, 2) == [p4, p1]

    async def test_weighted_fair_shares_and_no_starvation(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await backend.declare([QueueSpec("q", SchedulingPolicy.weighted_fair())])
        msgs = [make_message(clock, priority=p) for p in range(5) for _ in range(3100)]
        await backend.enqueue(msgs)
        got: Counter[int] = Counter()
        first_seen: dict[int, int] = {}
        n = 0
        while n < 3100:
            for lease in await self._claim(backend, 100):
                p = lease.message.priority
                got[p] += 1
                first_seen.setdefault(p, n)
                n += 1
        weights = [16, 8, 4, 2, 1]
        for p, w in enumerate(weights):
            expected = 3100 * w / 31
            assert abs(got[p] - expected) <= 0.1 * expected, (p, got)
        assert max(first_seen.values()) < 40  # every class served within the first round

    async def test_weighted_fair_by_key(self, backend: Backend, clock: FakeClock) -> None:
        policy = SchedulingPolicy.weighted_fair({"big": 3.0}, by="key", default_weight=1.0)
        await backend.declare([QueueSpec("q", policy)])
        msgs = [make_message(clock, fairness_key=k) for k in ("big", "small") for _ in range(400)]
        await backend.enqueue(msgs)
        got = Counter(lease.message.fairness_key for lease in await self._claim(backend, 400))
        assert abs(got["big"] - 300) <= 30 and abs(got["small"] - 100) <= 10, got

    async def test_claim_respects_limit_queues_and_max_priority(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await self._enqueue(backend, clock, 3, priority=3)
        [p0] = await self._enqueue(backend, clock, priority=0)
        await self._enqueue(backend, clock, 2, queue="other")
        only_p0 = await self._claim(backend, 10, max_priority=0)
        assert [lease.message.id for lease in only_p0] == [p0]
        assert len(await self._claim(backend, 2)) == 2
        assert len(await self._claim(backend, 10, queues=("q", "other"))) == 3
        assert await self._claim(backend, 10, queues=("q", "other", "empty")) == []

    async def test_claim_over_several_queues_takes_them_in_order_up_to_the_limit(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        first = await self._enqueue(backend, clock, 3, queue="a")
        second = await self._enqueue(backend, clock, 3, queue="b")
        third = await self._enqueue(backend, clock, 2, queue="c")
        got = await self._claim(backend, 4, queues=("empty", "a", "b", "c"))
        assert [x.message.id for x in got] == [*first, second[0]]
        got = await self._claim(backend, 3, queues=("c", "b"))
        assert [x.message.id for x in got] == [*third, second[1]]
        stats = {s.queue: s for s in await backend.stats(["a", "b", "c"])}
        assert [stats[q].states[State.QUEUED] for q in "abc"] == [0, 1, 0]
        assert [stats[q].states[State.RUNNING] for q in "abc"] == [3, 2, 2]

    async def test_claim_lease_fields(self, backend: Backend, clock: FakeClock) -> None:
        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        assert lease.message.id == tid and lease.attempt == 1 and lease.worker == "w1"
        assert lease.expires_at == pytest.approx(clock.now() + self.LEASE, abs=1e-3)
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.RUNNING and rec.worker == "w1"

    # -- delayed ------------------------------------------------------------------
    async def test_delayed_task_is_scheduled_until_due(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [tid] = await self._enqueue(backend, clock, delay=60)
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.SCHEDULED
        assert await self._claim(backend) == []
        clock.advance(59)
        assert await self._claim(backend) == []
        clock.advance(1)
        [lease] = await self._claim(backend)
        assert lease.message.id == tid

    # -- leases -------------------------------------------------------------------
    async def test_extend_and_stale_token(self, backend: Backend, clock: FakeClock) -> None:
        await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        clock.advance(20)
        assert await backend.extend([(lease.message.id, lease.token)], self.LEASE) == [
            ExtendStatus.OK
        ]
        clock.advance(20)  # past the first expiry, within the extended one
        assert await backend.reap() == []
        assert await backend.extend([(lease.message.id, lease.token + 1000)], 30) == [
            ExtendStatus.LOST
        ]
        stale = Outcome(lease.message.id, lease.token - 1, OutcomeKind.SUCCEEDED, clock.now())
        assert await backend.settle([stale]) == [False]
        assert await backend.settle([_ok(lease, clock)]) == [True]
        assert await backend.settle([_ok(lease, clock)]) == [False]  # already settled

    async def test_claim_settles_the_outcomes_it_carries_first(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        done_id, back_id, other_id = await self._enqueue(backend, clock, 3)
        done, back = await self._claim(backend, 2)
        stale = Outcome(other_id, 999_999, OutcomeKind.SUCCEEDED, clock.now())
        released = Outcome(back_id, back.token, OutcomeKind.RELEASED, clock.now())
        carried = [_ok(done, clock, result=b"7"), released, stale]
        # recorded before the claim: the released task is claimable by this very call,
        # ahead of the task behind it (it keeps its place)
        [again] = await self._claim(backend, 1, settle=carried)
        assert again.message.id == back_id and again.token != back.token
        rec = await backend.get(done_id)
        assert rec is not None and rec.state is State.SUCCEEDED and rec.result == b"7"
        rec = await backend.get(other_id)
        assert rec is not None and rec.state is State.QUEUED  # the stale outcome: refused
        # carried outcomes are settled even when nothing is claimed (limit 0, or empty)
        assert await self._claim(backend, 0, settle=[_ok(again, clock)]) == []
        rec = await backend.get(back_id)
        assert rec is not None and rec.state is State.SUCCEEDED
        [last] = await self._claim(backend, 5)
        assert await self._claim(backend, 5, settle=[_ok(last, clock)]) == []
        [stats] = await backend.stats(["q"])
        assert stats.states.get(State.SUCCEEDED) == 3 and stats.depth == 0

    async def test_reap_requeues_expired_lease_and_fences_old_holder(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [tid] = await self._enqueue(backend, clock)
        [first] = await self._claim(backend)
        clock.advance(self.LEASE + 1)
        assert await backend.reap() == [tid]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.QUEUED
        assert rec.errors and rec.errors[-1].type == "LeaseExpired"
        [second] = await backend.claim(["q"], 1, self.LEASE, "w2")
        assert second.token != first.token and second.attempt == 2
        assert await backend.settle([_ok(first, clock)]) == [False]
        assert await backend.extend([(tid, first.token)], 30) == [ExtendStatus.LOST]
        assert await backend.settle([_ok(second, clock, result=b"42")]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.SUCCEEDED and rec.result == b"42"

    @pytest.mark.parametrize("how", ["lease-expired", "released"])
    @pytest.mark.parametrize(
        "policy",
        [
            None,
            SchedulingPolicy.fifo(),
            SchedulingPolicy.strict_priority(),
            SchedulingPolicy.weighted_fair(),
        ],
        ids=["deadline", "fifo", "priority", "fair"],
    )
    async def test_returned_task_keeps_its_place(
        self, backend: Backend, clock: FakeClock, policy: SchedulingPolicy | None, how: str
    ) -> None:
        """A task whose worker was lost (lease expired, reaped) or that was handed back
        (released) goes back where it was: ahead of the tasks that became ready after
        it, with its ready time unchanged."""
        if policy is not None:
            await backend.declare([QueueSpec("q", policy)])
        ready_at = clock.now()
        a, b, c = await self._enqueue(backend, clock, 3)  # same instant: arrival decides
        clock.advance(1)
        [d] = await self._enqueue(backend, clock)
        [first] = await self._claim(backend)
        assert first.message.id == a
        if how == "released":
            release = Outcome(a, first.token, OutcomeKind.RELEASED, clock.now())
            assert await backend.settle([release]) == [True]
        else:
            clock.advance(self.LEASE + 1)
            assert await backend.reap() == [a]
        [e] = await self._enqueue(backend, clock)
        rec = await backend.get(a)
        assert rec is not None and rec.state is State.QUEUED
        assert rec.eligible_at == pytest.approx(ready_at, abs=1e-3)
        leases = await self._claim(backend, 5)
        assert [lease.message.id for lease in leases] == [a, b, c, d, e]
        assert leases[0].attempt == (1 if how == "released" else 2)
        assert leases[0].ready_at == pytest.approx(ready_at, abs=1e-3)

    # -- retries and dead letters ---------------------------------------------------
    async def test_retry_then_dead_letter_keeps_history(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        retry = Outcome(
            tid,
            lease.token,
            OutcomeKind.RETRY,
            clock.now(),
            error=_err(1, clock, "first"),
            retry_at=clock.now() + 5,
        )
        assert await backend.settle([retry]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.RETRYING
        assert rec.eligible_at == pytest.approx(clock.now() + 5, abs=1e-3)
        assert await self._claim(backend) == []
        clock.advance(5)
        [lease2] = await self._claim(backend)
        assert lease2.attempt == 2
        assert lease2.ready_at == pytest.approx(clock.now(), abs=1e-3)  # waits count from the retry
        dead = Outcome(
            tid, lease2.token, OutcomeKind.DEAD, clock.now(), error=_err(2, clock, "second")
        )
        assert await backend.settle([dead]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.DEAD
        assert [e.message for e in rec.errors] == ["first", "second"]
        assert [e.attempt for e in rec.errors] == [1, 2]
        assert rec.errors[0].traceback == "Traceback ..."
        dead_list = await backend.list_tasks(TaskFilter(state=State.DEAD))
        assert [r.id for r in dead_list] == [tid]
        assert await backend.retry([tid, "missing"]) == [True, False]
        [lease3] = await self._claim(backend)
        assert lease3.message.id == tid and lease3.attempt == 1
        rec = await backend.get(tid)
        assert rec is not None and len(rec.errors) == 2

    async def test_defer_and_release_do_not_spend_attempts(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        defer = Outcome(tid, lease.token, OutcomeKind.DEFER, clock.now(), retry_at=clock.now() + 2)
        assert await backend.settle([defer]) == [True]
        clock.advance(2)
        [lease] = await self._claim(backend)
        assert lease.attempt == 1
        release = Outcome(tid, lease.token, OutcomeKind.RELEASED, clock.now())
        assert await backend.settle([release]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.QUEUED
        [lease] = await self._claim(backend)
        assert lease.attempt == 1

    async def test_failed_is_terminal_and_retryable_by_hand(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        failed = Outcome(tid, lease.token, OutcomeKind.FAILED, clock.now(), error=_err(1, clock))
        assert await backend.settle([failed]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.FAILED
        assert await backend.retry([tid]) == [True]

    async def test_purge_dead(self, backend: Backend, clock: FakeClock) -> None:
        ids = await self._enqueue(backend, clock, 3)
        leases = await self._claim(backend, 3)
        await backend.settle(
            [
                Outcome(
                    lease.message.id,
                    lease.token,
                    OutcomeKind.DEAD,
                    clock.now(),
                    error=_err(1, clock),
                )
                for lease in leases[:2]
            ]
        )
        assert await backend.purge("q", [State.DEAD]) == 2
        assert await backend.get(ids[0]) is None
        assert await backend.list_tasks(TaskFilter(state=State.DEAD)) == []
        [stats] = await backend.stats(["q"])
        assert stats.states[State.DEAD] == 0 and stats.states[State.RUNNING] == 1

    # -- results --------------------------------------------------------------------
    async def test_result_ttl(self, backend: Backend, clock: FakeClock) -> None:
        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        await backend.settle([_ok(lease, clock, result=b'"done"', result_ttl=10.0)])
        clock.advance(9)
        await backend.reap()
        rec = await backend.get(tid)
        assert rec is not None and rec.result == b'"done"'
        clock.advance(2)
        await backend.reap()
        assert await backend.get(tid) is None

    async def test_wait_done_wakes_on_settle(self, backend: Backend, clock: FakeClock) -> None:
        import anyio

        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        got = []

        async def waiter() -> None:
            got.append(await backend.wait_done(tid, 30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await backend.settle([_ok(lease, clock, result=b"1")])
        assert got[0] is not None and got[0].state is State.SUCCEEDED and got[0].result == b"1"
        timed_out = await backend.wait_done((await self._enqueue(backend, clock))[0], 0.05)
        assert timed_out is not None and timed_out.state is State.QUEUED

    # -- cancellation ---------------------------------------------------------------
    async def test_cancel_queued_and_scheduled(self, backend: Backend, clock: FakeClock) -> None:
        [a] = await self._enqueue(backend, clock)
        [b] = await self._enqueue(backend, clock, delay=100, unique_key="u")
        assert await backend.cancel([a, b, "missing"]) == [True, True, False]
        for tid in (a, b):
            rec = await backend.get(tid)
            assert rec is not None and rec.state is State.CANCELLED
        clock.advance(200)
        assert await self._claim(backend, 10) == []
        assert await backend.cancel([a]) == [False]
        [again] = await backend.enqueue([make_message(clock, unique_key="u")])
        assert again.created

    async def test_cancel_running_reaches_worker_through_extend(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        [tid] = await self._enqueue(backend, clock)
        [lease] = await self._claim(backend)
        assert await backend.cancel([tid]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.RUNNING and rec.cancel_requested
        assert await backend.extend([(tid, lease.token)], 30) == [ExtendStatus.CANCEL]
        out = Outcome(tid, lease.token, OutcomeKind.CANCELLED, clock.now())
        assert await backend.settle([out]) == [True]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.CANCELLED

    # -- pause / resume ---------------------------------------------------------------
    async def test_pause_and_resume(self, backend: Backend, clock: FakeClock) -> None:
        await self._enqueue(backend, clock, 2)
        await backend.pause("q")
        assert await self._claim(backend, 5) == []
        [stats] = await backend.stats(["q"])
        assert stats.paused
        await backend.resume("q")
        assert len(await self._claim(backend, 5)) == 2

    # -- stats and search -------------------------------------------------------------
    async def test_stats(self, backend: Backend, clock: FakeClock) -> None:
        await self._enqueue(backend, clock, 2, priority=0)
        await self._enqueue(backend, clock, 3, priority=4)
        await self._enqueue(backend, clock, 1, delay=50)
        [lease] = await self._claim(backend)
        await backend.settle([_ok(lease, clock, late=True)])
        [stats] = await backend.stats(["q"])
        assert stats.queue == "q" and not stats.paused
        assert stats.depth_by_priority[0] == 1 and stats.depth_by_priority[4] == 3
        assert stats.depth == 4
        assert stats.states[State.SCHEDULED] == 1 and stats.states[State.SUCCEEDED] == 1
        assert stats.late_by_priority[0] == 1 and stats.late == 1
        names = [s.queue for s in await backend.stats()]
        assert "q" in names
        # finished=False: the same depth and unfinished counts; finished ones may be 0
        [active] = await backend.stats(["q"], finished=False)
        assert active.depth_by_priority == stats.depth_by_priority
        assert active.late_by_priority == stats.late_by_priority
        unfinished = [st for st in State if not st.terminal]
        assert {st: active.states[st] for st in unfinished} == {
            st: stats.states[st] for st in unfinished
        }
        assert active.states[State.SUCCEEDED] in (0, 1)

    async def test_list_tasks_filters(self, backend: Backend, clock: FakeClock) -> None:
        a = await self._enqueue(backend, clock, 3, task="mod.a")
        clock.advance(1)
        b = await self._enqueue(backend, clock, 2, task="mod.b", queue="q2", unique_key="order-17")
        assert [r.id for r in await backend.list_tasks(TaskFilter(task="mod.a"))] == a
        assert [r.id for r in await backend.list_tasks(TaskFilter(queue="q2"))] == b[:1]
        assert [r.id for r in await backend.list_tasks(TaskFilter(text="order-17"))] == b[:1]
        page = await backend.list_tasks(TaskFilter(limit=2, offset=1))
        assert [r.id for r in page] == a[1:3]
        assert await backend.list_tasks(TaskFilter(state=State.RUNNING)) == []
        assert await backend.list_tasks(TaskFilter(limit=0)) == []  # no record asked for

    # -- illegal transitions ------------------------------------------------------------
    async def test_illegal_transitions_refused(self, backend: Backend, clock: FakeClock) -> None:
        [tid] = await self._enqueue(backend, clock)
        not_running = Outcome(tid, 1, OutcomeKind.SUCCEEDED, clock.now())
        assert await backend.settle([not_running]) == [False]
        assert await backend.retry([tid]) == [False]  # queued -> retry is not a DLQ retry
        [lease] = await self._claim(backend)
        await backend.settle([_ok(lease, clock)])
        assert await backend.retry([tid]) == [False]  # succeeded is final
        assert await backend.cancel([tid]) == [False]
        rec = await backend.get(tid)
        assert rec is not None and rec.state is State.SUCCEEDED

    # -- wait ---------------------------------------------------------------------------
    async def test_wait_returns_when_work_is_ready(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        import anyio

        await self._enqueue(backend, clock)
        with anyio.fail_after(5):
            await backend.wait(["q"], 30)

    async def test_wait_wakes_on_enqueue(self, backend: Backend, clock: FakeClock) -> None:
        import anyio

        woke = anyio.Event()

        async def waiter() -> None:
            await backend.wait(["q"], 30)
            woke.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await self._enqueue(backend, clock)
                await woke.wait()

    # -- coordination ---------------------------------------------------------------------
    async def test_worker_registry(self, backend: Backend, clock: FakeClock) -> None:
        info = WorkerInfo("w1", "host", 123, ("q",), 10, 2, clock.now(), clock.now())
        await backend.heartbeat(info, 15)
        assert [w.id for w in await backend.workers()] == ["w1"]
        got = (await backend.workers())[0]
        assert got.queues == ("q",) and got.busy == 2 and got.pid == 123
        clock.advance(16)
        assert await backend.workers() == []
        await backend.heartbeat(info, 15)
        await backend.remove_worker("w1")
        assert await backend.workers() == []

    async def test_token_bucket(self, backend: Backend, clock: FakeClock) -> None:
        for _ in range(3):
            assert await backend.take_tokens("api", 1.0, 3.0) == 0
        wait = await backend.take_tokens("api", 1.0, 3.0)
        assert wait == pytest.approx(1.0)
        clock.advance(1)
        assert await backend.take_tokens("api", 1.0, 3.0) == 0
        assert await backend.take_tokens("other", 1.0, 3.0) == 0

    async def test_token_bucket_is_kept_until_refilled(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        # A backend may forget a bucket once it is full again (it then answers like an
        # absent one), never before: a drained bucket survives the reaper.
        for _ in range(2):
            assert await backend.take_tokens("slow", 0.5, 2.0) == 0
        clock.advance(1)  # half a token back
        await backend.reap()
        assert await backend.take_tokens("slow", 0.5, 2.0) == pytest.approx(1.0)
        clock.advance(4)  # full again
        await backend.reap()
        for _ in range(2):
            assert await backend.take_tokens("slow", 0.5, 2.0) == 0
        assert await backend.take_tokens("slow", 0.5, 2.0) == pytest.approx(2.0)

    async def test_once_dedupes_cron_ticks(self, backend: Backend, clock: FakeClock) -> None:
        assert await backend.once("cron:sweep:1000", 60)
        assert not await backend.once("cron:sweep:1000", 60)
        assert await backend.once("cron:sweep:1060", 60)
        clock.advance(61)
        await backend.reap()
        assert await backend.once("cron:sweep:1000", 60)

    async def test_kv(self, backend: Backend, clock: FakeClock) -> None:
        assert await backend.kv_get("cfg") is None
        await backend.kv_set("cfg", b"v1")
        await backend.kv_set("tmp", b"x", ttl=5)
        assert await backend.kv_get("cfg") == b"v1"
        assert await backend.kv_get("tmp") == b"x"
        clock.advance(6)
        assert await backend.kv_get("tmp") is None
        await backend.kv_set("cfg", b"v2")
        assert await backend.kv_get("cfg") == b"v2"

    async def test_kv_replace_is_a_compare_and_set(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        # expected absent: stored only when there is none
        assert await backend.kv_replace("cas", None, b"v1")
        assert not await backend.kv_replace("cas", None, b"other")
        assert await backend.kv_get("cas") == b"v1"
        # expected value: stored only when it is the stored one
        assert not await backend.kv_replace("cas", b"v0", b"v2")
        assert await backend.kv_get("cas") == b"v1"
        assert await backend.kv_replace("cas", b"v1", b"v2")
        assert await backend.kv_get("cas") == b"v2"
        assert not await backend.kv_replace("cas", b"v1", b"v3")  # stale
        assert await backend.kv_get("cas") == b"v2"
        # an empty value is a value, not an absence
        assert await backend.kv_replace("cas", b"v2", b"")
        assert not await backend.kv_replace("cas", None, b"x")
        assert await backend.kv_get("cas") == b""
        assert await backend.kv_replace("cas", b"", b"v3")
        assert await backend.kv_get("cas") == b"v3"
        # a value written by kv_set is replaced the same way
        await backend.kv_set("plain", b"p")
        assert await backend.kv_replace("plain", b"p", b"q")
        assert await backend.kv_get("plain") == b"q"
        # an expected value under an absent key loses, and stores nothing
        assert not await backend.kv_replace("missing", b"v", b"w")
        assert await backend.kv_get("missing") is None

    async def test_kv_replace_sets_the_expiry_as_kv_set_does(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await backend.kv_set("t", b"a", ttl=10)
        assert await backend.kv_replace("t", b"a", b"b", ttl=5)  # the new ttl, not the old
        clock.advance(4)
        assert await backend.kv_get("t") == b"b"
        clock.advance(2)
        assert await backend.kv_get("t") is None
        # an expired value counts as none: it no longer matches, and absence does
        assert not await backend.kv_replace("t", b"b", b"c")
        assert await backend.kv_replace("t", None, b"c")
        clock.advance(1000)  # stored without a ttl: it never expires
        assert await backend.kv_get("t") == b"c"
        # a replace without a ttl drops the replaced value's expiry
        await backend.kv_set("u", b"a", ttl=5)
        assert await backend.kv_replace("u", b"a", b"b")
        clock.advance(6)
        await backend.reap()
        assert await backend.kv_get("u") == b"b"
        # ... and one with a ttl gives an unexpiring value one
        assert await backend.kv_replace("u", b"b", b"c", ttl=5)
        clock.advance(6)
        await backend.reap()
        assert await backend.kv_get("u") is None

    async def test_kv_replace_lets_one_of_concurrent_writers_win(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        import anyio

        won: list[bytes] = []

        async def replace(old: bytes | None, new: bytes) -> None:
            if await backend.kv_replace("race", old, new):
                won.append(new)

        for old in (None, won):  # from absent, then from the winner's value
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    expected = None if old is None else old[-1]
                    tg.start_soon(replace, expected, b"w%d-%d" % (len(won), i))
            assert len(won) == (1 if old is None else 2)
            assert await backend.kv_get("race") == won[-1]

    async def test_runtime_stats(self, backend: Backend, clock: FakeClock) -> None:
        await backend.record_runtimes([("a", 0.2), ("a", 0.4), ("b", 6.0)])
        stats = await backend.runtime_stats(["a", "b", "c"])
        assert stats["a"].count == 2 and stats["a"].mean == pytest.approx(0.3)
        assert stats["b"].mean == pytest.approx(6.0) and "c" not in stats

    # -- journal ----------------------------------------------------------------
    async def _journal(
        self, backend: Backend, clock: FakeClock, stream: str, n: int, key: str | None = None
    ) -> list[JournalEntry]:
        """Append ``n`` records one second apart (clock advanced past the last)."""
        entries = []
        for i in range(n):
            entries.append(JournalEntry(stream, clock.now(), b"%s-%d" % (stream.encode(), i), key))
            clock.advance(1)
        await backend.journal_append(entries)
        return entries

    async def test_journal_reads_in_time_order(self, backend: Backend, clock: FakeClock) -> None:
        assert await backend.journal_read("audit") == []
        entries = await self._journal(backend, clock, "audit", 5)
        await self._journal(backend, clock, "metrics", 2)  # another stream: not read
        assert await backend.journal_read("audit") == entries[::-1]
        assert await backend.journal_read("audit", newest_first=False) == entries
        assert await backend.journal_read("audit", limit=2) == [entries[4], entries[3]]
        assert await backend.journal_read("audit", limit=2, newest_first=False) == entries[:2]
        assert await backend.journal_read("nothing") == []

    async def test_journal_keeps_append_order_within_one_instant(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        at = clock.now()
        first = [JournalEntry("audit", at, b"%d" % i) for i in range(3)]
        await backend.journal_append(first)
        later = JournalEntry("audit", at, b"later")
        await backend.journal_append([later])
        # an older record appended last still takes its place by time
        older = JournalEntry("audit", at - 10, b"\x00\xff binary")
        await backend.journal_append([older])
        assert await backend.journal_read("audit", newest_first=False) == [older, *first, later]
        assert await backend.journal_read("audit") == [later, *first[::-1], older]

    async def test_journal_time_bounds(self, backend: Backend, clock: FakeClock) -> None:
        t0 = clock.now()
        e = await self._journal(backend, clock, "metrics", 6)  # at t0 .. t0+5
        read = backend.journal_read
        assert await read("metrics", since=t0 + 2, newest_first=False) == e[2:]  # inclusive
        assert await read("metrics", until=t0 + 2, newest_first=False) == e[:2]  # exclusive
        assert await read("metrics", since=t0 + 1, until=t0 + 4) == e[1:4][::-1]
        assert await read("metrics", since=t0 + 1.5, until=t0 + 3.5, newest_first=False) == e[2:4]
        assert await read("metrics", since=t0 + 1, until=t0 + 4, limit=1) == [e[3]]
        assert await read("metrics", since=t0 + 9) == []
        assert await read("metrics", since=t0 + 3, until=t0 + 3) == []

    async def test_journal_by_key(self, backend: Backend, clock: FakeClock) -> None:
        t0 = clock.now()
        mixed = [
            JournalEntry("logs", t0, b"a1", "task-a"),
            JournalEntry("logs", t0 + 1, b"b1", "task-b"),
            JournalEntry("logs", t0 + 2, b"a2", "task-a"),
            JournalEntry("logs", t0 + 3, b"none"),
            JournalEntry("audit", t0 + 4, b"a-elsewhere", "task-a"),
        ]
        await backend.journal_append(mixed)
        a1, b1, a2, none, _ = mixed
        read = backend.journal_read
        assert await read("logs", key="task-a", newest_first=False) == [a1, a2]
        assert await read("logs", key="task-a", limit=1) == [a2]
        assert await read("logs", key="task-a", since=t0 + 1) == [a2]
        assert await read("logs", key="task-a", until=t0 + 1) == [a1]
        assert await read("logs", key="task-b") == [b1]
        assert await read("logs", key="task-c") == []
        assert await read("logs", newest_first=False) == [a1, b1, a2, none]

    async def test_journal_trim_removes_records_past_retention(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        t0 = clock.now()
        logs = await self._journal(backend, clock, "logs", 4, key="task-a")  # t0 .. t0+3
        audit = await self._journal(backend, clock, "audit", 3)  # t0+4 .. t0+6
        other = JournalEntry("logs", t0 + 10, b"b", "task-b")
        await backend.journal_append([other])
        removed = await backend.journal_trim({"logs": t0 + 2, "audit": t0 + 5, "never": t0 + 9})
        assert removed == 3  # two logs, one audit record; a record at the cutoff stays
        assert await backend.journal_read("logs", newest_first=False) == [*logs[2:], other]
        assert await backend.journal_read("logs", key="task-a", newest_first=False) == logs[2:]
        assert await backend.journal_read("logs", key="task-a", since=t0) == logs[2:][::-1]
        assert await backend.journal_read("audit", newest_first=False) == audit[1:]
        assert await backend.journal_trim({"logs": t0 + 4}) == 2
        assert await backend.journal_read("logs", key="task-a") == []
        assert await backend.journal_read("logs", key="task-b") == [other]
        assert await backend.journal_trim({"logs": t0 + 4}) == 0
        # a key's records appended after a trim are found again
        again = JournalEntry("logs", t0 + 11, b"again", "task-a")
        await backend.journal_append([again])
        assert await backend.journal_read("logs", key="task-a") == [again]
