"""What one task costs on Redis, in load-insensitive units:
``python -m benchmarks.redis_cost [--url URL] [--n N] [--singles S]``.

Runs, through the benchmark app, a bulk enqueue of N no-op tasks (``enqueue_many`` in
batches of 1,000), S single ``enqueue()`` calls, N claims and settles through the
backend in fixed batches of 100 (the same work whatever the timing), then one
in-process worker draining N more plus the singles. For each phase it prints, per
task: the Redis server's CPU time (``INFO cpu``), the time the server spent inside
``EVALSHA`` (``INFO commandstats``), the
client process's CPU time and its round trips (socket writes: one per command, one
per pipeline). A last phase enqueues S single tasks at 100/s into that worker, idle
in between: the round trips per task of the enqueue→start path (enqueuer and worker
together, plus the worker's settles and idle looks). CPU times barely move with the
machine's load, unlike tasks/s.

Server figures are server-wide: point ``--url`` at a Redis nobody else uses (e.g.
``redis-server --port 6391 --save ''`` in a temp dir), or they count other clients.

``--callgrind PID``: the server runs under ``valgrind --tool=callgrind`` (process
``PID``); each phase is bracketed with ``callgrind_control -z`` / ``-d`` and the
server's instructions per task are printed too: the one figure load cannot move.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from taskcore.backend import Outcome, OutcomeKind
from taskcore.states import State

from ._common import drop_scratch
from ._run import drain, enqueue_noops
from ._worker import RoundTrips
from .apps import PROBE, QUEUE, make_app

if TYPE_CHECKING:
    from taskcore_redis import RedisBackend


async def _server(client: Any) -> tuple[float, float, int]:
    cpu = await client.info("cpu")
    cmd = await client.info("commandstats")
    ev = cmd.get("cmdstat_evalsha", {})
    total = sum(int(v["calls"]) for v in cmd.values())
    return (
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        float(ev.get("usec", 0)),
        total,
    )


class Callgrind:
    """Instructions the server executed between :meth:`zero` and :meth:`read`."""

    def __init__(self, pid: int) -> None:
        self.pid = str(pid)

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, self.pid], check=True, capture_output=True)

    def zero(self) -> None:
        self._control("-z")

    def read(self) -> int:
        self._control("-d")
        cwd = f"/proc/{self.pid}/cwd"  # valgrind names dumps callgrind.out.<pid>.<n>
        dumps = glob.glob(f"{cwd}/*.out.{self.pid}.*") or glob.glob(f"{cwd}/*.{self.pid}.out.*")
        latest = max(dumps, key=lambda f: int(f.rsplit(".", 1)[1]))
        with open(latest) as f:
            for line in f:
                if line.startswith("summary:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no summary in {latest}")


async def measure(
    url: str, n: int, singles: int, grind: Callgrind | None = None
) -> list[tuple[str, int, dict[str, float]]]:
    import redis.asyncio as aioredis

    trips = RoundTrips()
    prefix = f"tccost_{os.getpid()}_{os.urandom(3).hex()}"
    scratch = f"{url}?prefix={prefix}"
    admin = aioredis.Redis.from_url(url)
    app = make_app(scratch)
    rows: list[tuple[str, int, dict[str, float]]] = []

    async def phase(name: str, count: int, fn: Callable[[], Awaitable[Any]]) -> None:
        s0 = await _server(admin)
        if grind:
            grind.zero()
        rt0, c0, w0 = trips.count, time.process_time(), time.perf_counter()
        await fn()
        w1, c1, rt1 = time.perf_counter(), time.process_time(), trips.count
        instructions = grind.read() if grind else 0
        s1 = await _server(admin)
        rows.append(
            (
                name,
                count,
                {
                    "server_kinstr": instructions / count / 1000,
                    "server_cpu_us": (s1[0] - s0[0]) * 1e6 / count,
                    "evalsha_us": (s1[1] - s0[1]) / count,
                    "server_cmds": (s1[2] - s0[2] - 2) / count,  # minus our INFO calls
                    "client_cpu_us": (c1 - c0) * 1e6 / count,
                    "round_trips": (rt1 - rt0 - 2) / count,  # minus our INFO calls
                    "wall_tasks_per_s": count / (w1 - w0),
                },
            )
        )

    try:
        async with app:
            noop = app.tasks["bench.noop"]
            await noop.enqueue()  # connect, load scripts: not measured

            async def singles_() -> None:
                for _ in range(singles):
                    await noop.enqueue()

            await phase("bulk enqueue", n, lambda: enqueue_noops(app, n))
            await phase("single enqueue", singles, singles_)

            async def batches() -> None:  # a worker's calls in fixed batches of 100
                backend = cast("RedisBackend", app.backend)  # a Redis scratch URL
                left = n
                while left > 0:
                    leases = await backend.claim([QUEUE], min(100, left), 60, "cost-worker")
                    now = backend.clock.now()
                    outcomes = [
                        Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, now, b"null")
                        for x in leases
                    ]
                    if not all(await backend.settle(outcomes)):
                        raise RuntimeError("a settle was refused")
                    left -= len(leases)

            await phase("claim+settle", n, batches)
            await app.backend.purge(QUEUE, [State.SUCCEEDED])  # the drain counts its own
            await enqueue_noops(app, n)  # again, for the worker
            total = n + singles + 1
            await phase("drain", total, lambda: drain(app, total, 100, timeout=600))

            async def paced() -> None:  # the latency scenario's path, in one process
                done = asyncio.Event()
                PROBE.reset(singles, done.set)
                worker = app.worker(concurrency=100, queues=[QUEUE])
                runner = asyncio.create_task(worker.run())
                await asyncio.sleep(0.5)  # idle: blocked in wait()
                stamp = app.tasks["bench.stamp"]
                t0 = time.perf_counter()
                for i in range(singles):
                    await asyncio.sleep(max(0.0, t0 + i / 100 - time.perf_counter()))
                    await stamp.enqueue(i)
                await asyncio.wait_for(done.wait(), 60)
                worker.stop()
                await runner

            await phase("paced 100/s", singles, paced)
    finally:
        await admin.aclose()
        await drop_scratch(scratch)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.redis_cost")
    p.add_argument(
        "--url", default=os.environ.get("TASKCORE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    )
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--singles", type=int, default=1_000)
    p.add_argument("--callgrind", type=int, metavar="PID", help="server under callgrind")
    args = p.parse_args(argv)
    grind = Callgrind(args.callgrind) if args.callgrind else None
    rows = asyncio.run(measure(args.url, args.n, args.singles, grind))
    head = (
        f"{'phase':<15} {'tasks':>6} {'server CPU':>11} {'in EVALSHA':>11} {'cmds':>6} "
        f"{'client CPU':>11} {'RT':>7} {'wall':>9}"
        + (f" {'server instr':>14}" if grind else "")
        + "\n"
    )
    sys.stdout.write(f"per task ({args.url}):\n" + head)
    for name, count, f in rows:
        sys.stdout.write(
            f"{name:<15} {count:>6} {f['server_cpu_us']:>8.1f} us {f['evalsha_us']:>8.1f} us "
            f"{f['server_cmds']:>6.2f} {f['client_cpu_us']:>8.1f} us {f['round_trips']:>7.3f} "
            f"{f['wall_tasks_per_s']:>7,.0f}/s"
            + (f" {f['server_kinstr']:>8,.1f} kinstr" if grind else "")
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
