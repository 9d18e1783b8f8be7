"""The worker against the in-memory backend: runs, retries, leases, pools, bad input."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import msgspec
import pytest

from taskcore import (
    App,
    FakeClock,
    Priority,
    Retry,
    RetryPolicy,
    State,
    TaskCancelled,
    TaskFailed,
)
from taskcore.backend import ExtendStatus, Message, Outcome, OutcomeKind
from taskcore.complexity import Complexity
from taskcore.envelope import Envelope, new_task_id

from .conftest import Recorder, settled

pytestmark = pytest.mark.anyio


async def test_async_and_sync_tasks(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def shout(word: str) -> str:
        return word.upper() + threading.current_thread().name[:0]

    async with app.worker(concurrency=4):
        assert await (await add.enqueue(2, 3)).result(timeout=5) == 5
        assert await (await shout.enqueue("hi")).result(timeout=5) == "HI"


class Out(msgspec.Struct):
    total: int


async def test_result_decodes_to_return_type(app: App) -> None:
    @app.task
    async def make(n: int) -> Out:
        return Out(n)

    async with app.worker():
        assert await (await make.enqueue(4)).result(timeout=5) == Out(4)


async def test_fixed_retries_then_dead_letter_with_history(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    @app.task  # simple: 3 retries, 1 s apart
    async def always_fails(n: int) -> None:
        raise ConnectionError(f"down {n}")

    async with app.worker():
        h = await always_fails.enqueue(7)
        for attempt in (1, 2, 3):
            await recorder.wait_runs(attempt)
            await settled(app, h.id, State.RETRYING)
            rec = await h.record()
            assert rec is not None
            assert rec.eligible_at == pytest.approx(rec.errors[-1].at + 1.0, abs=1e-3)
            clock.advance(1.0)
        await recorder.wait_runs(4)
        with pytest.raises(TaskFailed, match="ended dead after 4 attempt") as info:
            await h.result(timeout=5)
    rec = await h.record()
    assert rec is not None and rec.state is State.DEAD
    assert [e.attempt for e in rec.errors] == [1, 2, 3, 4]
    assert all(e.type == "ConnectionError" and "down 7" in e.message for e in rec.errors)
    assert "Traceback" in rec.errors[0].traceback and "always_fails" in rec.errors[0].traceback
    assert info.value.task_id == h.id
    dead = await app.dead_letters()
    assert [r.id for r in dead] == [h.id]


async def test_linear_moderate_delays(app: App, clock: FakeClock, recorder: Recorder) -> None:
    @app.task(complexity="moderate")
    async def report() -> None:
        raise TimeoutError("db")

    async with app.worker():
        h = await report.enqueue()
        delays = []
        for attempt in (1, 2, 3):
            await recorder.wait_runs(attempt)
            await settled(app, h.id, State.RETRYING)
            rec = await h.record()
            assert rec is not None
            delays.append(rec.eligible_at - rec.errors[-1].at)
            clock.advance(delays[-1])
        assert delays == pytest.approx([1.0, 2.0, 3.0])


async def test_retry_request_and_filters(app: App, clock: FakeClock, recorder: Recorder) -> None:
    calls = {"n": 0}

    @app.task
    async def polite() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Retry(delay=42, reason="not ready")
        return "done"

    @app.task(retry_on=ConnectionError, give_up_on=PermissionError)
    async def picky(kind: str) -> None:
        raise {"perm": PermissionError, "value": ValueError}[kind]("no")

    async with app.worker():
        h = await polite.enqueue()
        await recorder.wait_runs(1)
        await settled(app, h.id, State.RETRYING)
        rec = await h.record()
        assert rec is not None and rec.eligible_at == pytest.approx(clock.now() + 42, abs=1e-3)
        assert rec.errors[-1].type == "Retry" and rec.errors[-1].message == "not ready"
        clock.advance(42)
        assert await h.result(timeout=5) == "done"
        for kind in ("perm", "value"):  # neither is retried
            ph = await picky.enqueue(kind)
            with pytest.raises(TaskFailed, match="after 1 attempt"):
                await ph.result(timeout=5)


async def test_failed_without_dead_letter(app: App) -> None:
    @app.task(retry=RetryPolicy.fixed(0), dead_letter=False)
    async def once() -> None:
        raise RuntimeError("nope")

    async with app.worker():
        h = await once.enqueue()
        with pytest.raises(TaskFailed, match="ended failed"):
            await h.result(timeout=5)
    assert await app.dead_letters() == []


async def test_dead_letters_retry_and_purge(app: App) -> None:
    attempts = {"n": 0}

    @app.task(retry=RetryPolicy.fixed(0))
    async def fragile() -> int:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise ValueError("first time")
        return attempts["n"]

    async with app.worker():
        h = await fragile.enqueue()
        with pytest.raises(TaskFailed):
            await h.result(timeout=5)
        assert await app.retry_dead([h.id]) == [True]
        assert await h.result(timeout=5) == 2
        rec = await h.record()
        assert rec is not None and len(rec.errors) == 1  # history kept across the DLQ retry
        h2 = await fragile.enqueue()
        attempts["n"] = 0
        with pytest.raises(TaskFailed):
            await h2.result(timeout=5)
    assert await app.purge("default") == 1
    assert await h2.record() is None


async def test_async_timeout(app: App) -> None:
    @app.task(timeout=0.05, retry=RetryPolicy.fixed(0))
    async def slow() -> None:
        await anyio.sleep(30)

    async with app.worker():
        h = await slow.enqueue()
        with pytest.raises(TaskFailed, match=r"TaskTimeout: .* past its timeout of 0\.05s"):
            await h.result(timeout=10)


async def test_cancel_queued_and_running(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def blocker() -> None:
        await release.wait()

    queued = await blocker.with_options(delay=100).enqueue()
    assert await queued.cancel()
    assert await queued.status() is State.CANCELLED
    async with app.worker() as worker:
        running = await blocker.enqueue()
        await recorder.wait_started(1)
        assert await running.cancel()
        await worker.extend_leases()  # the renewal is where the worker learns of it
        with pytest.raises(TaskCancelled):
            await running.result(timeout=5)
    assert not await running.cancel()  # already terminal


async def test_delayed_task_runs_when_due(app: App, clock: FakeClock) -> None:
    @app.task
    async def later() -> float:
        return clock.now()

    async with app.worker():
        h = await later.with_options(delay=30).enqueue()
        assert await h.status() is State.SCHEDULED
        clock.advance(30)
        assert await h.result(timeout=5) == pytest.approx(clock.now(), abs=1e-3)


async def test_graceful_shutdown_hands_back_unfinished(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def quick() -> int:
        return 1

    @app.task
    async def stuck() -> None:
        await release.wait()

    worker = app.worker(grace_period=0)
    async with worker:
        done = await quick.enqueue()
        assert await done.result(timeout=5) == 1
        h = await stuck.enqueue()
        await recorder.wait_started(2)
    rec = await h.record()
    assert rec is not None and rec.state is State.QUEUED and rec.attempt == 0
    assert await done.status() is State.SUCCEEDED  # finished work is not re-run
    assert worker.running == 0


async def test_grace_period_lets_tasks_finish(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def finishing() -> str:
        await release.wait()
        return "finished"

    async with anyio.create_task_group() as tg:
        worker = app.worker(grace_period=30)
        await tg.start(worker.run)
        h = await finishing.enqueue()
        await recorder.wait_started(1)
        worker.stop()
        release.set()
    assert await h.result(timeout=5) == "finished"


async def test_vanished_worker_lease_is_reaped_and_rerun(app: App, clock: FakeClock) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    h = await job.enqueue(5)
    [lost] = await app.backend.claim(["default"], 1, 30, "crashed-worker")
    async with app.worker(lease_seconds=30) as worker:
        clock.advance(31)
        await worker.maintain()  # reaps the expired lease
        assert await h.result(timeout=5) == 5
    stale = Outcome(h.id, lost.token, OutcomeKind.SUCCEEDED, clock.now(), result=b"99")
    assert await app.backend.settle([stale]) == [False]
    assert await app.backend.extend([(h.id, lost.token)], 30) == [ExtendStatus.LOST]
    rec = await h.record()
    assert rec is not None and rec.attempt == 2 and rec.errors[0].type == "LeaseExpired"


async def test_lost_lease_stops_local_run_without_settling(
    app: App, clock: FakeClock, recorder: Recorder
) -> None:
    release = anyio.Event()

    @app.task
    async def slow() -> None:
        await release.wait()

    async with app.worker(lease_seconds=30) as worker:
        h = await slow.enqueue()
        await recorder.wait_started(1)
        clock.advance(31)
        await app.pause("default")  # keep this worker from claiming the task again
        assert await app.backend.reap() == [h.id]  # another worker's reaper got there first
        await worker.extend_leases()
        with anyio.fail_after(5):
            while worker.running:
                await anyio.lowlevel.checkpoint()
        await worker.maintain()
        rec = await h.record()
        assert rec is not None and rec.state is State.QUEUED and rec.attempt == 1
        assert recorder.runs == []  # the stopped run reported no outcome
        release.set()


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
    async with app.worker():
        assert await (await fine.enqueue()).result(timeout=5) == "ok"
        for m in messages:
            await settled(app, m.id, State.DEAD)
    reasons = []
    for m in messages:
        rec = await app.backend.get(m.id)
        assert rec is not None and rec.state is State.DEAD
        reasons.append((rec.errors[-1].type, rec.errors[-1].message))
    assert reasons[0][0] == "MalformedEnvelope" and "malformed envelope" in reasons[0][1]
    assert reasons[1][0] == "UnknownTask" and "no.such.task" in reasons[1][1]
    assert reasons[2][0] == "InvalidArguments" and "unexpected" in reasons[2][1]
    assert reasons[3][0] == "MalformedEnvelope" and "over the limit" in reasons[3][1]


async def test_unserialisable_result_fails_clearly(app: App) -> None:
    @app.task
    async def leaky() -> Any:
        return threading.Lock()

    async with app.worker():
        h = await leaky.enqueue()
        with pytest.raises(TaskFailed, match=r"ResultNotSerializable: .*cannot encode lock"):
            await h.result(timeout=5)


async def test_claims_no_more_than_free_slots(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def hold() -> None:
        await release.wait()

    await app.enqueue_many(hold, [() for _ in range(10)])
    async with app.worker(concurrency=3):
        await recorder.wait_started(3)
        [stats] = await app.stats(["default"])
        assert stats.states[State.RUNNING] == 3 and stats.states[State.QUEUED] == 7
        release.set()


async def test_reserved_slots_for_critical(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task(priority=Priority.LOW)
    async def bulk() -> None:
        await release.wait()

    @app.task(priority=Priority.CRITICAL)
    async def page() -> str:
        return "paged"

    await app.enqueue_many(bulk, [() for _ in range(5)])
    async with app.worker(concurrency=3, reserved_critical=1):
        await recorder.wait_started(2)
        assert await (await page.enqueue()).result(timeout=5) == "paged"
        [stats] = await app.stats(["default"])
        assert stats.states[State.RUNNING] == 2 and stats.depth_by_priority[3] == 3
        release.set()


async def test_thread_pool_is_a_bulkhead(app: App) -> None:
    cond = threading.Condition()
    active = {"now": 0, "max": 0}
    gate = threading.Event()

    @app.task
    def blocking(n: int) -> int:
        with cond:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            cond.notify_all()
        gate.wait(5)
        with cond:
            active["now"] -= 1
        return n

    def two_running() -> bool:
        with cond:
            return cond.wait_for(lambda: active["now"] == 2, timeout=5)

    handles = await app.enqueue_many(blocking, [(i,) for i in range(6)])
    async with app.worker(concurrency=10, threads=2) as worker:
        assert await anyio.to_thread.run_sync(two_running)
        assert worker.running == 6  # all claimed; four wait for the thread bulkhead
        gate.set()
        assert [await h.result(timeout=10) for h in handles] == list(range(6))
    assert active["max"] == 2


async def test_complexity_auto_is_shared_through_the_backend(app: App) -> None:
    @app.task(complexity="auto")
    async def measured() -> None:
        return None

    async with app.worker() as w1:
        assert w1.complexity_of(measured) is Complexity.AUTO
        for _ in range(3):
            await (await measured.enqueue()).result(timeout=5)
        await w1.maintain()
        assert w1.complexity_of(measured) is Complexity.SIMPLE
    stats = await app.backend.runtime_stats([measured.name])
    assert stats[measured.name].count == 3
    await app.backend.record_runtimes([(measured.name, 100.0)] * 10)  # another worker's samples
    w2 = app.worker()
    await w2.maintain()
    assert w2.complexity_of(measured) is Complexity.COMPLEX


async def test_rate_limited_task_is_deferred_not_failed(app: App, clock: FakeClock) -> None:
    @app.task(rate_limit="1/s")
    async def call_api(n: int) -> int:
        return n

    async with app.worker():
        first = await call_api.enqueue(1)
        assert await first.result(timeout=5) == 1
        second = await call_api.enqueue(2)
        await settled(app, second.id, State.RETRYING)
        rec = await second.record()
        assert rec is not None and rec.errors == () and rec.attempt == 0
        clock.advance(1)
        assert await second.result(timeout=5) == 2


async def test_autoscaling_grows_with_backlog(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def hold() -> None:
        await release.wait()

    await app.enqueue_many(hold, [() for _ in range(50)])
    async with app.worker(concurrency=4, min_concurrency=2, max_concurrency=12) as worker:
        await recorder.wait_started(4)
        before = worker.target
        worker.autoscaler = worker.autoscaler and type(worker.autoscaler)(
            2, 12, step=4, cpu_high=101
        )
        await worker.maintain()
        assert worker.target == before + 4
        await recorder.wait_started(8)
        release.set()
