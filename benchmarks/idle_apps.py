"""Single enqueues while other processes hold an App open and do nothing (a web
server's processes): does every enqueue wake them?

``python -m benchmarks.idle_apps [--backend postgres|redis|both] [--idle 8] [--n 2000]
[--repeat 3]``: starts ``--idle`` processes that each open an ``App`` on the same
scratch namespace and then wait on stdin, then times ``--n`` single ``enqueue()`` calls
from this process (after 200 for warm-up). Prints per repeat the enqueue rate, the CPU
seconds the idle processes used during the timed calls (``/proc``) and how busy the
machine was; with ``--idle 0`` too, as the baseline of the same run. On PostgreSQL a
process that listened for ``ready`` was woken by every enqueue's NOTIFY (the server
signals every listening session at every commit that notifies); since the tenth
session only a process that waits listens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from ._common import BACKENDS, create_scratch, drop_scratch, listing, scratch_url
from ._proc import busy_pct, cpu_times, pids_cpu, steal_pct
from .apps import make_app

_IDLE = """
import asyncio, sys
from taskcore import App
async def main():
    async with App(sys.argv[1]) as app:
        await app.backend.stats()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


async def _time(url: str, n: int, pids: list[int]) -> dict[str, Any]:
    app = make_app(url)
    noop = app.tasks["bench.noop"]
    async with app:
        for _ in range(200):
            await noop.enqueue()
        cpu0, machine0 = pids_cpu(pids), cpu_times()
        t0 = time.perf_counter()
        for _ in range(n):
            await noop.enqueue()
        elapsed = time.perf_counter() - t0
        machine1, cpu1 = cpu_times(), pids_cpu(pids)
    return {
        "enqueues_per_s": n / elapsed,
        "idle_cpu_s": cpu1 - cpu0,
        "machine_busy_pct": busy_pct(machine0, machine1),
        "steal_pct": steal_pct(machine0, machine1),
    }


def run(backend: str, idle: int, n: int) -> dict[str, Any]:
    """One repeat: ``idle`` App processes open, ``n`` single enqueues timed."""
    url = scratch_url(backend)
    procs: list[subprocess.Popen[str]] = []
    try:
        asyncio.run(create_scratch(url))
        procs += [
            subprocess.Popen(
                [sys.executable, "-c", _IDLE, url],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(idle)
        ]
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("an idle App process did not start")
        return asyncio.run(_time(url, n, [p.pid for p in procs]))
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=30)
        asyncio.run(drop_scratch(url))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle_apps")
    p.add_argument("--backend", choices=["postgres", "redis", "both"], default="postgres")
    p.add_argument("--idle", type=int, default=8, help="idle App processes")
    p.add_argument("--n", type=int, default=2000, help="single enqueues timed")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    backends = [b for b in BACKENDS if b != "memory" and args.backend in (b, "both")]
    for backend in backends:
        for idle in (0, args.idle):
            rows = [run(backend, idle, args.n) for _ in range(args.repeat)]
            rates = [r["enqueues_per_s"] for r in rows]
            sys.stdout.write(
                f"{backend}, {idle} idle App processes: "
                f"{statistics.median(rates):,.0f} enqueues/s ({listing(rates, ',.0f')}); "
                f"idle processes' CPU {listing([r['idle_cpu_s'] for r in rows], '.2f')} s; "
                f"machine busy {listing([r['machine_busy_pct'] for r in rows], '.0f')} %; "
                f"steal {listing([r['steal_pct'] for r in rows], '.1f')} %\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
