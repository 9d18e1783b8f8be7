"""Drive one worker over pre-enqueued tasks and time it (used in-process and by _worker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from taskcore import App

from ._common import BenchError, count_settles, verify_all_succeeded, worker_options, worker_queues
from .apps import PROBE


async def enqueue_calls(
    app: App, task: str, args: tuple[Any, ...], n: int, batch: int = 1000
) -> None:
    """Enqueue ``n`` calls ``task(*args)`` with ``enqueue_many`` in batches."""
    t = app.tasks[task]
    for start in range(0, n, batch):
        await app.enqueue_many(t, [args] * min(batch, n - start))


async def enqueue_noops(app: App, n: int, batch: int = 1000) -> None:
    """Enqueue ``n`` calls of ``bench.noop`` with ``enqueue_many`` in batches."""
    await enqueue_calls(app, "bench.noop", (), n, batch)


async def drain(
    app: App, n: int, concurrency: int, timeout: float, in_process: bool = True
) -> dict[str, Any]:
    """Start one worker on an opened app holding ``n`` ready tasks; return when all
    ``n`` outcomes are stored. Timed from worker start to the last accepted settle
    (``elapsed``), and from the first body's end to the last's (``bodies_s``).
    ``in_process=False``: the bodies run in the process pool, where this process's
    probe cannot count them; the accepted outcomes and ``stats()`` are the proof."""
    done = asyncio.Event()
    settled = 0

    def on_settled(k: int) -> None:
        nonlocal settled
        settled += k
        if settled >= n:
            done.set()

    count_settles(app, on_settled)
    PROBE.reset(n)
    worker = app.worker(concurrency=concurrency, queues=worker_queues(), **worker_options())
    t0 = time.perf_counter()
    runner = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        raise BenchError(
            f"worker did not finish: {PROBE.count} of {n} tasks ran, {settled} settled "
            f"after {timeout}s"
        ) from None
    finally:
        elapsed = time.perf_counter() - t0
        worker.stop()
        await runner
    if (in_process and PROBE.count != n) or settled != n:
        raise BenchError(f"{PROBE.count} task bodies ran and {settled} settled, expected {n}")
    await verify_all_succeeded(app, n)
    out = {"elapsed": elapsed, "ran": PROBE.count, "settled": settled}
    if in_process and PROBE.count > 1:
        # the peers' clock (benchmarks/peers/_kit.py, burn): the first body's end to the
        # last's, which leaves out what came before the first body (the first claim)
        out["bodies_s"] = PROBE.last - PROBE.first
    return out
