"""``taskcore demo``: a self-contained run on the in-memory backend.

Enqueues a realistic mix over all five priorities and the three complexity classes:
flaky tasks that succeed on retry, hopeless ones that end in the dead-letter queue,
delayed ones and a cron schedule; shows live progress and ends with a summary.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import App
from .backend import OutcomeKind
from .middleware import ExecutionContext, Middleware
from .priority import Priority, is_late
from .retry import RetryPolicy
from .states import TERMINAL, State

__all__ = ["run_demo"]

app = App("memory://")
_attempts: dict[int, int] = defaultdict(int)


class PermanentError(Exception):
    """Raised by tasks that should not be retried."""


@app.task(complexity="simple", give_up_on=PermanentError)
async def validate(key: int, fail_times: int = 0, permanent: bool = False) -> bool:
    """A quick check; may fail ``fail_times`` times first."""
    _attempts[key] += 1
    if permanent:
        raise PermanentError(f"record {key} is invalid")
    if _attempts[key] <= fail_times:
        raise ConnectionError(f"record {key}: upstream unavailable (attempt {_attempts[key]})")
    await anyio.sleep(random.random() * 0.004)
    return True


@app.task(complexity="moderate")
def aggregate(key: int, fail_times: int = 0) -> int:
    """A report-style task in the thread pool (~100-150 ms of I/O)."""
    _attempts[key] += 1
    if _attempts[key] <= fail_times:
        raise TimeoutError(f"report {key}: database timed out")
    time.sleep(0.1 + random.random() * 0.05)
    return key * 2


@app.task(complexity="complex", retry=RetryPolicy.exponential(7, base=0.5, cap=4.0, jitter=0.1))
def crunch(key: int, flaky: bool = False) -> int:
    """CPU-bound work in the process pool (~20-40 ms); flaky ones fail 30% of runs."""
    if flaky and random.random() < 0.3:
        raise ArithmeticError(f"job {key}: numerical instability")
    deadline = time.perf_counter() + 0.02 + random.random() * 0.02
    total = 0
    while time.perf_counter() < deadline:
        total += sum(range(1000))
    return total % 1000


@app.periodic("* * * * * */2")  # every 2 seconds (croniter's sixth field is seconds)
async def heartbeat() -> str:
    return "alive"


class _Collector(Middleware):
    def __init__(self) -> None:
        self.waits: dict[int, list[float]] = defaultdict(list)
        self.late: dict[int, int] = defaultdict(int)
        self.runs: dict[str, int] = defaultdict(int)
        self.retries: dict[str, int] = defaultdict(int)
        self.dead: dict[str, int] = defaultdict(int)
        self.finished = 0

    async def after_run(self, ctx: ExecutionContext) -> None:
        lease = ctx.lease
        cls = str(ctx.task.options.complexity)
        wait = max(0.0, lease.claimed_at - (lease.ready_at or lease.message.eligible_at))
        p = lease.message.priority
        self.waits[p].append(wait)
        self.late[p] += is_late(p, wait)
        self.runs[cls] += 1
        if ctx.outcome in (OutcomeKind.RETRY, OutcomeKind.DEFER):
            self.retries[cls] += 1
        elif ctx.outcome is OutcomeKind.DEAD:
            self.dead[cls] += 1


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _main(total: int, live: bool, console: Console) -> dict[str, Any]:
    collector = _Collector()
    app.middleware.append(collector)
    rng = random.Random(7)
    calls: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
    for key in range(total):
        priority = Priority(key % 5)
        roll = rng.random()
        opts: dict[str, Any] = {"priority": priority}
        if key % 97 == 0:
            opts["delay"] = 1.0 + rng.random() * 3
        if roll < 0.6:
            fail = 1 if rng.random() < 0.05 else (9 if rng.random() < 0.01 else 0)
            calls.append(
                (
                    validate,
                    {"key": key, "fail_times": fail, "permanent": rng.random() < 0.005},
                    opts,
                )
            )
        elif roll < 0.9:
            calls.append((aggregate, {"key": key, "fail_times": int(rng.random() < 0.04)}, opts))
        else:
            calls.append((crunch, {"key": key, "flaky": rng.random() < 0.1}, opts))
    async with app:
        started = time.perf_counter()
        for task, kwargs, opts in calls:
            await task.with_options(**opts).enqueue(**kwargs)
        enqueue_s = time.perf_counter() - started
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not live,
        )
        async with app.worker(
            concurrency=64, threads=24, processes=2, maintenance_interval=1.0
        ) as w:
            with progress:
                bar = progress.add_task("tasks", total=total, info="")
                while True:
                    stats = (await app.stats(["default"]))[0]
                    done = sum(n for s, n in stats.states.items() if s in TERMINAL)
                    progress.update(
                        bar,
                        completed=min(done, total),
                        info=f"running {stats.states[State.RUNNING]:>3}  retrying "
                        f"{stats.states[State.RETRYING]:>3}  dead {stats.states[State.DEAD]:>3}",
                    )
                    pending = sum(
                        stats.states[s]
                        for s in (State.SCHEDULED, State.RETRYING, State.QUEUED, State.RUNNING)
                    )
                    if done >= total and pending == 0:
                        break
                    await anyio.sleep(0.2)
            elapsed = time.perf_counter() - started
            w.stop()
        stats = (await app.stats(["default"]))[0]
    return {"collector": collector, "stats": stats, "elapsed": elapsed, "enqueue_s": enqueue_s}


def run_demo(total: int = 2400, live: bool = True) -> int:
    """Run the demo; returns the process exit code."""
    console = Console()
    console.print(
        f"[bold]taskcore demo[/bold]: {total} tasks on memory:// "
        "(simple/moderate/complex, P0-P4, retries, dead letters, delays, cron)"
    )
    # the demo fails tasks on purpose; the summary reports them instead of the log
    logger = logging.getLogger("taskcore")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        out = anyio.run(_main, total, live, console)
    finally:
        logger.setLevel(level)  # run_demo may be called from a program that logs
    c: _Collector = out["collector"]
    stats = out["stats"]
    pt = Table(title="per priority")
    for col in ("priority", "SLA", "runs", "p50 wait (ms)", "p99 wait (ms)", "late"):
        pt.add_column(col, justify="right")
    for p in Priority:
        waits = c.waits.get(int(p), [])
        sla = "none" if p.sla is None else f"{p.sla:.0f} s"
        pt.add_row(
            f"{p.label} {p.name}",
            sla,
            str(len(waits)),
            f"{_pct(waits, 0.5) * 1000:.1f}",
            f"{_pct(waits, 0.99) * 1000:.1f}",
            str(c.late.get(int(p), 0)),
        )
    ct = Table(title="per complexity")
    for col in ("complexity", "runs", "retries", "dead letters"):
        ct.add_column(col, justify="right")
    for cls in ("simple", "moderate", "complex"):
        ct.add_row(cls, str(c.runs[cls]), str(c.retries[cls]), str(c.dead[cls]))
    console.print(pt)
    console.print(ct)
    succeeded = stats.states[State.SUCCEEDED]
    console.print(
        f"succeeded {succeeded}, dead {stats.states[State.DEAD]}, runs {sum(c.runs.values())} "
        f"in {out['elapsed']:.1f} s: {sum(c.runs.values()) / out['elapsed']:.0f} runs/s overall "
        f"(enqueue of {total} took {out['enqueue_s'] * 1000:.0f} ms)"
    )
    return 0
