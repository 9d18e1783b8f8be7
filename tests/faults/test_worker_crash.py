"""Worker crash: worker processes drain tasks while the test SIGKILLs one of them every
second and starts a replacement. Every accepted task must end succeeded and run at
least once (the ledger holds every number), nothing may stay running, and the tasks
that ran twice are no more than the killed workers held when they died."""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import pytest

from taskcore.states import TERMINAL

from . import crash_app
from .harness import Target, Workers, check_outcome, probe, wait_for

N = 20_000  # half fast, half 50 ms
WORKERS = 4
CONCURRENCY = 20
KILL_EVERY = 1.0  # seconds
LEASE = 2.0
DRAIN_TIMEOUT = 200.0


def _crash_at_scale(target: Target, log_dir: Path) -> str:
    numbers = list(range(N))
    with (
        probe(target.url) as p,
        Workers(target, log_dir, concurrency=CONCURRENCY, lease=LEASE) as workers,
    ):
        ids = p.enqueue(crash_app.work, [(n, n % 2 == 0) for n in numbers])
        number_of = {tid: n for n, tid in enumerate(ids)}
        workers.start(WORKERS)
        rng = random.Random(7)
        kills: list[tuple[float, list[str]]] = []  # (when, what the victim held)
        started = time.monotonic()
        while sum(p.states()[s] for s in TERMINAL) < N:
            assert time.monotonic() - started < DRAIN_TIMEOUT, (p.states(), workers.logs())
            time.sleep(KILL_EVERY)  # the pace of the fault injection, not synchronisation
            victim = workers.kill_random(rng)
            killed_at = time.time()
            # what the dead worker held: its leases run out and the tasks run again
            held = [r.id for r in p.running() if f":{victim.pid}:" in (r.worker or "")]
            kills.append((killed_at, held))
            workers.start()
        elapsed = time.monotonic() - started
        in_flight = sum(len(held) for _, held in kills)
        summary = check_outcome(p, target.ledger, numbers, in_flight=in_flight)
        # when did each task a killed worker held start again (its last attempt)? A
        # few ended with attempt 1: the server still ran the settle the worker had
        # sent just before it died
        recovery = []
        for killed_at, held in kills:
            for rec in p.records(held):
                if rec.attempt >= 2:
                    assert rec.started_at is not None and rec.errors[0].type == "LeaseExpired"
                    recovery.append(rec.started_at - killed_at)
    runs = target.ledger.runs()
    held = {number_of[tid] for _, ids in kills for tid in ids}
    twice = {n for n, count in runs.items() if count > 1}
    return summary.line(
        "worker-crash",
        target.kind,
        workers=WORKERS,
        concurrency=CONCURRENCY,
        kills=len(kills),
        reran_not_held_by_a_victim=len(twice - held),
        rerun_after_kill_median=f"{statistics.median(recovery):.2f}s" if recovery else "-",
        rerun_after_kill_max=f"{max(recovery):.2f}s" if recovery else "-",
        lease=f"{LEASE}s",
        elapsed=f"{elapsed:.1f}s",
    )


@pytest.mark.slow
def test_worker_crash_redis(redis_target: Target, tmp_path: Path) -> None:
    print(_crash_at_scale(redis_target, tmp_path))  # noqa: T201


@pytest.mark.slow
def test_worker_crash_postgres(pg_target: Target, tmp_path: Path) -> None:
    print(_crash_at_scale(pg_target, tmp_path))  # noqa: T201


# 50 ms tasks enqueued after the long one. The surviving worker (10 slots) runs at
# most 200 of them a second, so a re-run sent to the back of the queue would wait
# >= ~9 s: more than lease + 5 s whatever the machine's speed.
BACKLOG = 2_000


def _recovery(target: Target, log_dir: Path, backlog: int = 0) -> float:
    """Kill the worker running a long task; return seconds until another worker
    starts it again. With a ``backlog`` of 50 ms tasks enqueued after the long one,
    its re-run must not wait for them: a task whose worker was lost keeps its place."""
    numbers = list(range(backlog))
    with probe(target.url) as p, Workers(target, log_dir, lease=LEASE) as workers:
        [long_id] = p.enqueue(crash_app.long_job, [(1.0,)])
        p.enqueue(crash_app.work, [(n,) for n in numbers])
        workers.start(2)
        first = wait_for(target.ledger.starts, "the long task to start", 60, interval=0.05)
        pid = int(first[0].split(":")[0])
        victim = next(w for w in workers.procs if w.pid == pid)
        workers.procs.remove(victim)
        victim.kill()
        killed_at = time.time()
        victim.wait()
        # backlog tasks the victim held run again too; they bound the duplicates
        held = [r for r in p.running() if f":{pid}:" in (r.worker or "") and r.id != long_id]
        marks = wait_for(
            lambda: [m for m in [target.ledger.starts()] if len(m) >= 2],
            "the killed worker's task to run again",
            120,
            interval=0.05,
        )[0]
        second_pid, second_at = marks[1].split(":")
        assert int(second_pid) != pid
        p.wait_terminal(backlog + 1, 120, workers)
        check_outcome(p, target.ledger, numbers, in_flight=len(held), succeeded=backlog + 1)
        return float(second_at) - killed_at


@pytest.mark.slow
@pytest.mark.parametrize("backlog", [0, BACKLOG], ids=["idle", "backlog"])
def test_recovery_time_redis(redis_target: Target, tmp_path: Path, backlog: int) -> None:
    took = _recovery(redis_target, tmp_path, backlog)
    print(  # noqa: T201
        f"FAULTS recovery [redis]: backlog={backlog}, re-run {took:.2f} s after the kill "
        f"(lease {LEASE} s)"
    )
    assert took < LEASE + 5


@pytest.mark.slow
@pytest.mark.parametrize("backlog", [0, BACKLOG], ids=["idle", "backlog"])
def test_recovery_time_postgres(pg_target: Target, tmp_path: Path, backlog: int) -> None:
    took = _recovery(pg_target, tmp_path, backlog)
    print(  # noqa: T201
        f"FAULTS recovery [postgres]: backlog={backlog}, re-run {took:.2f} s after the kill "
        f"(lease {LEASE} s)"
    )
    assert took < LEASE + 5


GRACEFUL_N = 1500


def _graceful(target: Target, log_dir: Path) -> None:
    """SIGTERM a worker mid-run: it finishes what it runs, so nothing is lost and
    nothing that finished runs again."""
    numbers = list(range(GRACEFUL_N))
    with probe(target.url) as p, Workers(target, log_dir, lease=LEASE) as workers:
        p.enqueue(crash_app.work, [(n,) for n in numbers])
        workers.start(2)
        p.wait_succeeded(GRACEFUL_N // 4, 60)
        stopping = workers.procs.pop(0)
        stopping.terminate()
        assert stopping.wait(timeout=30) == 0
        workers.start()
        p.wait_terminal(GRACEFUL_N, 60, workers)
        assert workers.stop() == [0, 0]
        check_outcome(p, target.ledger, numbers, in_flight=0)


@pytest.mark.slow
def test_sigterm_loses_and_reruns_nothing_redis(redis_target: Target, tmp_path: Path) -> None:
    _graceful(redis_target, tmp_path)


@pytest.mark.slow
def test_sigterm_loses_and_reruns_nothing_postgres(pg_target: Target, tmp_path: Path) -> None:
    _graceful(pg_target, tmp_path)
