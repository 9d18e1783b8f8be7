"""The worker end to end, with the same tests on memory, Redis and PostgreSQL.

Every test runs a real :class:`~taskcore.worker.Worker` against the backend under
test, with a :class:`FakeClock` for every time the backend stores; waits are on events,
on ``handle.result()`` or on a bounded poll of the backend's observable state.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest

from taskcore import (
    App,
    BackendUnavailable,
    FakeClock,
    Priority,
    ResultTimeout,
    Retry,
    RetryPolicy,
    SchedulingPolicy,
    State,
    TaskCancelled,
    TaskFailed,
    TaskValidationError,
    Worker,
)
from taskcore.backend import ExtendStatus, Message, Outcome, OutcomeKind
from taskcore.complexity import Complexity
from taskcore.envelope import Envelope, new_task_id
from taskcore.testing import Recorder

from .conftest import POLL, settled, until

pytestmark = pytest.mark.anyio

MakeApp = Callable[..., contextlib.AbstractAsyncContextManager[App]]


def moment(t: float) -> Any:
    """Equal to epoch time ``t`` within a millisecond (``approx``'s relative default
    would accept any time within half an hour of 2023)."""
    return pytest.approx(t, rel=0, abs=1e-3)


def worker(app: App, **options: Any) -> Worker:
    """A worker whose idle wait looks again soon: a service backend may take up to its
    poll interval to notice that the fake clock moved."""
    options.setdefault("poll_interval", POLL)
    return app.worker(**options)


def waiting_for_work(*workers: Worker) -> bool:
    """Every worker's claim loop is in its idle wait, with no claim out. Move the fake
    clock in the same step as this check: a claim sent before the move dates its
    leases before it (PostgreSQL's even for tasks enqueued after it), and a move of a
    lease or more makes them lapse at once. (Redis's wait may claim in its blocking
    round trip; its claim script dates a lease no earlier than the task's ready time.)"""
    return all(w._wait_scope is not None for w in workers)


async def retrying_after(app: App, task_id: str, attempts: int) -> None:
    """Wait until the ``attempts``-th failure has been settled as a retry."""

    async def landed() -> bool:
        rec = await app.backend.get(task_id)
        return rec is not None and rec.state is State.RETRYING and len(rec.errors) == attempts

    await until(landed)


# -- results ---------------------------------------------------------------------------


class Out(msgspec.Struct):
    total: int


async def test_async_and_sync_results(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def shout(word: str) -> str:
        return word.upper()

    @app.task
    async def make(n: int) -> Out:
        return Out(n)

    async with worker(app, concurrency=4):
        assert await (await add.enqueue(2, 3)).result(timeout=5) == 5
        assert await (await shout.enqueue("hi")).result(timeout=5) == "HI"
        assert await (await make.enqueue(4)).result(timeout=5) == Out(4)


# -- retries and dead letters ------------------------------------------------------------


async def test_retries_follow_policy_delays_then_dead_letter_with_history(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    delays = [1.5, 4.0, 10.0]

    @app.task(retry=RetryPolicy.explicit(delays))
    async def always_fails(n: int) -> None:
        raise ConnectionError(f"down {n}")

    async with worker(app):
        h = await always_fails.enqueue(7)
        for attempt, delay in enumerate(delays, start=1):
            await recorder.wait_runs(attempt)
            await retrying_after(app, h.id, attempt)
            rec = await h.record()
            assert rec is not None and rec.attempt == attempt
            assert rec.eligible_at == moment(rec.errors[-1].at + delay)
            assert rec.errors[-1].at == moment(clock.now())
            clock.advance(delay - 0.01)  # not due yet: nothing runs
            assert (await h.status()) is State.RETRYING
            clock.advance(0.01)
        await recorder.wait_runs(4)
        with pytest.raises(TaskFailed, match="ended dead after 4 attempt") as info:
            await h.result(timeout=5)
    assert len(recorder.runs) == 4
    rec = await h.record()
    assert rec is not None and rec.state is State.DEAD
    assert [e.attempt for e in rec.errors] == [1, 2, 3, 4]
    assert all(e.type == "ConnectionError" and "down 7" in e.message for e in rec.errors)
    assert "Traceback" in rec.errors[0].traceback and "always_fails" in rec.errors[0].traceback
    assert info.value.task_id == h.id
    assert [r.id for r in await app.dead_letters()] == [h.id]


async def test_default_simple_and_moderate_policies(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    @app.task  # simple: fixed 1 s
    async def simple() -> None:
        raise TimeoutError("db")

    @app.task(complexity="moderate")  # linear 1, 2, 3 ... s
    async def moderate() -> None:
        raise TimeoutError("db")

    async with worker(app):
        for task, expected in ((simple, [1.0, 1.0, 1.0]), (moderate, [1.0, 2.0, 3.0])):
            h = await task.enqueue()
            seen = []
            for attempt in (1, 2, 3):
                await retrying_after(app, h.id, attempt)
                rec = await h.record()
                assert rec is not None
                seen.append(rec.eligible_at - rec.errors[-1].at)
                clock.advance(seen[-1])
            assert seen == pytest.approx(expected)


async def test_retry_request_uses_its_delay(app: App, clock: FakeClock, recorder: Recorder) -> None:
    calls = {"n": 0}

    @app.task
    async def polite() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Retry(delay=42, reason="not ready")
        return "done"

    async with worker(app):
        h = await polite.enqueue()
        await recorder.wait_runs(1)
        await retrying_after(app, h.id, 1)
        rec = await h.record()
        assert rec is not None and rec.eligible_at == moment(clock.now() + 42)
        assert rec.errors[-1].type == "Retry" and rec.errors[-1].message == "not ready"
        clock.advance(41)
        assert await h.status() is State.RETRYING
        clock.advance(1)
        assert await h.result(timeout=5) == "done"
    assert calls["n"] == 2


async def test_dead_letters_retry_and_purge(app: App) -> None:
    attempts = {"n": 0}

    @app.task(retry=RetryPolicy.fixed(0))
    async def fragile() -> int:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ValueError("first time")
        return attempts["n"]

    async with worker(app):
        h = await fragile.enqueue()
        with pytest.raises(TaskFailed, match="ValueError: first time"):
            await h.result(timeout=5)
        assert await app.retry_dead([h.id]) == [True]
        assert await h.result(timeout=5) == 2
        rec = await h.record()
        assert rec is not None and len(rec.errors) == 1  # history kept across the DLQ retry
        assert await app.retry_dead([h.id]) == [False]  # succeeded: nothing to retry
        attempts["n"] = 0
        h2 = await fragile.enqueue()
        with pytest.raises(TaskFailed):
            await h2.result(timeout=5)
    assert [r.id for r in await app.dead_letters()] == [h2.id]
    assert await app.purge("default") == 1
    assert await h2.record() is None
    assert await app.dead_letters() == []
    assert await h.status() is State.SUCCEEDED  # purging dead letters spares the rest


# -- scheduling, cancellation, shutdown -------------------------------------------------


async def test_delayed_task_runs_when_due(app: App, clock: FakeClock) -> None:
    @app.task
    async def later() -> float:
        return clock.now()

    async with worker(app):
        h = await later.with_options(delay=30).enqueue()
        assert await h.status() is State.SCHEDULED
        clock.advance(29)
        assert await h.status() is State.SCHEDULED
        clock.advance(1)
        assert await h.result(timeout=5) == moment(clock.now())


async def test_cancel_queued_and_running(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def blocker() -> None:
        await release.wait()

    queued = await blocker.with_options(delay=100).enqueue()
    assert await queued.cancel()
    assert await queued.status() is State.CANCELLED
    async with worker(app) as w:
        running = await blocker.enqueue()
        await recorder.wait_started(1)
        assert await running.cancel()
        assert await running.status() is State.RUNNING  # flagged, not yet stopped
        await w.extend_leases()  # the renewal is where the worker learns of it
        with pytest.raises(TaskCancelled):
            await running.result(timeout=5)
    assert not await running.cancel()  # already terminal
    with pytest.raises(TaskCancelled):
        await queued.result(timeout=5)


async def test_graceful_shutdown_hands_back_unfinished(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def stuck() -> None:
        await release.wait()

    # A settle takes at least one network round trip; memory's has no await at all,
    # which would hide a shutdown that cancels its own settle in flight (it did, until
    # the final flush waited for it). Make the round trip explicit on every backend.
    settle = app.backend.settle

    async def settle_with_round_trip(outcomes: Any) -> list[bool]:
        await anyio.sleep(0.02)
        return await settle(outcomes)

    app.backend.settle = settle_with_round_trip  # type: ignore[method-assign]

    w = worker(app, grace_period=0)
    async with w:
        h = await stuck.enqueue()
        await recorder.wait_started(1)
    assert w.running == 0
    rec = await h.record()
    assert rec is not None and rec.state is State.QUEUED and rec.attempt == 0
    assert rec.worker is None and rec.errors == ()
    release.set()
    async with worker(app):  # the handed-back task runs on the next worker
        assert await h.result(timeout=5) is None


async def test_grace_period_lets_running_tasks_finish(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def finishing() -> str:
        await release.wait()
        return "finished"

    async with anyio.create_task_group() as tg:
        w = worker(app, grace_period=30)
        await tg.start(w.run)
        h = await finishing.enqueue()
        await recorder.wait_started(1)
        w.stop()
        release.set()
    assert await h.result(timeout=5) == "finished"
    rec = await h.record()
    assert rec is not None and rec.attempt == 1 and recorder.started == [h.id]


async def test_vanished_worker_lease_is_reaped_and_rerun(app: App, clock: FakeClock) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    h = await job.enqueue(5)
    [lost] = await app.backend.claim(["default"], 1, 30, "crashed-worker")
    # the lease runs out before the worker starts: a fake clock moved while one of the
    # worker's claims is out would give that claim's lease the time before the move,
    # and the lease would lapse at once (a second LeaseExpired, a third attempt)
    clock.advance(31)
    async with worker(app, lease_seconds=30) as w:
        await w.maintain()  # reaps the expired lease
        assert await h.result(timeout=5) == 5
    stale = Outcome(h.id, lost.token, OutcomeKind.SUCCEEDED, clock.now(), result=b"99")
    assert await app.backend.settle([stale]) == [False]
    assert await app.backend.extend([(h.id, lost.token)], 30) == [ExtendStatus.LOST]
    assert await h.result(timeout=5) == 5  # the stale settle changed nothing
    rec = await h.record()
    assert rec is not None and rec.attempt == 2 and rec.errors[0].type == "LeaseExpired"


async def test_lost_lease_stops_local_run_without_settling(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    release = anyio.Event()

    @app.task
    async def slow() -> None:
        await release.wait()

    async with worker(app, lease_seconds=30) as w:
        h = await slow.enqueue()
        await recorder.wait_started(1)
        await app.pause("default")  # keep this worker from claiming the task again
        # the worker stalls past its lease (a long GC pause): its renewal loop wakes
        # but renews nothing, so a reaper (maybe its own maintenance loop) requeues it
        renew = w.extend_leases
        stalled = anyio.Event()

        async def stalled_renewal() -> None:
            stalled.set()

        w.extend_leases = stalled_renewal  # type: ignore[method-assign]
        clock.advance(31)
        await stalled.wait()
        await app.backend.reap()  # this worker's maintenance loop may have reaped it first
        await settled(app, h.id, State.QUEUED)
        await renew()  # the worker wakes up: its lease is lost
        await until(lambda: w.running == 0)
        rec = await h.record()
        assert rec is not None and rec.state is State.QUEUED and rec.attempt == 1
        assert recorder.runs == []  # the stopped run reported no outcome
        await app.resume("default")
        release.set()
        assert await h.result(timeout=5) is None
    rec = await h.record()
    assert rec is not None and rec.attempt == 2


async def test_paused_queue_is_not_claimed_until_resumed(app: App) -> None:
    @app.task
    async def job() -> str:
        return "ran"

    await app.pause("default")
    async with worker(app):
        h = await job.enqueue()
        with pytest.raises(ResultTimeout):
            await h.result(timeout=0.3)
        assert await h.status() is State.QUEUED
        await app.resume("default")
        assert await h.result(timeout=5) == "ran"


async def test_timeout_and_terminal_failure_without_dead_letter(app: App) -> None:
    @app.task(timeout=0.05, retry=RetryPolicy.fixed(0))
    async def slow() -> None:
        await anyio.sleep(30)

    @app.task(retry=RetryPolicy.fixed(0), dead_letter=False)
    async def once() -> None:
        raise RuntimeError("nope")

    async with worker(app):
        h = await slow.enqueue()
        with pytest.raises(TaskFailed, match=r"TaskTimeout: task .* ran past its timeout of 0.05s"):
            await h.result(timeout=10)
        f = await once.enqueue()
        with pytest.raises(TaskFailed, match="ended failed after 1 attempt"):
            await f.result(timeout=5)
    assert await h.status() is State.DEAD
    assert await f.status() is State.FAILED
    assert [r.id for r in await app.dead_letters()] == [h.id]


# -- bad input -----------------------------------------------------------------------------


async def test_bad_input_goes_to_dead_letters_and_worker_keeps_running(
    app: App, clock: FakeClock
) -> None:
    @app.task
    async def fine() -> str:
        return "ok"

    def raw(body: bytes, task: str = "x") -> Message:
        now = clock.now()
        return Message(new_task_id(), task, "default", 2, now, now, body)

    unknown_env = Envelope(id="u", task="no.such.task")
    bad_args_env = Envelope(id="b", task=fine.name, args=msgspec.Raw(b'{"unexpected": 1}'))
    messages = [
        raw(b"\x00\xffnot json"),
        raw(msgspec.json.encode(unknown_env)),
        raw(msgspec.json.encode(bad_args_env), fine.name),
        raw(b'{"id": "big", "task": "x", "headers": {"pad": "' + b"a" * (2 * 1024 * 1024) + b'"}}'),
    ]
    await app.backend.enqueue(messages)
    async with worker(app):
        for m in messages:
            await settled(app, m.id, State.DEAD)
        assert await (await fine.enqueue()).result(timeout=5) == "ok"
    reasons = []
    for m in messages:
        rec = await app.backend.get(m.id)
        assert rec is not None and rec.state is State.DEAD and rec.attempt == 1
        reasons.append((rec.errors[-1].type, rec.errors[-1].message))
    assert reasons[0][0] == "MalformedEnvelope" and "malformed envelope" in reasons[0][1]
    assert reasons[1][0] == "UnknownTask" and "no.such.task" in reasons[1][1]
    assert reasons[2][0] == "InvalidArguments" and "unexpected" in reasons[2][1]
    assert reasons[3][0] == "MalformedEnvelope" and "over the limit" in reasons[3][1]
    assert {r.id for r in await app.dead_letters()} == {m.id for m in messages}


async def test_unserialisable_result_is_dead_lettered(app: App) -> None:
    @app.task
    async def leaky() -> Any:
        return threading.Lock()

    async with worker(app):
        h = await leaky.enqueue()
        with pytest.raises(TaskFailed, match=r"ResultNotSerializable: .*cannot encode lock"):
            await h.result(timeout=5)
    assert await h.status() is State.DEAD


# -- settles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("carry", [0, 16])
async def test_finished_tasks_ride_on_the_claim_only_with_carry(app: App, carry: int) -> None:
    """With ``carry``, outcomes that would queue behind a settle in flight go with the
    next claim; without it every outcome is settled beside the claims. Either way each
    result is recorded once."""
    gate = anyio.Event()
    carried: list[int] = []
    backend: Any = app.backend
    settle, claim = backend.settle, backend.claim

    async def slow_settle(outcomes: Any) -> list[bool]:
        with anyio.move_on_after(0 if carry == 0 else 10):
            await gate.wait()  # held until a claim carries outcomes
        return list(await settle(outcomes))

    async def spy_claim(*args: Any, settle: Any = (), **kwargs: Any) -> Any:
        if settle:
            carried.append(len(settle))
            gate.set()
        return await claim(*args, settle=settle, **kwargs)

    backend.settle, backend.claim = slow_settle, spy_claim

    @app.task
    async def echo(i: int) -> int:
        return i

    handles = await app.enqueue_many(echo, [(i,) for i in range(40)])
    async with worker(app, concurrency=4, carry=carry):
        assert [await h.result(timeout=20) for h in handles] == list(range(40))
    assert (sum(carried) > 0) == (carry > 0)
    assert all(n <= carry for n in carried)
    [stats] = await app.stats(["default"])
    assert stats.states.get(State.SUCCEEDED) == 40


async def test_after_a_short_claim_the_worker_waits_where_the_wait_claims(app: App) -> None:
    """A claim that came back with fewer tasks than it asked for found the queue
    drained. On a backend whose wait() claims in the round trip that blocks (Redis)
    the worker waits next instead of sending a claim that would come back empty;
    elsewhere it claims again first. Either way every task runs."""
    backend: Any = app.backend
    claim, wait = backend.claim, backend.wait
    calls: list[str] = []
    shorts: list[int] = []  # the positions in ``calls`` of the claims that came back short

    async def spy_claim(queues: Any, limit: int, *args: Any, **kwargs: Any) -> Any:
        leases = await claim(queues, limit, *args, **kwargs)
        if 0 < len(leases) < limit:
            shorts.append(len(calls))
        calls.append("claim")  # (the claim after a short one may find the next task)
        return leases

    async def spy_wait(*args: Any, **kwargs: Any) -> None:
        calls.append("wait")
        await wait(*args, **kwargs)

    backend.claim, backend.wait = spy_claim, spy_wait

    @app.task
    async def echo(i: int) -> int:
        return i

    async with worker(app, concurrency=4):
        for i in range(5):  # one at a time: each claim takes one task of four slots
            assert await (await echo.enqueue(i)).result(timeout=10) == i
    after_short = [calls[k + 1] for k in shorts if k + 1 < len(calls)]
    assert len(after_short) >= 4
    expected = "wait" if getattr(backend, "wait_claims", False) else "claim"
    assert set(after_short) == {expected}


async def test_a_settle_backlog_holds_back_the_claims(app: App) -> None:
    """While the backend is slow to record outcomes, the worker claims nothing more once
    10 outcomes per slot wait for a settle: memory stays bounded and finished tasks are
    not joined by more whose leases could lapse unsettled. Once the settles go through,
    every task runs and is recorded."""
    concurrency, bound = 2, 20
    backend: Any = app.backend
    claim, settle = backend.claim, backend.settle
    gate = anyio.Event()
    backlog_reached = anyio.Event()
    finished = settled_count = 0
    unsettled_at_claims: list[int] = []

    async def held_settle(outcomes: Any) -> list[bool]:
        nonlocal settled_count
        await gate.wait()
        out = list(await settle(outcomes))
        settled_count += len(outcomes)
        return out

    async def spy_claim(*args: Any, **kwargs: Any) -> Any:
        unsettled_at_claims.append(finished - settled_count)
        return await claim(*args, **kwargs)

    backend.claim, backend.settle = spy_claim, held_settle

    @app.task
    async def step(i: int) -> int:
        nonlocal finished
        finished += 1  # its outcome follows before the next claim (no await between)
        if finished - settled_count >= bound:
            backlog_reached.set()
        return i

    handles = await app.enqueue_many(step, [(i,) for i in range(60)])
    async with worker(app, concurrency=concurrency):
        with anyio.fail_after(10):
            await backlog_reached.wait()
        gate.set()
        assert [await h.result(timeout=20) for h in handles] == list(range(60))
    # the worker counts the outcomes it holds; a body counted here may not have handed
    # its outcome in yet, at most one per slot
    assert max(unsettled_at_claims) < bound + concurrency
    [stats] = await app.stats(["default"])
    assert stats.states.get(State.SUCCEEDED) == 60


# -- slots -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [0, "auto"])
async def test_claims_no_more_than_free_slots(
    app: App, recorder: Recorder, prefetch: int | str
) -> None:
    """No prefetch by default; the adaptive one holds none while no task has finished."""
    release = anyio.Event()

    @app.task
    async def hold() -> None:
        await release.wait()

    handles = await app.enqueue_many(hold, [() for _ in range(10)])
    async with worker(app, concurrency=3, prefetch=prefetch):
        await recorder.wait_started(3)
        [stats] = await app.stats(["default"])
        assert stats.states.get(State.RUNNING) == 3 and stats.states.get(State.QUEUED) == 7
        release.set()
        for h in handles:
            assert await h.result(timeout=5) is None
    assert len(recorder.started) == 10


async def test_prefetch_holds_no_more_than_its_bound(app: App, recorder: Recorder) -> None:
    release = anyio.Event()
    held: list[int] = []  # what the worker held as each task started
    active = [0, 0]  # running now, most at once

    @app.task
    async def hold() -> None:
        held.append(w.held)
        active[0] += 1
        active[1] = max(active)
        await release.wait()
        active[0] -= 1

    handles = await app.enqueue_many(hold, [() for _ in range(12)])
    w = worker(app, concurrency=2, prefetch=3)
    async with w:
        await recorder.wait_started(2)
        await until(lambda: w.held == 5)
        [stats] = await app.stats(["default"])
        assert stats.states.get(State.RUNNING) == 5 and stats.states.get(State.QUEUED) == 7
        assert w.running == 2
        release.set()
        for h in handles:
            assert await h.result(timeout=5) is None
    assert len(held) == 12 and max(held) <= 5
    assert active[1] == 2  # prefetched tasks wait for a slot


async def test_prefetched_tasks_are_handed_back_at_once_on_stop(
    app: App, recorder: Recorder
) -> None:
    release = anyio.Event()

    @app.task
    async def job(n: int) -> int:
        if n == 0:
            await release.wait()
        return n

    handles = await app.enqueue_many(job, [(n,) for n in range(8)])
    async with anyio.create_task_group() as tg:
        w = worker(app, concurrency=1, prefetch=3, grace_period=30)
        await tg.start(w.run)
        await recorder.wait_started(1)
        await until(lambda: w.held == 4)  # job(0) runs, jobs 1-3 wait for the slot
        w.stop()
        await until(lambda: w.held == 1)  # the prefetched ones did not wait for the grace
        release.set()
    assert recorder.started == [handles[0].id]  # no prefetched task ran meanwhile
    assert await handles[0].result(timeout=5) == 0
    for h in handles[1:4]:
        rec = await h.record()
        assert rec is not None and rec.state is State.QUEUED and rec.attempt == 0
        assert rec.worker is None and rec.errors == ()
    async with worker(app, concurrency=1, prefetch=0):  # they kept their place
        assert [await h.result(timeout=5) for h in handles] == list(range(8))
    assert recorder.started == [h.id for h in handles]


async def test_reserved_slots_for_critical(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task(priority=Priority.LOW)
    async def bulk() -> None:
        await release.wait()

    @app.task(priority=Priority.CRITICAL)
    async def page() -> str:
        return "paged"

    await app.enqueue_many(bulk, [() for _ in range(5)])
    async with worker(app, concurrency=3, reserved_critical=1):
        await recorder.wait_started(2)
        assert await (await page.enqueue()).result(timeout=5) == "paged"
        [stats] = await app.stats(["default"])
        assert stats.states.get(State.RUNNING) == 2 and stats.depth_by_priority.get(3) == 3
        release.set()


async def test_rate_limited_task_is_deferred_not_failed(app: App, clock: FakeClock) -> None:
    @app.task(rate_limit="1/s")
    async def call_api(n: int) -> int:
        return n

    async with worker(app):
        first = await call_api.enqueue(1)
        assert await first.result(timeout=5) == 1
        second = await call_api.enqueue(2)
        await settled(app, second.id, State.RETRYING)
        rec = await second.record()
        assert rec is not None and rec.errors == () and rec.attempt == 0
        assert rec.eligible_at == moment(clock.now() + 1)
        clock.advance(1)
        assert await second.result(timeout=5) == 2
    rec = await second.record()
    assert rec is not None and rec.attempt == 1


async def test_complexity_auto_is_shared_through_the_backend(app: App, make_app: MakeApp) -> None:
    @app.task(complexity="auto", name="measured")
    async def measured() -> None:
        return None

    async with worker(app) as w1:
        assert w1.complexity_of(measured) is Complexity.AUTO
        for _ in range(3):
            await (await measured.enqueue()).result(timeout=5)
        await w1.maintain()
        assert w1.complexity_of(measured) is Complexity.SIMPLE
    async with make_app() as other:  # a second machine on the same backend

        @other.task(complexity="auto", name="measured")
        async def measured_there() -> None:
            return None

        stats = await other.backend.runtime_stats(["measured"])
        assert stats["measured"].count == 3
        w2 = worker(other)
        await w2.maintain()
        assert w2.complexity_of(measured_there) is Complexity.SIMPLE
        await other.backend.record_runtimes([("measured", 100.0)] * 10)
    await w1.maintain()  # learns the other machine's samples
    assert w1.complexity_of(measured) is Complexity.COMPLEX


# -- coordination between workers ---------------------------------------------------------


async def test_cron_tick_runs_exactly_once_with_two_workers(
    make_app: MakeApp, clock: FakeClock, recorder: Recorder
) -> None:
    async with make_app([recorder]) as app1, make_app([recorder]) as app2:
        for app in (app1, app2):

            @app.periodic("*/5 * * * *", name="sweep")
            async def sweep() -> float:
                return clock.now()

        async with worker(app1) as w1, worker(app2) as w2:
            # each worker sleeps on the clock in its extend, maintenance and cron loops
            await until(lambda: clock.sleepers == 6)
            for tick in (1, 2):
                # and its claim loop waits for work: no claim is out. (A worker's first
                # claim may still be opening its session when its loops sleep; on
                # PostgreSQL it then took the tick's task with a lease dated before the
                # move, lapsed at once, in 23 and 33 runs of 100 under load: only the
                # lack of a reaper before the task's settle kept it from running twice.)
                await until(lambda: waiting_for_work(w1, w2))
                due = app1.periodics[0].next_after(clock.now())
                clock.set(due)  # in the step that saw them waiting
                await recorder.wait_runs(tick)
                await until(lambda: clock.sleepers == 6)  # both cron loops went round
                tasks = await app2.list_tasks(task="sweep")
                assert len(tasks) == tick
                [this] = [t for t in tasks if t.enqueued_at == moment(due)]
                assert await app2.handle(this.id).result(timeout=5) == moment(due)
        assert len(recorder.runs) == 2


async def test_bad_ids_and_keys_are_refused_and_impossible_ids_name_no_task(app: App) -> None:
    """The same on every backend: a task_id is 1-200 printable characters without
    whitespace, a key non-empty text without NUL (PostgreSQL's text cannot hold one;
    Redis's id index keeps its pin under "\\0hashtable"). Nothing is enqueued by a
    refused call, and a lookup by an id no task can have answers as for an unknown one."""

    @app.task
    async def noop() -> None: ...

    for bad in ["", "a b", "line\n", "a\x00b", "\x00hashtable", "x" * 201, 7]:
        with pytest.raises(TaskValidationError, match=r"invalid task_id .*: use 1-200 printable"):
            await noop.with_options(task_id=bad).enqueue()
    for key in ("unique_key", "fairness_key"):
        with pytest.raises(
            TaskValidationError, match=rf"invalid {key} 'a\\x00b': give a non-empty"
        ):
            await noop.with_options(**{key: "a\x00b"}).enqueue()
    assert await app.list_tasks() == []

    longest = await noop.with_options(task_id="x" * 200).enqueue()
    assert await longest.status() is State.QUEUED
    for impossible in ["a\x00b", "\x00hashtable"]:
        assert await app.backend.get(impossible) is None
        assert await app.backend.wait_done(impossible, 0) is None
        assert await app.retry_dead([impossible]) == [False]
        assert await app.list_tasks(text=impossible) == []
        assert await app.list_tasks(queue=impossible) == []
    assert await app.cancel(["a\x00b", longest.id, "\x00hashtable"]) == [False, True, False]
    assert [(r.id, r.state) for r in await app.list_tasks()] == [(longest.id, State.CANCELLED)]


async def test_unique_key_dedupes_concurrent_enqueues(app: App, recorder: Recorder) -> None:
    @app.task
    async def once(n: int) -> int:
        return n

    handles: list[Any] = []

    async def enqueue(n: int) -> None:
        handles.append(await once.with_options(unique_key="the-key").enqueue(n))

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(enqueue, n)
    assert len(handles) == 50
    assert sum(h.created for h in handles) == 1
    assert len({h.id for h in handles}) == 1
    assert len(await app.list_tasks(task=once.name)) == 1
    async with worker(app):
        first = next(h for h in handles if h.created)
        assert await handles[0].result(timeout=5) == await first.result(timeout=5)
    assert len(recorder.runs) == 1


# -- claim order -------------------------------------------------------------------------------


async def test_weighted_fair_claim_order_through_the_worker(
    make_app: MakeApp, recorder: Recorder
) -> None:
    policy = SchedulingPolicy.weighted_fair({"P1": 4.0, "P3": 1.0})
    async with make_app([recorder], queues={"fair": policy}) as app:
        order: list[int] = []

        @app.task(queue="fair")
        async def job(priority: int) -> None:
            order.append(priority)

        await app.enqueue_many(job, [(3,)] * 3, priority=3)
        await app.enqueue_many(job, [(1,)] * 8, priority=1)
        async with worker(app, concurrency=1):
            await recorder.wait_runs(11)
    # virtual finish tags: P1 every 1/4, P3 every 1; ties go to the earlier arrival
    assert order == [1, 1, 1, 3, 1, 1, 1, 1, 3, 1, 3]


async def test_deadline_aware_claim_order_through_the_worker(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    order: list[str] = []

    @app.task
    async def job(label: str) -> None:
        order.append(label)

    await job.with_options(priority=Priority.LOW).enqueue("old-low")  # aged by t0 + 1800
    clock.advance(1790)
    now = clock.now()
    await job.with_options(priority=Priority.BATCH).enqueue("batch")  # now + 7200
    await job.with_options(priority=Priority.MEDIUM).enqueue("medium")  # now + 300
    await job.with_options(priority=Priority.HIGH).enqueue("high")  # now + 60
    await job.with_options(priority=Priority.MEDIUM, deadline=now + 5).enqueue("deadline")
    await job.with_options(priority=Priority.CRITICAL).enqueue("critical")  # now
    async with worker(app, concurrency=1):
        await recorder.wait_runs(6)
    assert order == ["critical", "deadline", "old-low", "high", "medium", "batch"]


# -- several machines on one backend ------------------------------------------------------


async def test_two_workers_share_a_queue_and_run_each_task_once(
    make_app: MakeApp, recorder: Recorder
) -> None:
    async with make_app([recorder]) as app1, make_app([recorder]) as app2:
        for app in (app1, app2):

            @app.task(name="square")
            async def square(n: int) -> int:
                await anyio.lowlevel.checkpoint()
                return n * n

        handles = await app1.enqueue_many(app1.tasks["square"], [(n,) for n in range(60)])
        async with worker(app1, concurrency=4) as w1, worker(app2, concurrency=4) as w2:
            assert [await h.result(timeout=10) for h in handles] == [n * n for n in range(60)]
        assert sorted(recorder.started) == sorted(h.id for h in handles)  # each exactly once
        assert w1.processed + w2.processed == 60
        records = await app2.list_tasks(task="square", limit=100)
        assert len(records) == 60 and {r.attempt for r in records} == {1}


async def test_rate_limit_is_shared_by_workers(
    make_app: MakeApp, clock: FakeClock, recorder: Recorder
) -> None:
    async with make_app([recorder]) as app1, make_app([recorder]) as app2:
        for app in (app1, app2):

            @app.task(name="call_api", rate_limit="1/s")
            async def call_api(n: int) -> int:
                return n

        task = app1.tasks["call_api"]
        async with worker(app1), worker(app2):
            first = await task.enqueue(1)
            assert await first.result(timeout=5) == 1
            second = await task.enqueue(2)
            await settled(app1, second.id, State.RETRYING)  # deferred by whichever worker
            clock.advance(1)
            assert await second.result(timeout=5) == 2
        assert len(recorder.started) == 2


async def test_finished_records_expire_after_their_ttl(app: App, clock: FakeClock) -> None:
    @app.task(result_ttl=3600)
    async def short_lived() -> int:
        return 1

    @app.task
    async def kept() -> int:
        return 2

    async with worker(app) as w:
        h1, h2 = await short_lived.enqueue(), await kept.enqueue()
        assert await h1.result(timeout=5) == 1 and await h2.result(timeout=5) == 2
        clock.advance(3601)
        await w.maintain()
        assert await h1.record() is None
        assert await h2.status() is State.SUCCEEDED  # the app's 90-day default
        clock.advance(90 * 86400)
        await w.maintain()
        assert await h2.record() is None


# -- more backend-visible paths -------------------------------------------------------------


async def outlive_the_lease(app: App, clock: FakeClock, h: Any) -> None:
    """Move a 30 s lease's clock well past its first expiry, in steps shorter than its
    renewal period: after each, no reaper finds the task's lease expired."""
    await until(lambda: clock.sleepers == 2)  # renewal and maintenance loops asleep
    for step in (10, 25, 25):
        clock.advance(step)
        await until(lambda: clock.sleepers == 2)  # both loops went round
        assert await app.backend.reap() == []
        assert await h.status() is State.RUNNING


def held_task(app: App) -> tuple[Any, anyio.Event]:
    """A task that runs until the returned event is set, then returns "done"."""
    release = anyio.Event()

    @app.task
    async def long() -> str:
        await release.wait()
        return "done"

    return long, release


async def test_running_lease_is_renewed_and_not_reaped(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    long, release = held_task(app)
    async with worker(app, lease_seconds=30):
        h = await long.enqueue()
        await recorder.wait_started(1)
        await outlive_the_lease(app, clock, h)
        release.set()
        assert await h.result(timeout=5) == "done"
    rec = await h.record()
    assert rec is not None and rec.attempt == 1 and rec.errors == ()
    assert recorder.started == [h.id]


async def test_a_finished_task_waiting_for_its_settle_keeps_its_lease(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    """A settle slower than the lease: the finished task's lease is renewed with the
    running ones', so no reaper requeues it and it runs once."""
    backend: Any = app.backend
    settle, gate, held = backend.settle, anyio.Event(), anyio.Event()

    async def slow_settle(outcomes: Any) -> list[bool]:
        held.set()
        await gate.wait()
        return list(await settle(outcomes))

    backend.settle = slow_settle

    @app.task
    async def quick() -> str:
        return "done"

    async with worker(app, lease_seconds=30):
        h = await quick.enqueue()
        with anyio.fail_after(5):
            await held.wait()  # finished; its outcome waits in the settle
        await outlive_the_lease(app, clock, h)
        gate.set()
        assert await h.result(timeout=5) == "done"
    rec = await h.record()
    assert rec is not None and rec.attempt == 1
    assert recorder.started == [h.id]


async def test_after_an_outage_the_lease_is_renewed_before_it_lapses(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    """Renewals fail from 10 s to 20 s into a 30 s lease (the backend is down) and it is
    back at 21 s: the worker tries again soon after a failure, not a third of a lease
    later (30 s, when the lease lapses), so the lease is renewed in time and no reaper
    requeues the task."""
    backend: Any = app.backend
    extend, down, calls = backend.extend, [True], []

    async def flaky_extend(leases: Any, seconds: float) -> Any:
        if down[0]:
            calls.append((clock.now(), False))
            raise BackendUnavailable("the backend is down (test)")
        calls.append((clock.now(), True))
        return await extend(leases, seconds)

    backend.extend = flaky_extend
    long, release = held_task(app)
    async with worker(app, lease_seconds=30):
        h = await long.enqueue()
        await recorder.wait_started(1)
        claimed = clock.now()
        await until(lambda: clock.sleepers == 2)  # renewal and maintenance loops asleep
        for second in range(1, 36):
            if second == 21:
                down[0] = False  # the backend is back
            clock.advance(1)
            await until(lambda: clock.sleepers == 2)
            if second == 29:  # the last moment before the lease lapses
                assert any(ok for at, ok in calls if at < claimed + 30), calls
        assert [ok for _, ok in calls][:2] == [False, False]  # the outage was seen
        assert await app.backend.reap() == []
        release.set()
        assert await h.result(timeout=5) == "done"
    rec = await h.record()
    assert rec is not None and rec.attempt == 1
    assert recorder.started == [h.id]


async def test_cancel_a_task_waiting_for_its_retry(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    @app.task
    async def flaky() -> None:
        raise Retry(delay=100)

    @app.task
    async def marker() -> str:
        return "ran"

    async with worker(app):
        h = await flaky.enqueue()
        await retrying_after(app, h.id, 1)
        assert await h.cancel()
        assert await h.status() is State.CANCELLED
        clock.advance(100)
        assert await (await marker.enqueue()).result(timeout=5) == "ran"
        with pytest.raises(TaskCancelled):
            await h.result(timeout=5)
    assert recorder.started.count(h.id) == 1


async def test_unique_key_is_free_again_once_the_task_finished(app: App) -> None:
    @app.task(unique=True)
    async def sync_account(account: int) -> int:
        return account

    first = await sync_account.enqueue(1)
    duplicate = await sync_account.enqueue(1)
    other = await sync_account.enqueue(2)
    assert first.created and not duplicate.created and duplicate.id == first.id
    assert other.created and other.id != first.id
    async with worker(app):
        assert await first.result(timeout=5) == 1
        again = await sync_account.enqueue(1)
        assert again.created and again.id != first.id
        assert await again.result(timeout=5) == 1


async def test_weighted_fair_by_key_through_the_worker(
    make_app: MakeApp, recorder: Recorder
) -> None:
    policy = SchedulingPolicy.weighted_fair({"big": 2.0}, by="key", default_weight=1.0)
    async with make_app([recorder], queues={"tenants": policy}) as app:
        order: list[str] = []

        @app.task(queue="tenants")
        async def job(tenant: str) -> None:
            order.append(tenant)

        await app.enqueue_many(job, [("big",)] * 6, fairness_key="big")
        await app.enqueue_many(job, [("small",)] * 3, fairness_key="small")
        async with worker(app, concurrency=1):
            await recorder.wait_runs(9)
    # tags: big every 1/2, small every 1; ties go to the earlier arrival (big)
    assert order == ["big", "big", "small", "big", "big", "small", "big", "big", "small"]
