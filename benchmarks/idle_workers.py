"""What a trickle of tasks costs when several workers are idle: does an enqueue wake
one worker or all of them (a thundering herd)?

``python -m benchmarks.idle_workers [--backend postgres|redis|both] [--workers 1,4]
[--rate 100] [--seconds 10] [--repeat 3]``: starts that many ``taskcore worker
benchmarks.apps:app`` processes (10 slots each) on one scratch namespace, lets them go
idle, then sends single enqueues of ``bench.noop`` at ``--rate`` for ``--seconds`` and
reports the CPU the server's processes (``postgres`` / ``redis-server`` on this
machine) and the workers used meanwhile, in percent of one core, and the hypervisor's
steal. Every task is checked to have succeeded. Before migration 0009 a PostgreSQL
enqueue's NOTIFY woke every idle worker and each ran a claim; since, it wakes one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from taskcore import State

from ._common import (
    BACKENDS,
    create_scratch,
    drop_scratch,
    listing,
    scratch_url,
    verify_all_succeeded,
)
from ._proc import cpu_times, pids_cpu, process_cpu, steal_pct
from .apps import QUEUE, URL_ENV, make_app

_SERVER = {"postgres": "postgres", "redis": "redis-server"}


async def _trickle(url: str, rate: float, seconds: float) -> int:
    app = make_app(url)
    n = round(rate * seconds)
    async with app:
        noop = app.tasks["bench.noop"]
        start = time.perf_counter()
        for i in range(n):
            await noop.enqueue()
            ahead = start + (i + 1) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        deadline = time.monotonic() + 30
        while True:  # the workers settle in batches: give the last ones a moment
            [stats] = await app.stats([QUEUE])
            if stats.states.get(State.SUCCEEDED, 0) >= n or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await verify_all_succeeded(app, n)
    return n


def run(backend: str, workers: int, rate: float, seconds: float) -> dict[str, Any]:
    """One repeat: ``workers`` idle workers, then the trickle; CPU in % of one core."""
    url = scratch_url(backend)
    env = {**os.environ, URL_ENV: url}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(create_scratch(url))
        cmd = [sys.executable, "-m", "taskcore", "worker", "benchmarks.apps:app"]
        procs += [
            subprocess.Popen(
                [*cmd, "--concurrency", "10", "--log-level", "WARNING"],
                env=env,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        time.sleep(3)  # started and idle (the figures below are rates, not a sync point)
        pids = [p.pid for p in procs]
        machine0, server0, workers0 = cpu_times(), process_cpu(_SERVER[backend]), pids_cpu(pids)
        t0 = time.perf_counter()
        n = asyncio.run(_trickle(url, rate, seconds))
        elapsed = time.perf_counter() - t0
        machine1, server1, workers1 = cpu_times(), process_cpu(_SERVER[backend]), pids_cpu(pids)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        asyncio.run(drop_scratch(url))
    return {
        "tasks": n,
        "server_cpu_pct": 100 * (server1 - server0) / elapsed,
        "workers_cpu_pct": 100 * (workers1 - workers0) / elapsed,
        "steal_pct": steal_pct(machine0, machine1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle_workers")
    p.add_argument("--backend", choices=["postgres", "redis", "both"], default="postgres")
    p.add_argument("--workers", default="1,4", help="worker processes, comma-separated")
    p.add_argument("--rate", type=float, default=100.0, help="enqueues per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    backends = [b for b in BACKENDS if b != "memory" and args.backend in (b, "both")]
    for backend in backends:
        for workers in (int(w) for w in args.workers.split(",")):
            rows = [run(backend, workers, args.rate, args.seconds) for _ in range(args.repeat)]
            server = [r["server_cpu_pct"] for r in rows]
            mine = [r["workers_cpu_pct"] for r in rows]
            sys.stdout.write(
                f"{backend}, {workers} idle workers, {args.rate:g} tasks/s: server CPU "
                f"{statistics.median(server):.1f} % ({listing(server, '.1f')}), workers' CPU "
                f"{statistics.median(mine):.1f} % ({listing(mine, '.1f')}) of one core; "
                f"steal {listing([r['steal_pct'] for r in rows], '.1f')} %\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
