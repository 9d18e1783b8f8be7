"""Machine details, medians and the markdown summary written next to the JSON results."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from ._common import PG_URL, REDIS_URL

Row = tuple[str, str, str, str, dict[str, tuple[float, str]]]
_ALL_UNDER_1 = {"memory": (1.0, "max"), "redis": (1.0, "max"), "postgres": (1.0, "max")}


def _load_rows() -> list[Row]:
    rows: list[Row] = [("load", "capacity_per_s", "load: capacity (burn-down)", "tasks/s", {})]
    for pct in (50, 90):
        rows += [
            ("load", f"offered_per_s_{pct}", f"load {pct}%: offered", "tasks/s", {}),
            ("load", f"sent_per_s_{pct}", f"load {pct}%: sent by the producers", "tasks/s", {}),
            ("load", f"p50_ms_{pct}", f"load {pct}%: enqueue→start p50", "ms", {}),
            ("load", f"p95_ms_{pct}", f"load {pct}%: enqueue→start p95", "ms", {}),
            ("load", f"p99_ms_{pct}", f"load {pct}%: enqueue→start p99", "ms", {}),
            ("load", f"backlog_max_{pct}", f"load {pct}%: largest backlog sampled", "tasks", {}),
            (
                "load",
                f"clear_s_{pct}",
                f"load {pct}%: last start after the producers stopped (bounded if < 1 s)",
                "s",
                _ALL_UNDER_1,
            ),
        ]
    return rows


def _priority_rows() -> list[Row]:
    rows: list[Row] = []
    for prio in range(5):
        rows += [
            ("priority", f"P{prio}_p50_ms", f"priority mix: P{prio} wait p50", "ms", {}),
            ("priority", f"P{prio}_p99_ms", f"priority mix: P{prio} wait p99", "ms", {}),
        ]
        if prio < 4:  # P4 has no SLA
            rows.append(
                (
                    "priority",
                    f"P{prio}_late",
                    f"priority mix: P{prio} late starts",
                    "",
                    _ALL_UNDER_1,
                )
            )
    return [
        *rows,
        ("priority", "P0_first_half_p99_ms", "priority mix: P0 p99, first half", "ms", {}),
        ("priority", "P0_second_half_p99_ms", "priority mix: P0 p99, second half", "ms", {}),
        ("priority", "P4_backlog_first", "priority mix: P4 backlog, first sample", "tasks", {}),
        (
            "priority",
            "P4_backlog_at_end",
            "priority mix: P4 backlog when sending ended",
            "tasks",
            {},
        ),
    ]


def _scaling_rows() -> list[Row]:
    rows: list[Row] = []
    for w in (1, 2, 4):
        rows += [
            ("scaling", f"tasks_per_s_{w}w", f"scaling: {w} worker process(es)", "tasks/s", {}),
            ("scaling", f"speedup_{w}w", f"scaling: {w} workers / 1 worker", "x", {}),
            (
                "scaling",
                f"server_cpu_cores_{w}w",
                f"scaling: server CPU with {w} workers",
                "cores",
                {},
            ),
        ]
    return rows


def _payload_rows() -> list[Row]:
    rows: list[Row] = []
    for size in ("100B", "10KB", "1MB"):
        rows += [
            (
                "realistic",
                f"payload_{size}_enqueue_per_s",
                f"payload {size}: enqueue",
                "tasks/s",
                {},
            ),
            ("realistic", f"payload_{size}_drain_per_s", f"payload {size}: drain", "tasks/s", {}),
            (
                "realistic",
                f"payload_{size}_round_trip_per_s",
                f"payload {size}: round trip (enqueue + drain)",
                "tasks/s",
                {},
            ),
        ]
    return rows


# (scenario, key, label, unit, {backend: (target, "min"|"max")})
METRICS: list[Row] = [
    (
        "burn-down",
        "tasks_per_s",
        "burn-down, 1 worker",
        "tasks/s",
        {"memory": (50_000, "min"), "redis": (20_000, "min"), "postgres": (10_000, "min")},
    ),
    ("burn-down", "baseline_tasks_per_s", "asyncio.Queue baseline (same run)", "tasks/s", {}),
    ("burn-down", "ratio_to_baseline", "taskcore / asyncio.Queue", "x", {}),
    (
        "burn-down",
        "round_trips_per_task",
        "client round trips per task (burn-down)",
        "",
        {"redis": (1, "max")},
    ),
    ("burn-down", "server_commands_per_task", "server commands per task (incl. in Lua)", "", {}),
    (
        "enqueue",
        "bulk_tasks_per_s",
        "bulk enqueue (enqueue_many, batches of 1000)",
        "tasks/s",
        {"redis": (50_000, "min"), "postgres": (30_000, "min")},
    ),
    ("enqueue", "single_tasks_per_s", "single task.enqueue() calls", "tasks/s", {}),
    ("latency", "p50_ms", "enqueue→start p50", "ms", {}),
    ("latency", "p95_ms", "enqueue→start p95", "ms", {}),
    (
        "latency",
        "p99_ms",
        "enqueue→start p99",
        "ms",
        {"memory": (2, "max"), "redis": (5, "max"), "postgres": (10, "max")},
    ),
    (
        "rss",
        "rss_mb",
        "idle worker RSS",
        "MB",
        {"memory": (60, "max"), "redis": (60, "max"), "postgres": (60, "max")},
    ),
    ("soak", "rss_start_mb", "worker RSS before its first task", "MB", {}),
    ("soak", "rss_end_mb", "worker RSS at the end of the soak (--soak-n tasks, 100,000)", "MB", {}),
    (
        "soak",
        "growth_mb",
        "RSS growth from the first tenth to the end",
        "MB",
        {"redis": (5, "max"), "postgres": (5, "max")},
    ),
    *_load_rows(),
    *_priority_rows(),
    ("burst", "base_per_s", "burst: base load (burst = 10x)", "tasks/s", {}),
    ("burst", "base_fraction", "burst: base load / capacity", "x", {}),
    ("burst", "burst_sent_per_s", "burst: rate the producers sent in the burst", "tasks/s", {}),
    ("burst", "before_p99_ms", "burst: p99 before", "ms", {}),
    ("burst", "burst_p99_ms", "burst: p99 of tasks sent in the burst", "ms", {}),
    ("burst", "after_p99_ms", "burst: p99 after", "ms", {}),
    ("burst", "rise_p99_x", "burst: p99 rise (burst / before)", "x", {}),
    ("burst", "backlog_max", "burst: largest backlog sampled", "tasks", {}),
    ("burst", "clear_s", "burst: backlog cleared after the burst in", "s", {}),
    *_scaling_rows(),
    ("realistic", "io_tasks_per_s", "10 ms I/O tasks, 100 slots (ideal 10,000)", "tasks/s", {}),
    ("realistic", "io_ratio_to_ideal", "10 ms I/O tasks / ideal", "x", {}),
    ("realistic", "cpu_tasks_per_s", "50 ms CPU tasks, process pool, incl. start", "tasks/s", {}),
    ("realistic", "cpu_steady_tasks_per_s", "50 ms CPU tasks, steady state", "tasks/s", {}),
    ("realistic", "cpu_steady_ratio_to_ideal", "CPU tasks steady / ideal (cores / 50 ms)", "x", {}),
    (
        "realistic",
        "cpu_steady_ratio_to_baseline",
        "CPU tasks steady / bare anyio.to_process (same run)",
        "x",
        {},
    ),
    *_payload_rows(),
    ("pg-claim", "empty_limit1_p50_ms", "claim(limit=1) p50, empty table", "ms", {}),
    ("pg-claim", "full_limit1_p50_ms", "claim(limit=1) p50, with finished rows", "ms", {}),
    ("pg-claim", "empty_limit100_p50_ms", "claim(limit=100) p50, empty table", "ms", {}),
    ("pg-claim", "full_limit100_p50_ms", "claim(limit=100) p50, with finished rows", "ms", {}),
]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release()["PRETTY_NAME"] + f" (kernel {platform.release()})"
    except OSError:
        return platform.platform()


async def _redis_version() -> str:
    try:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            return str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


async def _pg_version() -> str:
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
            cur = await conn.execute("SHOW server_version")
            row = await cur.fetchone()
            return str(row[0]) if row else "unknown"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def _source() -> str:
    """Where the measured taskcore comes from: its checkout's commit, and whether src/
    had uncommitted changes (others may be editing the tree while a benchmark runs)."""
    import taskcore

    src = Path(taskcore.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return str(src)
    return f"{src} at {head}" + (" with uncommitted changes in src/" if dirty else "")


_SPEED_LOOP = compile("s = 0\nfor i in range(5_000_000):\n    s += i\n", "<speed>", "exec")


def host_speed() -> float:
    """Seconds this interpreter takes now for a module-level loop of 5 million additions
    (the check docs/benchmarks.md quotes for each machine: ``python3 -c`` of the same
    loop). A shared VM's speed drifts (here a third within an hour, for every library
    alike), so the reports record it beside the figures it affects."""
    t0 = time.perf_counter()
    exec(_SPEED_LOOP, {})  # module-level: globals, as in the quoted check
    return round(time.perf_counter() - t0, 3)


def speed_line(speeds: Sequence[float]) -> str:
    """The markdown line that reports :func:`host_speed` readings."""
    readings = ", ".join(f"{x:.3g}" for x in speeds)
    return f"Host speed: a loop of 5 million additions took {readings} s (lower is faster)."


async def machine() -> dict[str, Any]:
    import taskcore

    redis_v, pg_v = await asyncio.gather(_redis_version(), _pg_version())
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": _os_name(),
        "python": platform.python_version(),
        "taskcore": taskcore.__version__,
        "taskcore_source": _source(),
        "redis_server": redis_v,
        "postgres_server": pg_v,
        "redis-py": _version("redis"),
        "psycopg": _version("psycopg"),
        "msgspec": _version("msgspec"),
        "anyio": _version("anyio"),
        "host_speed_s": [host_speed()],
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure over the repeats; other values from the first run."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
        else:
            out[key] = value
    return out


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.4f}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# taskcore benchmark results — {m['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}; "
        f"Python {m['python']}; taskcore {m['taskcore']} ({m['taskcore_source']}); "
        f"Redis {m['redis_server']}; "
        f"PostgreSQL {m['postgres_server']}; redis-py {m['redis-py']}; "
        f"psycopg {m['psycopg']}; msgspec {m['msgspec']}; anyio {m['anyio']}.",
        "",
        *([speed_line(m["host_speed_s"]), ""] if m.get("host_speed_s") else []),
        f"Command: `{result['command']}` — medians of {result['repeat']} repeat(s)"
        + (" (quick mode: small sizes, not representative)" if result["quick"] else "")
        + ".",
        "",
        "| backend | figure | median | unit | target | met | repeats |",
        "|---|---|---:|---|---|---|---|",
    ]
    failed: set[tuple[str, str]] = set()
    for backend in ("memory", "redis", "postgres"):
        for scenario, key, label, unit, targets in METRICS:
            entry = result["results"].get(scenario, {}).get(backend)
            if entry is None:
                continue
            if "error" in entry:
                if (scenario, backend) not in failed:
                    failed.add((scenario, backend))
                    error = entry["error"][:120].replace("|", "/").replace("\n", " ")
                    lines.append(f"| {backend} | {scenario} | FAILED | | | ✘ | {error} |")
                continue
            summary = entry["median"]
            if key not in summary:
                continue
            value = summary[key]
            target, met = "", ""
            if backend in targets:
                goal, kind = targets[backend]
                target = f"{'≥' if kind == 'min' else '<'} {_fmt(goal)}"
                met = "✔" if (value >= goal if kind == "min" else value < goal) else "✘"
            runs = ", ".join(_fmt(r[key]) for r in entry["runs"])
            lines.append(
                f"| {backend} | {label} | {_fmt(value)} | {unit} | {target} | {met} | {runs} |"
            )
    notes = []
    for backend, entry in result["results"].get("burn-down", {}).items():
        if "median" in entry:
            s = entry["median"]
            notes.append(f"- burn-down {backend}: N={entry['n']}, worker {s['worker']}")
    for backend, entry in result["results"].get("latency", {}).items():
        if "median" in entry:
            s = entry["median"]
            notes.append(
                f"- latency {backend}: {s['count']} tasks at {s['rate_per_s']:g}/s, worker "
                f"{s['worker']}"
            )
    for backend, entry in result["results"].get("pg-claim", {}).items():
        if "median" in entry:
            notes.append(
                f"- pg-claim {backend}: 'with finished rows' = "
                f"{entry['median']['finished_rows']:,} succeeded rows generated in the table"
            )
    for scenario in ("load", "priority", "burst"):
        for backend, entry in result["results"].get(scenario, {}).items():
            if "median" in entry:
                notes.append(
                    f"- {scenario} {backend}: capacity from {entry['median']['capacity_from']}"
                )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
