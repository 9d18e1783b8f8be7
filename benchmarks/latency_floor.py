"""Enqueue→start on Redis, layer by layer:
``python -m benchmarks.latency_floor [--rate 100] [--seconds 20] [--repeat 3]``.

The latency scenario's workload (single enqueues at a fixed rate into an idle worker
process, the wall clock before each enqueue call against the wall clock at which the
worker has the task), at four depths of the same path, interleaved per repeat:

- ``bare-sync``: sync redis-py ``LPUSH`` into a worker blocked in ``BLPOP`` (the shape
  of Huey's path: no lease, a task popped by a worker that dies is gone);
- ``bare-async``: the same with redis-py's asyncio client in both processes;
- ``backend``: taskcore's Redis backend without the core: the producer calls
  ``RedisBackend.enqueue`` with a ready-built message (enqueue.lua), the worker loops
  ``wait()`` / ``claim()`` (the claim rides on the ``BLMOVE`` that wakes it, as in the
  worker) and settles what it took; the time is taken when the lease is in hand;
- ``taskcore``: the latency scenario itself (``App`` enqueue, the ``Worker``, the time
  taken in the task body).

So ``backend`` minus ``bare-async`` is what the scripts (lease, policy order, replay
key) and the backend's client code add, and ``taskcore`` minus ``backend`` what the
core adds on both sides (building the message, telemetry, the claim loop, the slot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

from ._common import REDIS_URL, drop_scratch, percentile, scratch_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("bare-sync", "bare-async", "backend", "taskcore")
QUEUE = "floor"


# -- worker side (a subprocess: ``--serve MODE``) ------------------------------------------
def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _serve_bare_sync(key: str, n: int) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL, socket_timeout=30, decode_responses=True)
    got: dict[str, float] = {}
    _emit("ready")
    while len(got) < n:
        popped = r.blpop([key], timeout=10)
        if popped is None:
            raise SystemExit(f"only {len(got)} of {n} arrived")
        got[str(popped[1])] = time.time()
    _emit(got)


async def _serve_bare_async(key: str, n: int) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(REDIS_URL, socket_timeout=30, decode_responses=True)
    got: dict[str, float] = {}
    _emit("ready")
    while len(got) < n:
        popped = await r.blpop([key], timeout=10)
        if popped is None:
            raise SystemExit(f"only {len(got)} of {n} arrived")
        got[str(popped[1])] = time.time()
    await r.aclose()
    _emit(got)


async def _serve_backend(url: str, n: int) -> None:
    from taskcore.backend import Outcome, OutcomeKind
    from taskcore.clock import SystemClock
    from taskcore_redis import RedisBackend

    clock = SystemClock()
    prefix = url.partition("prefix=")[2]
    got: dict[str, float] = {}
    async with RedisBackend.from_url(REDIS_URL, clock=clock, prefix=prefix) as backend:
        _emit("ready")
        while len(got) < n:
            await backend.wait([QUEUE], 10)
            leases = await backend.claim([QUEUE], 10, 30.0, "floor")
            now = time.time()
            for lease in leases:
                got[lease.message.id] = now
            if leases:
                done = clock.now()
                await backend.settle(
                    [
                        Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, done, b"null")
                        for x in leases
                    ]
                )
    _emit(got)


# -- producer side ---------------------------------------------------------------------------
async def _spawn(mode: str, target: str, n: int) -> Any:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.latency_floor",
        "--serve",
        mode,
        "--target",
        target,
        "--n",
        str(n),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None  # stdout=PIPE
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if json.loads(line) != "ready":
        raise RuntimeError(f"worker said {line!r}")
    return proc


async def _collect(proc: Any, n: int) -> dict[str, float]:
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    got: dict[str, float] = json.loads(out.splitlines()[-1])
    if await proc.wait() != 0 or len(got) != n:
        raise RuntimeError(f"the worker took {len(got)} of {n}")
    return got


async def _paced(n: int, rate: float, send: Any) -> list[float]:
    sent = [0.0] * n
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[i] = time.time()
        await send(i)
    return sent


async def _run(mode: str, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of one run of ``mode``."""
    n = int(rate * seconds)
    if mode == "taskcore":
        from .scenarios import paced

        sent, starts = await paced("redis", [i / rate for i in range(n)], concurrency=10)
        return [(s - t) * 1000 for t, s in zip(sent, starts, strict=True)]
    url = scratch_url("redis")
    key = "{" + url.partition("prefix=")[2] + "}:bare"  # a key drop_scratch() deletes
    try:
        proc = await _spawn(mode, key if mode.startswith("bare") else url, n)
        if mode == "bare-sync":
            import redis

            r = redis.Redis.from_url(REDIS_URL)

            async def send(i: int) -> None:
                r.lpush(key, str(i))  # blocking on purpose: Huey's kind of producer

            sent = await _paced(n, rate, send)
            got = await _collect(proc, n)
            ids = [str(i) for i in range(n)]
        elif mode == "bare-async":
            import redis.asyncio as aioredis

            ar = aioredis.Redis.from_url(REDIS_URL, socket_timeout=30)

            async def send(i: int) -> None:
                await ar.lpush(key, str(i))

            sent = await _paced(n, rate, send)
            got = await _collect(proc, n)
            await ar.aclose()
            ids = [str(i) for i in range(n)]
        else:
            from taskcore.clock import FakeClock, SystemClock
            from taskcore.testing import make_message
            from taskcore_redis import RedisBackend

            prefix = url.partition("prefix=")[2]
            async with RedisBackend.from_url(
                REDIS_URL, clock=SystemClock(), prefix=prefix
            ) as backend:
                stamp = FakeClock(time.time())  # ready-built messages, stamped now
                messages = [make_message(stamp, queue=QUEUE) for _ in range(n)]

                async def send(i: int) -> None:
                    await backend.enqueue([messages[i]])

                sent = await _paced(n, rate, send)
                got = await _collect(proc, n)
            ids = [m.id for m in messages]
    finally:
        await drop_scratch(url)
    return [(got[tid] - at) * 1000 for tid, at in zip(ids, sent, strict=True)]


async def suite(rate: float, seconds: float, repeat: int, modes: list[str]) -> dict[str, Any]:
    runs: dict[str, list[dict[int, float]]] = {m: [] for m in modes}
    for r in range(repeat):
        for mode in modes:
            lat = await _run(mode, rate, seconds)
            row = {q: percentile(lat, q) for q in (50, 95, 99)}
            runs[mode].append(row)
            load = os.getloadavg()[0]
            sys.stderr.write(
                f"repeat {r + 1}/{repeat} {mode:10s} p50 {row[50]:.3f} p95 {row[95]:.3f} "
                f"p99 {row[99]:.3f} ms (load {load:.2f})\n"
            )
    return {
        mode: {f"p{q}_ms": statistics.median(x[q] for x in rows) for q in (50, 95, 99)}
        for mode, rows in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency_floor", description=__doc__)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES), help=f"some of {','.join(MODES)}")
    p.add_argument("--serve", choices=MODES[:3], help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve == "bare-sync":
        _serve_bare_sync(args.target, args.n)
    elif args.serve == "bare-async":
        asyncio.run(_serve_bare_async(args.target, args.n))
    elif args.serve == "backend":
        asyncio.run(_serve_backend(args.target, args.n))
    else:
        modes = [m for m in args.modes.split(",") if m]
        unknown = set(modes) - set(MODES)
        if unknown:
            p.error(f"unknown modes {sorted(unknown)}: use some of {','.join(MODES)}")
        medians = asyncio.run(suite(args.rate, args.seconds, args.repeat, modes))
        sys.stdout.write(f"medians of {args.repeat}, {args.rate:g}/s for {args.seconds:g} s\n")
        sys.stdout.write("| path | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|\n")
        for mode, m in medians.items():
            sys.stdout.write(
                f"| {mode} | {m['p50_ms']:.3f} | {m['p95_ms']:.3f} | {m['p99_ms']:.3f} |\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
