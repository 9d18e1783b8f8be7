"""The peers suite's pure parts: the paced plan's report, merging a scenario's runs,
the markdown built from a recorded run, and the paced scenarios' producers: batches,
producer processes and their ledgers (benchmarks/peers, benchmarks/_produce.py,
docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks._common import worker_queues
from benchmarks._pace import (
    HIGH,
    LOW,
    backlog_max,
    pace,
    pace_ticks,
    priority_plan,
    priority_report,
    report,
    schedule,
    ticks,
)
from benchmarks._proc import cpu_times, idle_activity, process_cpu, steal_pct, tree
from benchmarks._produce import ProducerFailed, check_ledgers, send_calls, share, write_plan
from benchmarks._produce import run as run_producers
from benchmarks.apps import QUEUE
from benchmarks.peers.__main__ import ROOT, _merge
from benchmarks.peers._kit import Config, Producers
from benchmarks.peers._kit import produce as kit_produce
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
    # a peer's burn-down rate is on the first→last-body clock: also set under that name
    assert na == {"io_tasks_per_s": 5.0, "io_first_to_last_per_s": 5.0, "cpu": "n/a: why"}
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
    # the host's speed, read before each repeat, is reported when the run recorded it
    assert "Host speed" not in text
    result["machine"]["host_speed_s"] = [0.452, 0.61]
    assert "a loop of 5 million additions took 0.452, 0.61 s" in markdown(result)
    # and so is the hypervisor's steal during the runs, with the run that had the most
    assert "steal" not in markdown(result)
    result["runs"]["huey"]["scaling"][0]["host_steal_pct"] = 30.0
    result["runs"]["taskcore-redis"]["scaling"][0]["host_steal_pct"] = 2.0
    result["runs"]["taskcore-pg"]["scaling"][0]["host_steal_pct"] = 4.0
    assert (
        "Hypervisor steal (`/proc/stat`) during the runs: median 4.0 % of the CPU time, "
        "highest 30.0 % (huey scaling repeat 1)." in markdown(result)
    )


def test_steal_is_the_share_of_the_cpu_time_given_to_other_machines() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 50, 800, 0, 0, 0, 50, 7, 0]
    after = [130, 0, 60, 850, 0, 0, 0, 60, 9, 0]  # +30 +10 +50 +10 steal, of 100
    assert steal_pct(before, after) == 10.0
    assert steal_pct(before, before) == 0.0
    now = cpu_times()
    assert len(now) >= 8 and steal_pct(now, cpu_times()) >= 0.0


def test_process_cpu_counts_the_cpu_of_the_processes_of_a_name() -> None:
    # a child with a name of its own burns CPU for a while; the figure for that name
    # grows by at least part of it, and a name no process has counts nothing
    name = f"tcburn{os.getpid() % 10000}"
    code = (
        f"import ctypes, time; ctypes.CDLL(None).prctl(15, b'{name}', 0, 0, 0); "  # PR_SET_NAME
        "print('ready', flush=True); end = time.process_time() + 0.5\n"
        "while time.process_time() < end: pass\nprint('done', flush=True); input()"
    )

    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        before = process_cpu(name)
        assert child.stdout.readline().strip() == "done"
        assert process_cpu(name) - before >= 0.3
        assert process_cpu("no-such-process-name") == 0.0
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


# -- the producers of the paced scenarios (benchmarks/_produce.py) ---------------------------
PAST = 0.0  # offset 0 long gone: every call is overdue and sent at once


def test_ticks_batch_the_calls_of_a_tick_and_class_in_due_order() -> None:
    due = [0.0, 0.004, 0.012, 0.013, 0.015, 0.031]
    classes = [LOW, HIGH, LOW, LOW, HIGH, LOW]
    batches = ticks(due, 0.01, key=classes.__getitem__)
    assert batches == [(0.0, [0]), (0.0, [1]), (0.01, [2, 3]), (0.01, [4]), (0.03, [5])]
    # a producer's share only, and at most `most` calls a batch
    assert ticks(due, 0.01, ids=[0, 2, 4]) == [(0.0, [0]), (0.01, [2, 4])]
    assert [b for _at, b in ticks([0.0] * 5, 0.01, most=2)] == [[0, 1], [2, 3], [4]]


def test_pace_and_pace_ticks_send_only_their_share_and_stamp_it() -> None:
    due = [0.0, 0.0, 0.0, 0.0, 0.0]
    singles: list[int] = []

    async def one(i: int) -> None:
        singles.append(i)

    sent = asyncio.run(pace(due, one, producers=2, ids=[1, 3], start_at=PAST))
    assert sorted(singles) == [1, 3]
    assert [t > 0 for t in sent] == [False, True, False, True, False]

    batches: list[list[int]] = []

    async def many(ids: list[int]) -> None:
        batches.append(ids)

    sent = asyncio.run(pace_ticks(ticks(due, 0.01, ids=[0, 2, 4]), 5, many, start_at=PAST))
    assert batches == [[0, 2, 4]]
    assert [t > 0 for t in sent] == [True, False, True, False, True]


def test_send_calls_uses_the_bulk_call_only_with_a_tick_and_one_class_a_batch() -> None:
    due = [0.0, 0.0, 0.0, 0.0]
    classes = [LOW, HIGH, LOW, HIGH]
    calls: list[object] = []

    async def one(i: int) -> None:
        calls.append(i)

    async def many(ids: list[int]) -> None:
        calls.append(tuple(ids))

    asyncio.run(send_calls(due, None, 1, 0.01, one, many, classes, PAST))
    assert sorted(calls, key=str) == [(0, 2), (1, 3)]
    calls.clear()
    asyncio.run(send_calls(due, None, 1, 0.0, one, many, classes, PAST))  # no tick
    assert sorted(calls, key=str) == [0, 1, 2, 3]
    calls.clear()
    asyncio.run(send_calls(due, [1, 2], 1, 0.01, one, None, classes, PAST))  # no bulk API
    assert sorted(calls, key=str) == [1, 2]


def test_the_producers_shares_cover_every_call_once() -> None:
    shares = [share(10, k, 3) for k in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(10))
    assert shares[1] == [1, 4, 7]


def test_check_ledgers_fails_on_a_lost_repeated_or_foreign_call() -> None:
    assert check_ledgers(3, [{0: 1.0, 2: 3.0}, {1: 2.0}]) == [1.0, 2.0, 3.0]
    for ledgers, says in [
        ([{0: 1.0}, {1: 2.0}], "sent 2 of 3"),
        ([{0: 1.0, 1: 1.0}, {1: 2.0, 2: 2.0}], "another one sent"),
        ([{0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}], "outside 0..2"),
    ]:
        with pytest.raises(ProducerFailed, match=says):
            check_ledgers(3, ledgers)


CHILD = """
import asyncio, sys
from pathlib import Path
from benchmarks import _produce

plan, part, parts, skip = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
log = open(f"{plan}.{part}.log", "w")

async def one(i):
    log.write(f"one {i}\\n")

async def many(ids):
    log.write(f"many {' '.join(map(str, ids))}\\n")
    if skip in ids:  # a producer that loses a call in its ledger
        raise SystemExit(3)

tick = 0.01 if len(sys.argv) > 5 else 0.0
asyncio.run(_produce.child(plan, part, parts, 2, tick, one, many))
log.close()
"""


def _producers(tmp_path: Path, n: int, parts: int, *extra: str) -> list[float]:
    plan = tmp_path / "plan.json"
    write_plan(plan, [0.0] * n, [LOW if i % 2 else HIGH for i in range(n)])

    def argv(part: int) -> list[str]:
        return [sys.executable, "-c", CHILD, str(plan), str(part), str(parts), *extra]

    return asyncio.run(run_producers(argv, parts, n, 60, cwd=ROOT))


def test_producer_processes_send_their_shares_and_the_union_of_their_ledgers_is_checked(
    tmp_path: Path,
) -> None:
    sent = _producers(tmp_path, 7, 3, "-1")
    assert len(sent) == 7 and all(t > 0 for t in sent)
    logs = [(tmp_path / f"plan.json.{k}.log").read_text().split() for k in range(3)]
    assert sorted(int(x) for log in logs for x in log if x != "one") == list(range(7))
    assert sorted(logs[1]) == ["1", "4", "one", "one"]  # its share, single enqueues (no tick)
    # with a tick: one bulk call per class in each producer
    _producers(tmp_path, 6, 2, "-1", "tick")
    assert (tmp_path / "plan.json.0.log").read_text().split("\n")[:2] == ["many 0 2 4", ""]
    assert (tmp_path / "plan.json.1.log").read_text() == "many 1 3 5\n"


def test_a_failed_producer_process_fails_the_run(tmp_path: Path) -> None:
    with pytest.raises(ProducerFailed, match="producer 1 failed"):
        _producers(tmp_path, 6, 2, "3", "tick")


class _BatchAdapter:
    """A peer adapter with a priority and a bulk API, recording what it was sent."""

    batch_api = "Thing.enqueue_many"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def enqueue_one(self, i: int) -> None:
        self.calls.append(("one", i, None))

    def enqueue_prio(self, i: int, high: bool) -> None:
        self.calls.append(("prio", i, high))

    async def enqueue_batch(self, ids: list[int], high: bool | None) -> None:
        self.calls.append(("batch", tuple(ids), high))


def test_the_kit_sends_batches_at_each_class_priority_and_says_which_api(tmp_path: Path) -> None:
    adapter = _BatchAdapter()
    due = [0.0, 0.0, 0.0, 0.005]
    classes = [LOW, HIGH, LOW, HIGH]
    config = Config("", "", "q", 1, str(tmp_path / "ledger"))
    ticked = Producers(procs=0, coroutines=2, tick=0.01)
    sent = asyncio.run(kit_produce(adapter, config, due, classes, ticked, tmp_path, 60))  # type: ignore[arg-type]
    assert all(t > 0 for t in sent)
    assert sorted(adapter.calls, key=str) == [("batch", (0, 2), False), ("batch", (1, 3), True)]
    assert ticked.describe(adapter)["producer_api"] == "Thing.enqueue_many per 10 ms tick"  # type: ignore[arg-type]
    adapter.calls.clear()
    single = Producers(procs=0, coroutines=1, tick=0.0)
    asyncio.run(kit_produce(adapter, config, due, classes, single, tmp_path, 60))  # type: ignore[arg-type]
    assert sorted(adapter.calls, key=str) == [
        ("prio", 0, False), ("prio", 1, True), ("prio", 2, False), ("prio", 3, True)
    ]  # fmt: skip
    assert single.api(adapter) == "single enqueues"  # type: ignore[arg-type]
    asyncio.run(kit_produce(adapter, config, due, None, single, tmp_path, 60))  # type: ignore[arg-type]
    assert ("one", 3, None) in adapter.calls


def test_the_table_names_the_producer_and_reports_a_short_offered_rate() -> None:
    result = json.loads(RECORDED.read_text())
    for target, api in (("huey", "single enqueues"), ("taskcore-redis", "enqueue_many")):
        for run in result["runs"][target]["load"]:
            run |= {"producer_api_50": api, "sent_pct_50": 99.0, "sent_pct_90": 99.0}
    result["runs"]["huey"]["load"][0]["sent_pct_90"] = 60.0  # one run fell short
    result["medians"] = summarise(result)
    text = markdown(result)
    load = text.split("### load")[1]
    assert "| producer |" in load and "% of asked" in load
    huey_row = next(x for x in load.splitlines() if x.startswith("| huey |"))
    assert "| single enqueues |" in huey_row and "| 99.0 |" in huey_row  # the median
    short = text.split("Offered rate short")[1].split("\n\n")[1]
    assert short.startswith("- huey load 90%: the producers sent 60.0% of the asked rate in 1 of")
    assert "taskcore-redis load" not in short


def test_idle_activity_counts_the_wake_ups_of_the_whole_process_tree() -> None:
    # the root sleeps; its child wakes up every 10 ms: the tree's count is the child's.
    # The child says it is ticking (on the stdout it inherits) before it is measured.
    ticking = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.01)"
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {ticking!r}])\n"
        "time.sleep(60)"
    )

    async def measure(code: str) -> tuple[int, dict[str, float]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert await proc.stdout.readline() == b"ready\n"
            return len(tree(proc.pid)), await idle_activity(proc.pid, 0.5)
        finally:
            for pid in tree(proc.pid)[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            await proc.wait()

    sleeping = "import time\nprint('ready', flush=True)\ntime.sleep(60)"
    n_alone, alone = asyncio.run(measure(sleeping))
    n_tree, with_child = asyncio.run(measure(parent))
    assert (n_alone, n_tree) == (1, 2)
    assert alone["idle_wakeups_per_s"] < 10  # nominally 0
    assert with_child["idle_wakeups_per_s"] > 40  # nominally 100
    assert with_child["idle_cpu_ms_per_s"] >= 0 and with_child["idle_threads_ended"] == 0


def test_a_benchmark_worker_waits_on_idle_queues_before_the_tasks_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TASKCORE_BENCH_IDLE_QUEUES", raising=False)
    assert worker_queues() == [QUEUE]
    monkeypatch.setenv("TASKCORE_BENCH_IDLE_QUEUES", "2")
    assert worker_queues() == ["idle1", "idle2", QUEUE]
