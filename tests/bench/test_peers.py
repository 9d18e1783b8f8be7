"""The peers suite's pure parts: the paced plan's report, merging a scenario's runs,
and the markdown built from a recorded run (benchmarks/peers, docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks._pace import (
    HIGH,
    LOW,
    backlog_max,
    priority_plan,
    priority_report,
    report,
    schedule,
)
from benchmarks.peers.__main__ import _merge
from benchmarks.peers.table import TABLES, markdown, summarise
from benchmarks.report import _fmt

RECORDED = Path(__file__).with_name("peers-run.json")


def test_schedule_runs_the_phases_back_to_back() -> None:
    due = schedule([("a", 1.0, 4.0), ("b", 0.5, 10.0)])
    assert due == [0.0, 0.25, 0.5, 0.75, 1.0, 1.1, 1.2, 1.3, 1.4]


def test_report_per_phase_waits_clearing_and_backlog() -> None:
    phases = [("before", 1.0, 2.0), ("burst", 1.0, 4.0)]
    sent = [100.0 + d for d in schedule(phases)]
    # the burst's calls start 3 s late, the rest 10 ms after they were sent
    start = [t + (3.0 if i >= 2 else 0.01) for i, t in enumerate(sent)]
    out = report(phases, sent, start)
    assert out["count"] == 6
    assert out["before_offered_per_s"] == 2.0
    assert out["before_sent_per_s"] == 2.0
    assert out["burst_sent_per_s"] == 4.0
    assert round(out["before_p99_ms"]) == 10  # type: ignore[arg-type]
    assert round(out["burst_p50_ms"]) == 3000  # type: ignore[arg-type]
    assert out["before_bounded"] == "yes"
    assert out["burst_bounded"] == "no"
    assert out["burst_clear_s"] == 3.0
    assert out["backlog_max"] == 4  # every burst call sent before the first one started


def test_backlog_counts_calls_sent_and_not_started() -> None:
    assert backlog_max([0.0, 1.0, 2.0], [0.5, 1.5, 2.5]) == 1
    assert backlog_max([0.0, 0.1, 0.2], [1.0, 1.0, 1.0]) == 3


def test_priority_plan_floods_the_low_class_and_trickles_the_high_one() -> None:
    due, classes = priority_plan(cap=100.0, seconds=2.0, trickle=5.0)
    assert classes.count(HIGH) == 10
    assert classes.count(LOW) == 100 + 250  # one second of capacity, then 1.25x for 2 s
    assert due == sorted(due)
    assert classes[:100] == [LOW] * 100  # the backlog is sent first, all due at once
    assert {d for d, c in zip(due, classes, strict=True) if c == HIGH} == {
        k / 5.0 for k in range(10)
    }


def test_priority_report_splits_the_high_waits_by_half_and_counts_the_low_backlog() -> None:
    seconds = 2.0
    due = [0.0, 0.0, 0.5, 1.0, 1.5, 1.9]
    classes = [LOW, HIGH, LOW, HIGH, LOW, HIGH]
    sent = [100.0 + d for d in due]
    # high calls wait 10 ms in the first half, 30 ms in the second; low calls 5 s
    waits = {0: 5.0, 1: 0.01, 2: 5.0, 3: 0.03, 4: 5.0, 5: 0.03}
    start = [sent[i] + waits[i] for i in range(len(due))]
    out = priority_report(seconds, due, classes, sent, start)
    assert out["high_tasks"] == 3 and out["low_tasks"] == 3
    assert round(out["high_first_half_p99_ms"]) == 10  # type: ignore[arg-type]
    assert round(out["high_second_half_p99_ms"]) == 30  # type: ignore[arg-type]
    assert round(out["high_rise_p99_x"]) == 3  # type: ignore[arg-type]
    assert round(out["low_p50_ms"]) == 5000  # type: ignore[arg-type]
    assert out["low_backlog_max"] == 3  # no low call started before the last was sent
    assert out["low_backlog_at_end"] == 3


def test_merge_names_the_parts_and_computes_the_speedup() -> None:
    parts = [("", f"_{k}w", {"tasks_per_s": 100.0 * k, "version": "1"}) for k in (1, 2, 4)]
    out = _merge("scaling", parts)
    assert out["tasks_per_s_4w"] == 400.0
    assert out["speedup_2w"] == 2.0
    assert out["version"] == "1"


def test_merge_records_not_applicable_and_fails_on_any_failed_part() -> None:
    na = _merge("realistic", [("io_", "", {"tasks_per_s": 5.0}), ("cpu_", "", {"na": "why"})])
    assert na == {"io_tasks_per_s": 5.0, "cpu": "n/a: why"}
    failed = _merge("load", [("", "_50", {"p99_ms": 1.0}), ("", "_90", {"error": "lost"})])
    assert failed == {"error": "_90: lost"}


def test_table_from_a_recorded_run_has_one_table_per_scenario_and_backend() -> None:
    result = json.loads(RECORDED.read_text())
    result["medians"] = summarise(result)
    text = markdown(result)
    for title, columns in TABLES:
        if {c[0] for c in columns} & {"load", "priority", "scaling", "realistic", "burst"}:
            assert f"### {title}, redis" in text
            assert f"### {title}, postgres" in text
    # the ratio is taskcore's median over the peer's, per column
    med = result["medians"]
    tc = med["taskcore-redis"]["scaling"]["median"]["tasks_per_s_1w"]
    huey = med["huey"]["scaling"]["median"]["tasks_per_s_1w"]
    scaling = text.split("### scaling")[1]
    huey_row = next(x for x in scaling.splitlines() if x.startswith("| huey |"))
    assert huey_row.split(" | ")[2] == _fmt(tc / huey)
    # a scenario a peer cannot run says so instead of a figure
    realistic_pg = text.split("### realistic")[2]
    assert "| n/a |" in realistic_pg
    assert "bounded" in text and "| yes |" in text
    # priority: figures where the library has priorities, n/a where it has none
    prio_redis = text.split("### priority")[1]
    assert next(x for x in prio_redis.splitlines() if x.startswith("| huey |")).count("n/a") == 0
    assert "| arq | n/a |" in prio_redis
    assert "- arq priority: n/a: no job priority in arq's public API" in text
    assert med["pgqueuer"]["priority"]["median"]["high_second_half_p99_ms"] > 0
