"""Medians and the markdown table of a peers run (ratios are taskcore / peer)."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.report import _fmt

# (scenario, key, column label, higher is better)
COLUMNS: list[tuple[str, str, str, bool]] = [
    ("burn-down", "tasks_per_s", "burn-down tasks/s", True),
    ("burn-down", "bulk_tasks_per_s", "bulk enqueue tasks/s", True),
    ("latency", "p50_ms", "p50 ms", False),
    ("latency", "p95_ms", "p95 ms", False),
    ("latency", "p99_ms", "p99 ms", False),
    ("latency", "rss_mb", "idle RSS MB", False),
]
RATIOS = {"tasks_per_s", "bulk_tasks_per_s", "p99_ms", "rss_mb"}
TASKCORE = {"redis": "taskcore-redis", "postgres": "taskcore-pg"}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per target and scenario: the median of every figure over the successful runs."""
    out: dict[str, Any] = {}
    for target, per in result["runs"].items():
        for scenario, runs in per.items():
            ok = [r for r in runs if "error" not in r]
            keys = {k for r in ok for k, v in r.items() if isinstance(v, (int, float))}
            out.setdefault(target, {})[scenario] = {
                "median": {k: statistics.median(r[k] for r in ok if k in r) for k in keys},
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
        f"Command: `{result['command']}`. Medians of {c['repeat']} interleaved repeats; "
        f"N = {c['n']:,} pre-enqueued no-op tasks, ONE worker process with {c['concurrency']} "
        f"slots; latency: {int(c['rate'] * c['seconds'])} single enqueues at {c['rate']:g}/s "
        f"into an idle worker; RSS of the task-running process after {c['idle']:g} s idle.",
        "",
        "Ratios are taskcore / peer on the same backend: above 1 is better for throughput, "
        "below 1 is better for latency and memory.",
    ]
    for backend in ("redis", "postgres"):
        targets = [t for t in med if _backend(result, t) == backend]
        if not targets:
            continue
        base = med.get(TASKCORE[backend], {})
        head = ["library", "version"]
        for _scenario, key, label, _ in COLUMNS:
            head.append(label)
            if key in RATIOS:
                head.append("tc / peer")
        lines += ["", f"### {backend}", "", "| " + " | ".join(head) + " |"]
        lines.append("|---|---|" + "---:|" * (len(head) - 2))
        for target in targets:
            name = "taskcore" if target in TASKCORE.values() else target
            row = [name, versions.get(target) or m["taskcore"]]
            notes = []
            for scenario, key, _label, _ in COLUMNS:
                s = med[target].get(scenario)
                value = s["median"].get(key) if s else None
                row.append(_fmt(value) if value is not None else "—")
                if key in RATIOS:
                    ref = base.get(scenario, {}).get("median", {}).get(key)
                    row.append(_fmt(ref / value) if ref is not None and value else "—")
            for scenario, s in med[target].items():
                if s["failed"]:
                    notes.append(f"{scenario}: {s['failed']} of {s['ok'] + s['failed']} failed")
            if notes:
                row[0] += " (" + "; ".join(notes) + ")"
            lines.append("| " + " | ".join(row) + " |")
    errors = [
        f"- {t} {sc}: {e[:300]}"
        for t, per in med.items()
        for sc, s in per.items()
        for e in s["errors"]
    ]
    if errors:
        lines += ["", "Failed runs:", "", *errors]
    return "\n".join(lines) + "\n"
