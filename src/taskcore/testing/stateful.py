"""Model-based testing of a backend against the in-memory reference (hypothesis).

:func:`backend_state_machine` builds a :class:`hypothesis.stateful.RuleBasedStateMachine`
that drives random sequences of operations (enqueue with priorities, delays, unique
and fairness keys; claim; settle with every outcome kind and stale tokens; extend;
cancel; retry; purge; pause; moving the fake clock; reap; coordination calls)
against the backend under test and the reference side by side, and asserts that
every observable result is the same: claimed ids in order, lease fields, settle and
extend answers, task records, queue statistics. Third-party backends use it like
this::

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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from taskcore.backend import (
    AttemptError,
    Backend,
    Lease,
    Message,
    Outcome,
    OutcomeKind,
    QueueSpec,
    TaskFilter,
    WorkerInfo,
)
from taskcore.clock import FakeClock
from taskcore.memory import MemoryBackend
from taskcore.scheduling import SchedulingPolicy
from taskcore.states import State
from taskcore.testing.conformance import make_message

__all__ = ["POLICIES", "BackendFactory", "backend_state_machine"]

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

_LEASE = 30.0
_STATES = tuple(State)

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


def _lease_view(lease: Lease) -> tuple[Any, ...]:
    """What must agree between backends (tokens are each backend's own)."""
    return (lease.message, lease.attempt, lease.worker, lease.expires_at, lease.claimed_at)


def backend_state_machine(
    make_backend: BackendFactory,
    *,
    make_reference: BackendFactory | None = None,
    queues: Sequence[str] = ("q1", "q2"),
    async_backend: str = "asyncio",
) -> type[RuleBasedStateMachine]:
    """A state machine comparing ``make_backend``'s backends with the reference.

    Args:
        make_backend: builds a fresh, empty backend under test on the given clock.
        make_reference: builds the reference (default: :class:`MemoryBackend`).
        queues: queue names the machine uses.
        async_backend: anyio backend for the event loop ("asyncio" or "trio").

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

        def teardown(self) -> None:
            self._stack.close()

        # -- helpers ------------------------------------------------------------
        def both(self, fn: Callable[[Backend], Awaitable[T]]) -> tuple[T, T]:
            return self.portal.call(fn, self.ref), self.portal.call(fn, self.sut)

        def same(self, fn: Callable[[Backend], Awaitable[T]], what: str) -> T:
            expected, got = self.both(fn)
            assert got == expected, f"{what}: reference {expected!r} != backend {got!r}"
            return got

        def pick(self, data: st.DataObject, pool: Sequence[str], extra: bool = True) -> list[str]:
            choices = list(pool) + (["no-such-task"] if extra else [])
            if not choices:
                return []
            return data.draw(st.lists(st.sampled_from(choices), max_size=5), label="ids")

        # -- rules ----------------------------------------------------------------
        @initialize(
            policies=st.lists(st.sampled_from(POLICIES), min_size=len(names), max_size=len(names))
        )
        def declare(self, policies: list[SchedulingPolicy]) -> None:
            specs = [QueueSpec(q, p) for q, p in zip(names, policies, strict=True)]
            self.both(lambda b: b.declare(specs))

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
            got = self.same(lambda b: b.enqueue(msgs), "enqueue")
            assert len(got) == len(msgs)

        @rule(
            qs=st.lists(st.sampled_from([*names, "no-such-queue"]), min_size=1, max_size=3),
            limit=st.integers(1, 8),
            max_priority=st.integers(0, 4),
            worker=st.sampled_from(["w1", "w2"]),
        )
        def claim(self, qs: list[str], limit: int, max_priority: int, worker: str) -> None:
            a, b = self.both(lambda be: be.claim(qs, limit, _LEASE, worker, max_priority))
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

        @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 5.0, 11.0, 31.0, 61.0]))
        def advance(self, seconds: float) -> None:
            self.portal.call(self.clock.advance, seconds)

        @rule()
        def reap(self) -> None:
            a, b = self.both(lambda be: be.reap())
            assert sorted(b) == sorted(a), f"reap: reference {a} != backend {b}"

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

        # -- invariants -------------------------------------------------------------
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
            self.same(lambda be: be.kv_get("k1"), "kv_get")
            a, b = self.both(lambda be: be.workers())
            assert sorted(w.id for w in b) == sorted(w.id for w in a), "workers"
            ra, rb = self.both(lambda be: be.runtime_stats(["t1", "t2"]))
            assert ra.keys() == rb.keys(), "runtime_stats"
            for k in ra:
                assert rb[k].count == ra[k].count
                assert abs(rb[k].mean - ra[k].mean) <= 1e-9 * max(1.0, abs(ra[k].mean))

    BackendComparison.__name__ = BackendComparison.__qualname__ = "BackendComparison"
    return BackendComparison
