"""``python -m benchmarks [SCENARIO ...] [--backend B] [--n N] [--repeat R] [--quick]``.

``taskcore bench ...`` calls :func:`main` with the same arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# absolute imports: a process-pool child runs this file as ``__mp_main__`` (anyio)
from benchmarks import load, scenarios
from benchmarks._common import BACKENDS, BenchError
from benchmarks.realistic import realistic
from benchmarks.report import machine, markdown, summarise
from benchmarks.scaling import scaling

SCENARIOS = (
    "burn-down",
    "enqueue",
    "latency",
    "rss",
    "soak",
    "pg-claim",
    "load",
    "priority",
    "burst",
    "scaling",
    "realistic",
)
DEFAULT_N = {"memory": 100_000, "redis": 20_000, "postgres": 20_000}
QUICK_N = {"memory": 5_000, "redis": 2_000, "postgres": 2_000}
DEFAULT_RATE = {"memory": 500.0, "redis": 200.0, "postgres": 200.0}


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="taskcore benchmark harness (see docs/benchmarks.md)",
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        default=["all"],
        metavar="SCENARIO",
        help=f"one or more of {', '.join(SCENARIOS)} (default: all)",
    )
    p.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    p.add_argument("--n", type=int, help="tasks per burn-down / bulk enqueue (per backend)")
    p.add_argument("--repeat", type=int, help="repeats per figure; the median is reported (3)")
    p.add_argument("--concurrency", type=int, default=100, help="worker slots (default 100)")
    p.add_argument("--rate", type=float, help="latency: enqueues per second (500 mem, 200 else)")
    p.add_argument("--seconds", type=float, help="latency: duration of the paced enqueue (5)")
    p.add_argument("--singles", type=int, help="enqueue: single enqueue calls (2000)")
    p.add_argument(
        "--finished", type=int, help="pg-claim: finished rows in the full table (1,000,000)"
    )
    p.add_argument("--soak-n", type=int, help="soak: tasks one worker drains (100,000)")
    p.add_argument(
        "--capacity",
        type=float,
        help="load / priority / burst: tasks/s of one worker (default: measured first by a "
        "burn-down of --capacity-n no-ops)",
    )
    p.add_argument("--capacity-n", type=int, help="tasks in that burn-down (20,000)")
    p.add_argument(
        "--producers", type=int, default=4, help="load / priority / burst: producer coroutines"
    )
    p.add_argument("--load-seconds", type=float, help="load: seconds per load level (10)")
    p.add_argument("--priority-seconds", type=float, help="priority: seconds of saturation (8)")
    p.add_argument("--trickle", type=float, help="priority: P0-P3 tasks/s, each (20)")
    p.add_argument("--burst-seconds", type=float, help="burst: length of the 10x burst (30)")
    p.add_argument(
        "--burst-base",
        type=float,
        default=0.1,
        help="burst: base load as a fraction of the capacity (0.1: the burst offers 1x)",
    )
    p.add_argument(
        "--burst-max-tasks",
        type=int,
        default=400_000,
        help="burst: most calls in all; a lower base rate if the plan needs more (400,000)",
    )
    p.add_argument("--scale-n", type=int, help="scaling: tasks drained by 1, 2, 4 workers (20,000)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    return p


def _jobs(
    args: argparse.Namespace, backend: str
) -> dict[str, Callable[[], Awaitable[dict[str, Any]]]]:
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)[backend]
    rate = args.rate or DEFAULT_RATE[backend]
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    singles = args.singles or (200 if args.quick else 2000)
    finished = args.finished or (10_000 if args.quick else 1_000_000)
    jobs: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "burn-down": lambda: scenarios.burn_down(backend, n, args.concurrency),
        "enqueue": lambda: scenarios.bulk_enqueue(backend, n, singles),
        "latency": lambda: scenarios.latency(backend, rate, seconds),
        "rss": lambda: scenarios.idle_rss(backend),
    }
    if backend != "memory":
        soak_n = args.soak_n or (10_000 if args.quick else 100_000)
        jobs["soak"] = lambda: scenarios.soak_rss(backend, soak_n, args.concurrency)
    quick = args.quick
    cap_n = args.capacity_n or (2_000 if quick else 20_000)
    producers = args.producers
    jobs["load"] = lambda: load.load(
        backend, args.capacity, cap_n, args.load_seconds or (2.0 if quick else 10.0), producers
    )
    jobs["priority"] = lambda: load.priority_mix(
        backend,
        args.capacity,
        cap_n,
        args.priority_seconds or (2.0 if quick else 8.0),
        args.trickle or 20.0,
        producers,
    )
    jobs["burst"] = lambda: load.burst(
        backend,
        args.capacity,
        cap_n,
        args.burst_base,
        args.burst_seconds or (3.0 if quick else 30.0),
        1.0 if quick else 5.0,
        producers,
        args.burst_max_tasks,
    )
    payload_n = (
        {"100B": 500, "10KB": 200, "1MB": 10} if quick else {"100B": 5000, "10KB": 2000, "1MB": 50}
    )
    jobs["realistic"] = lambda: realistic(
        backend, 2_000 if quick else 20_000, 20 if quick else 200, payload_n, args.concurrency
    )
    if backend != "memory":
        scale_n = args.scale_n or (2_000 if quick else 20_000)
        jobs["scaling"] = lambda: scaling(backend, scale_n, args.concurrency)
    if backend == "postgres":
        from benchmarks.pg_claim import claim_latency

        jobs["pg-claim"] = lambda: claim_latency(finished)
    return jobs


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    wanted = SCENARIOS if "all" in args.scenarios else tuple(args.scenarios)
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    repeat = args.repeat or (1 if args.quick else 3)
    result: dict[str, Any] = {
        "command": command,
        "repeat": repeat,
        "quick": args.quick,
        "machine": await machine(),
        "results": {},
    }
    for scenario in wanted:
        for backend in backends:
            job = _jobs(args, backend).get(scenario)
            if job is None:
                continue
            # the 1M-row fill is slow and deterministic enough: run it once
            times = 1 if scenario == "pg-claim" else repeat
            runs: list[dict[str, Any]] = []
            entry: dict[str, Any] = {"runs": runs}
            if scenario in ("burn-down", "enqueue"):
                entry["n"] = args.n or (QUICK_N if args.quick else DEFAULT_N)[backend]
            try:
                for i in range(times):
                    _say(f"{scenario} / {backend}: run {i + 1} of {times}")
                    runs.append(await job())
                    _say("  " + json.dumps(runs[-1], default=str)[:300])
                entry["median"] = summarise(runs)
            except (BenchError, OSError, Exception) as exc:
                _say(traceback.format_exc())
                entry["error"] = f"{type(exc).__name__}: {exc}"
            result["results"].setdefault(scenario, {})[backend] = entry
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    unknown = set(args.scenarios) - {*SCENARIOS, "all"}
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(run(args, command.strip()))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = markdown(result)
    (args.out / "latest.md").write_text(table)
    sys.stdout.write(table)
    _say(f"wrote {path} and {args.out / 'latest.md'}")
    failed = [
        f"{s}/{b}" for s, per in result["results"].items() for b, e in per.items() if "error" in e
    ]
    if failed:
        _say(f"FAILED runs: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
