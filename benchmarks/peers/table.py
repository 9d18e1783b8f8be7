"""Medians and the markdown table of a peers run (ratios are taskcore / peer)."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.report import _fmt, speed_line

# one table per scenario group and backend: (title, columns); a column is (scenario, key,
# label, with a "tc / peer" ratio column)
Column = tuple[str, str, str, bool]
TABLES: list[tuple[str, list[Column]]] = [
    (
        "burn-down, bulk enqueue, latency at a fixed rate, idle RSS (scenarios 1, 2, 3, 9)",
        [
            ("burn-down", "tasks_per_s", "burn-down tasks/s", True),
            ("burn-down", "bulk_tasks_per_s", "bulk enqueue tasks/s", True),
            ("latency", "p50_ms", "p50 ms", False),
            ("latency", "p95_ms", "p95 ms", False),
            ("latency", "p99_ms", "p99 ms", True),
            ("latency", "rss_mb", "idle RSS MB", True),
            # the whole worker: a forked child's RSS leaves out the parent's (Dramatiq)
            ("latency", "tree_rss_mb", "worker tree RSS MB", True),
            ("latency", "idle_wakeups_per_s", "idle wake-ups/s", True),
            ("latency", "idle_cpu_ms_per_s", "idle CPU ms/s", False),
        ],
    ),
    (
        "load: enqueues paced at 50% and 90% of the target's capacity (scenario 4)",
        [
            ("load", "capacity_per_s", "capacity/s", False),
            ("load", "producer_api_50", "producer", False),
            *(
                col
                for pct in (50, 90)
                for col in (
                    ("load", f"sent_per_s_{pct}", f"{pct}%: sent/s", False),
                    ("load", f"sent_pct_{pct}", "% of asked", False),
                    ("load", f"p50_ms_{pct}", "p50 ms", False),
                    ("load", f"p99_ms_{pct}", "p99 ms", True),
                    ("load", f"bounded_{pct}", "bounded", False),
                )
            ),
        ],
    ),
    (
        "priority: a low-priority flood at 1.25x capacity, high-priority calls trickling in "
        "(scenario 5); high waits in the first and second half of the run, flat = good",
        [
            ("priority", "capacity_per_s", "capacity/s", False),
            ("priority", "producer_api", "producer", False),
            ("priority", "sent_per_s", "sent/s", False),
            ("priority", "sent_pct", "% of asked", False),
            ("priority", "high_first_half_p50_ms", "high 1st half p50 ms", False),
            ("priority", "high_first_half_p99_ms", "p99 ms", False),
            ("priority", "high_second_half_p50_ms", "high 2nd half p50 ms", False),
            ("priority", "high_second_half_p95_ms", "p95 ms", False),
            ("priority", "high_second_half_p99_ms", "p99 ms", True),
            ("priority", "low_p50_ms", "low p50 ms", False),
            ("priority", "low_backlog_max", "low backlog max", False),
            ("priority", "low_backlog_at_end", "low backlog at end", False),
        ],
    ),
    (
        "scaling: burn-down by 1, 2 and 4 worker processes (scenario 7)",
        [
            *(("scaling", f"tasks_per_s_{k}w", f"{k} worker(s) tasks/s", True) for k in (1, 2, 4)),
            ("scaling", "speedup_2w", "speed-up 2", False),
            ("scaling", "speedup_4w", "speed-up 4", False),
        ],
    ),
    (
        "realistic tasks, burn-down tasks/s (scenario 8)",
        [
            ("realistic", "io_tasks_per_s", "10 ms sleep", True),
            ("realistic", "cpu_tasks_per_s", "50 ms CPU, process pool", True),
            ("realistic", "payload_100B_tasks_per_s", "100 B payload", True),
            ("realistic", "payload_10KB_tasks_per_s", "10 KB", True),
            ("realistic", "payload_1MB_tasks_per_s", "1 MB", True),
            # every target on the peers' clock (taskcore's own starts at the worker's start)
            ("realistic", "payload_1MB_first_to_last_per_s", "1 MB, first→last body", True),
        ],
    ),
    (
        "burst: ten times the base rate for a window (scenario 6)",
        [
            ("burst", "capacity_per_s", "capacity/s", False),
            ("burst", "before_sent_per_s", "base sent/s", False),
            ("burst", "producer_api", "producer", False),
            ("burst", "burst_sent_per_s", "burst sent/s", False),
            ("burst", "burst_sent_pct", "% of asked", False),
            ("burst", "before_p99_ms", "p99 before ms", False),
            ("burst", "burst_p99_ms", "p99 burst ms", True),
            ("burst", "rise_p99_x", "rise x", False),
            ("burst", "burst_clear_s", "clear after burst s", True),
        ],
    ),
]
# a text in place of a missing figure: the "n/a: why" a scenario recorded (a whole
# scenario's under "na")
NOT_APPLICABLE = {"cpu_tasks_per_s": "cpu"}
SHORT_PCT = 95.0  # a paced run whose producers sent less than this % of the asked rate
# the paced scenarios' "% of asked" figures: (scenario, key, what)
SENT_PCT = [
    ("load", "sent_pct_50", "load 50%"),
    ("load", "sent_pct_90", "load 90%"),
    ("priority", "sent_pct", "priority"),
    ("burst", "before_sent_pct", "burst, base"),
    ("burst", "burst_sent_pct", "burst, the burst"),
]
TASKCORE = {"redis": "taskcore-redis", "postgres": "taskcore-pg"}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per target and scenario: the median of every figure over the successful runs."""
    out: dict[str, Any] = {}
    for target, per in result["runs"].items():
        for scenario, runs in per.items():
            ok = [r for r in runs if "error" not in r]
            keys = {k for r in ok for k, v in r.items() if isinstance(v, (int, float))}
            texts = {k for r in ok for k, v in r.items() if isinstance(v, str)} - {"version"}
            median: dict[str, Any] = {
                k: statistics.median(r[k] for r in ok if k in r) for k in keys
            }
            for k in texts:  # "yes" / "no", "n/a: ...": one value, or each repeat's
                seen = [str(r[k]) for r in ok if k in r]
                median[k] = seen[0] if len(set(seen)) == 1 else " / ".join(seen)
            out.setdefault(target, {})[scenario] = {
                "median": median,
                "values": {k: [r.get(k) for r in ok] for k in keys},
                "version": next((r["version"] for r in ok if "version" in r), None),
                "ok": len(ok),
                "failed": len(runs) - len(ok),
                "errors": [r["error"] for r in runs if "error" in r],
            }
    return out


def _backend(result: dict[str, Any], target: str) -> str:
    if target in TASKCORE.values():
        return "redis" if target == "taskcore-redis" else "postgres"
    return str(result["peers"][target]["backend"])


def _cell(summary: dict[str, Any] | None, key: str) -> Any:
    if not summary:
        return None
    median = summary["median"]
    value = median.get(key, median.get(NOT_APPLICABLE.get(key, ""), median.get("na")))
    return "n/a" if isinstance(value, str) and value.startswith("n/a") else value


def _table(result: dict[str, Any], title: str, columns: list[Column], backend: str) -> list[str]:
    med = result["medians"]
    scenarios = {c[0] for c in columns}
    targets = [t for t in med if _backend(result, t) == backend and scenarios & set(med[t])]
    if not targets:
        return []
    base = med.get(TASKCORE[backend], {})
    head = ["library"]
    for _scenario, _key, label, ratio in columns:
        head += [label, "tc / peer"] if ratio else [label]
    lines = ["", f"### {title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|---|" + "---:|" * (len(head) - 1))
    for target in targets:
        row = ["taskcore" if target in TASKCORE.values() else target]
        for scenario, key, _label, ratio in columns:
            value = _cell(med[target].get(scenario), key)
            row.append(_fmt(value) if isinstance(value, (int, float)) else str(value or "—"))
            if ratio:
                ref = _cell(base.get(scenario), key)
                both = isinstance(ref, (int, float)) and isinstance(value, (int, float))
                row.append(_fmt(ref / value) if both and value else "—")
        notes = [
            f"{sc}: {s['failed']} of {s['ok'] + s['failed']} failed"
            for sc, s in med[target].items()
            if sc in scenarios and s["failed"]
        ]
        if notes:
            row[0] += " (" + "; ".join(notes) + ")"
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _settings(c: dict[str, Any], scenarios: set[str]) -> str:
    """What the scenarios 4-8 ran with (the JSON has every option)."""
    parts = []
    if scenarios & {"load", "priority", "burst"}:
        tick = c.get("tick_ms", 0)  # older runs: single enqueues from the driver
        parts.append(f"producers (load, priority, burst): {c.get('producer_procs', 0)} "
                     f"process(es) of {c.get('producers', 4)} coroutines each (0: the driver), "
                     + (f"one bulk enqueue per {tick:g} ms tick and class where the library "
                        "has a public bulk API (column producer), else single enqueues"
                        if tick else "single enqueues"))  # fmt: skip
    if "load" in scenarios:
        parts.append(f"load: {c['load_seconds']:g} s per level, one worker of {c['concurrency']} "
                     "slots; bounded = cleared within 1 s of the last enqueue")  # fmt: skip
    if "priority" in scenarios:
        parts.append(f"priority: one second of capacity of low calls at once, then low at "
                     f"1.25 x capacity and high at {c.get('trickle', 20):g}/s for "
                     f"{c.get('priority_seconds', 8):g} s; one worker of "
                     f"{c['concurrency']} slots")  # fmt: skip
    if "scaling" in scenarios:
        parts.append(f"scaling: {c['scale_n']:,} no-ops, {c['concurrency']} slots per worker")
    if "realistic" in scenarios:
        parts.append(f"realistic: {c['realistic_concurrency']} slots, {c['io_n']:,} sleep "
                     f"tasks, {c['cpu_n']:,} CPU tasks, {c['blob_n']:,} / "
                     f"{max(1, c['blob_n'] * 2 // 5):,} / {max(5, c['blob_n'] // 100):,} "
                     "payloads of 100 B / 10 KB / 1 MB")  # fmt: skip
    if "burst" in scenarios:
        parts.append(f"burst: {c['burst_calm']:g} s at {c['burst_base']:g} x capacity, "
                     f"{c['burst_seconds']:g} s at ten times that, {c['burst_calm']:g} s at "
                     "the base again")  # fmt: skip
    return "Scenarios 4-8: " + "; ".join(parts) + "."


def markdown(result: dict[str, Any]) -> str:
    m, c, med = result["machine"], result["config"], result["medians"]
    versions = {
        t: next((s["version"] for s in per.values() if s["version"]), None)
        for t, per in med.items()
    }
    lines = [
        f"# taskcore vs peers — {m['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}; "
        f"Python {m['python']}; Redis {m['redis_server']}; PostgreSQL {m['postgres_server']}; "
        f"taskcore {m['taskcore']} ({m['taskcore_source']}), redis-py {m['redis-py']}, "
        f"psycopg {m['psycopg']}.",
        "",
        *(
            [speed_line(m["host_speed_s"]) + " Readings before each repeat.", ""]
            if m.get("host_speed_s")
            else []
        ),
        *_steal_lines(result),
        f"Command: `{result['command']}`. Medians of {c['repeat']} interleaved repeats; "
        f"N = {c['n']:,} pre-enqueued no-op tasks, ONE worker process with {c['concurrency']} "
        f"slots; latency: {int(c['rate'] * c['seconds'])} single enqueues at {c['rate']:g}/s "
        f"into an idle worker; RSS of the task-running process after {c['idle']:g} s idle"
        + (
            f", then over {c['idle_window']:g} s its wake-ups (context switches of all the "
            "worker's processes and threads) and CPU time (in 10 ms ticks)."
            if c.get("idle_window")
            else "."
        ),
        "",
        "Ratios are taskcore / peer on the same backend: above 1 is better for throughput, "
        "below 1 is better for latency and memory.",
        "",
        "Versions: "
        + ", ".join(
            f"{'taskcore' if t in TASKCORE.values() else t} "
            f"{v or (m['taskcore'] if t in TASKCORE.values() else '(no successful run)')}"
            for t, v in versions.items()
        )
        + ".",
    ]
    scenarios = {sc for per in med.values() for sc in per}
    if scenarios - {"burn-down", "latency"}:
        lines += ["", _settings(c, scenarios)]
    for title, columns in TABLES:
        for backend in ("redis", "postgres"):
            lines += _table(result, f"{title}, {backend}", columns, backend)
    short = []  # every run whose producers fell short, not only the medians
    for t, per in med.items():
        for sc, key, what in SENT_PCT:
            pcts = (per.get(sc) or {}).get("values", {}).get(key, [])
            low = [_fmt(v) + "%" for v in pcts if isinstance(v, (int, float)) and v < SHORT_PCT]
            if low:
                short.append(f"- {t} {what}: the producers sent {', '.join(low)} of the asked "
                             f"rate in {len(low)} of {len(pcts)} runs")  # fmt: skip
    if short:
        lines += ["", f"Offered rate short (under {SHORT_PCT:g}% of the asked rate):", "", *short]
    na = [
        f"- {t} {sc}: {s['median']['na']}"
        for t, per in med.items()
        for sc, s in per.items()
        if str(s["median"].get("na", "")).startswith("n/a")
    ]
    if na:
        lines += ["", "Not applicable:", "", *na]
    errors = [
        f"- {t} {sc}: {e[:300]}"
        for t, per in med.items()
        for sc, s in per.items()
        for e in s["errors"]
    ]
    if errors:
        lines += ["", "Failed runs:", "", *errors]
    return "\n".join(lines) + "\n"


def _steal_lines(result: dict[str, Any]) -> list[str]:
    """One line on the CPU time the hypervisor gave to other machines during the runs
    (recorded since the ninth session; older results have none)."""
    steals = [
        (run["host_steal_pct"], f"{target} {scenario} repeat {i + 1}")
        for target, per in result["runs"].items()
        for scenario, runs in per.items()
        for i, run in enumerate(runs)
        if "host_steal_pct" in run
    ]
    if not steals:
        return []
    top, where = max(steals)
    median = statistics.median(pct for pct, _ in steals)
    return [
        f"Hypervisor steal (`/proc/stat`) during the runs: median {median:.1f} % of the "
        f"CPU time, highest {top:.1f} % ({where}).",
        "",
    ]
