"""Worker behaviour specific to the core (pools, filters, autoscaling, result types).

The scenarios every backend must share (results, retries, leases, cancellation, bad
input, slots, cron, uniqueness) live in tests/e2e and run on memory, Redis and Postgres.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

import anyio
import msgspec
import pytest

from taskcore import (
    App,
    RetryPolicy,
    TaskFailed,
)

from .conftest import Recorder

pytestmark = pytest.mark.anyio


class Out(msgspec.Struct):
    total: int


async def test_result_decodes_to_return_type(app: App) -> None:
    @app.task
    async def make(n: int) -> Out:
        return Out(n)

    async with app.worker():
        assert await (await make.enqueue(4)).result(timeout=5) == Out(4)


async def test_retry_filters(app: App) -> None:
    @app.task(retry_on=ConnectionError, give_up_on=PermissionError)
    async def picky(kind: str) -> None:
        raise {"perm": PermissionError, "value": ValueError}[kind]("no")

    async with app.worker():
        for kind in ("perm", "value"):  # give_up_on, and not in retry_on: neither is retried
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


async def test_async_timeout(app: App) -> None:
    @app.task(timeout=0.05, retry=RetryPolicy.fixed(0))
    async def slow() -> None:
        await anyio.sleep(30)

    async with app.worker():
        h = await slow.enqueue()
        with pytest.raises(TaskFailed, match=r"TaskTimeout: .* past its timeout of 0\.05s"):
            await h.result(timeout=10)


async def test_a_shorter_timeout_is_enforced_while_a_longer_one_runs(app: App) -> None:
    # the watchdog sleeps until the earliest deadline it knows: a run starting with an
    # earlier one must wake it, or the short task would run until the long one's deadline
    started, release = anyio.Event(), anyio.Event()

    @app.task(timeout=60, retry=RetryPolicy.fixed(0))
    async def long() -> None:
        started.set()
        await release.wait()

    @app.task(timeout=0.05, retry=RetryPolicy.fixed(0))
    async def short() -> None:
        await anyio.sleep(30)

    async with app.worker():
        first = await long.enqueue()
        await started.wait()
        h = await short.enqueue()
        with pytest.raises(TaskFailed, match=r"TaskTimeout: .* past its timeout of 0\.05s"):
            await h.result(timeout=10)
        release.set()
        assert await first.result(timeout=5) is None


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


async def test_the_first_worker_freezes_the_start_up_heap(app: App) -> None:
    @app.task
    async def noop() -> None:
        pass

    async with app.worker():
        await (await noop.enqueue()).result(timeout=5)
        assert gc.get_freeze_count() > 0


async def test_autoscaling_shrink_with_prefetch_runs_no_more_than_the_new_target(
    app: App, recorder: Recorder
) -> None:
    """A shrunk worker's surplus slots end as their tasks finish; they do not start the
    prefetched tasks it still holds."""
    release = anyio.Event()
    active = [0, 0]  # running now, most at once after the shrink
    shrunk = False

    @app.task
    async def hold() -> None:
        active[0] += 1
        if shrunk:
            active[1] = max(active)
        await release.wait()
        active[0] -= 1

    handles = await app.enqueue_many(hold, [() for _ in range(12)])
    async with app.worker(
        concurrency=4, min_concurrency=2, max_concurrency=4, prefetch=2
    ) as worker:
        await recorder.wait_started(4)
        assert worker.held == 6  # one claim: four slots and two prefetched
        worker.autoscaler = worker.autoscaler and type(worker.autoscaler)(
            2,
            4,
            step=2,
            cpu_high=0,  # any CPU load counts as saturated: shrink
        )
        await worker.maintain()
        assert worker.target == 2
        shrunk = True
        release.set()
        for h in handles:
            assert await h.result(timeout=10) is None
    assert len(recorder.started) == 12
    assert active[1] <= 2


async def test_tasks_that_log_nothing_cost_no_journal_call(app: App, clock: Any) -> None:
    calls: list[int] = []
    append = app.backend.journal_append

    async def counting(entries: Any) -> None:
        calls.append(len(entries))
        await append(entries)

    app.backend.journal_append = counting  # type: ignore[method-assign]
    loud = logging.getLogger("tests.worker.loud")
    loud.setLevel(logging.INFO)

    @app.task
    async def quiet(n: int) -> int:
        return n

    @app.task
    async def talks(n: int) -> int:
        loud.info("n=%d", n)
        return n

    try:
        async with app.worker():
            handles = await app.enqueue_many(quiet, [(i,) for i in range(50)])
            for h in handles:
                await h.result(timeout=5)
            assert calls == []
            handles = await app.enqueue_many(talks, [(i,) for i in range(20)])
            for h in handles:
                await h.result(timeout=5)
            # batched: fewer calls than runs, every run's line written
            assert 1 <= len(calls) < 20 and sum(calls) == 20
    finally:
        loud.setLevel(logging.NOTSET)


async def test_capture_logs_false_keeps_nothing_and_maintenance_trims(app: App, clock: Any) -> None:
    loud = logging.getLogger("tests.worker.loud")
    loud.setLevel(logging.INFO)

    @app.task
    async def talks() -> None:
        loud.info("hello")

    try:
        async with app.worker(capture_logs=False):
            h = await talks.enqueue()
            await h.result(timeout=5)
        assert await h.logs() == []
        worker = app.worker()
        async with worker:
            h = await talks.enqueue()
            await h.result(timeout=5)
            assert len(await h.logs()) == 1
            clock.advance(app.log_ttl + 1)
            await worker.maintain()
            assert await h.logs() == []
    finally:
        loud.setLevel(logging.NOTSET)
