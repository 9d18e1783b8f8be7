"""A benchmark worker process: ``python -m benchmarks._worker burn|latency --url URL --n N``.

Prints one JSON object on the last line of stdout. ``burn``: the tasks are already
enqueued; run one worker until all ``n`` are settled and report the elapsed time (and,
on Redis, the commands the server processed and the client's round trips meanwhile).
``latency``: start an idle worker, print ``ready``, run ``n`` ``bench.stamp(i)`` calls
as they arrive and report each body's wall-clock start time. ``soak``: like ``burn``, and
sample the process's RSS before the worker starts and after every tenth of ``n``.
``share``: one of several workers on the same tasks, started and stopped by lines on
stdin (the scaling scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

# absolute: a process-pool child runs this file as ``__mp_main__`` (anyio)
from benchmarks._common import worker_options, worker_queues
from benchmarks.apps import PROBE, QUEUE, make_app


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class RoundTrips:
    """Counts writes to Redis sockets: one per command, one per pipeline.

    Counted at asyncio's ``StreamWriter`` (redis-py's connections write there, and the
    backend's own send path too): the process must have no other stream writers.
    """

    def __init__(self) -> None:
        from asyncio import StreamWriter

        self.count = 0
        write, writelines = StreamWriter.write, StreamWriter.writelines

        def counting_write(writer: StreamWriter, data: Any) -> None:
            self.count += 1
            write(writer, data)

        def counting_writelines(writer: StreamWriter, data: Any) -> None:
            self.count += 1
            writelines(writer, data)

        StreamWriter.write = counting_write  # type: ignore[method-assign,assignment]
        StreamWriter.writelines = counting_writelines  # type: ignore[method-assign,assignment]


async def _redis_info(url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url.partition("?")[0])
    try:
        stats = await client.info("stats")
        commands = await client.info("commandstats")
    finally:
        await client.aclose()
    return {
        "total": stats["total_commands_processed"],
        "calls": {k.removeprefix("cmdstat_"): v["calls"] for k, v in commands.items()},
    }


async def burn(
    url: str, n: int, concurrency: int, timeout: float, in_process: bool = True
) -> dict[str, Any]:
    from benchmarks._run import drain

    app = make_app(url)
    trips = RoundTrips() if url.startswith("redis") else None
    async with app:
        before = await _redis_info(url) if trips else None
        trips_before = trips.count if trips else 0
        result = await drain(app, n, concurrency, timeout, in_process)
        if trips and before:
            after = await _redis_info(url)
            result["client_round_trips"] = trips.count - trips_before
            result["server_commands"] = after["total"] - before["total"] - 2  # our two INFOs
            result["server_calls"] = {
                k: v - before["calls"].get(k, 0)
                for k, v in after["calls"].items()
                if v - before["calls"].get(k, 0) > 0
            }
    return result


async def soak(url: str, n: int, concurrency: int, timeout: float) -> dict[str, Any]:
    import psutil

    from benchmarks._common import count_settles
    from benchmarks._run import drain

    proc = psutil.Process()
    app = make_app(url)
    samples: list[tuple[int, float]] = []
    step = max(1, n // 10)
    settled = 0

    def sample(k: int) -> None:
        nonlocal settled
        before, settled = settled, settled + k
        if settled // step > before // step:
            samples.append((settled, proc.memory_info().rss / 2**20))

    async with app:
        samples.append((0, proc.memory_info().rss / 2**20))
        count_settles(app, sample)  # wrapped again by drain(); both see every settle
        result = await drain(app, n, concurrency, timeout)
    result["rss_mb"] = samples
    return result


async def latency(url: str, n: int, concurrency: int, timeout: float) -> dict[str, Any]:
    app = make_app(url)
    done = asyncio.Event()
    PROBE.reset(n, done.set)
    async with app:
        worker = app.worker(concurrency=concurrency, queues=worker_queues(), **worker_options())
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)  # let it settle into its idle wait
        _emit("ready")
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
        worker.stop()
        await runner
    return {"ran": PROBE.count, "starts": PROBE.starts}


async def share(url: str, n: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """One of several workers draining the same tasks: print ``ready``, start on a
    ``go`` line on stdin, stop on the next line; report the wall-clock go time, the
    last accepted settle and how many bodies ran here."""
    from benchmarks._common import count_settles

    loop = asyncio.get_running_loop()
    app = make_app(url)
    last = 0.0

    def on_settled(k: int) -> None:
        nonlocal last
        if k:
            last = time.time()

    async with app:
        await app.stats([QUEUE])  # connect (and load scripts) before the clock starts
        count_settles(app, on_settled)
        PROBE.reset(n)
        _emit("ready")
        await loop.run_in_executor(None, sys.stdin.readline)
        worker = app.worker(concurrency=concurrency, queues=worker_queues(), **worker_options())
        go = time.time()
        runner = asyncio.create_task(worker.run())
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout)
        worker.stop()
        await runner
    return {"ran": PROBE.count, "go": go, "last_settle": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._worker")
    parser.add_argument("mode", choices=["burn", "latency", "soak", "share"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--pool", action="store_true", help="burn: the bodies run in the process pool"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.mode == "burn":
        coro = burn(args.url, args.n, args.concurrency, args.timeout, not args.pool)
    else:
        fn = {"latency": latency, "soak": soak, "share": share}[args.mode]
        coro = fn(args.url, args.n, args.concurrency, args.timeout)
    result = asyncio.run(coro)
    result["process_seconds"] = time.perf_counter() - t0
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
