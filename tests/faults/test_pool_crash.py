"""A process-pool task whose child process dies (``os._exit`` or a segfault): the
attempt is recorded as failed (BrokenWorkerProcess), the task is retried per its
policy (2 retries), and the worker process and its pool keep running other tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskcore import State

from . import crash_app
from .harness import Target, Workers, check_outcome, probe

# (number, how, crashes): the first `crashes` runs of the task kill its child process
ONCE = [(n, "exit" if n % 2 else "segv", 1) for n in range(10)]
ALWAYS = [(10, "exit", 3), (11, "segv", 3)]  # more crashes than attempts: dead
FINE = [(n, "exit", 0) for n in range(12, 32)]
AFTER = [(n, "exit", 0) for n in range(32, 40)]


def _pool_crashes(target: Target, log_dir: Path) -> str:
    with (
        probe(target.url) as p,
        Workers(target, log_dir, concurrency=4, processes=2) as workers,
    ):
        ids = p.enqueue(crash_app.crashy, ONCE + ALWAYS + FINE)
        workers.start(1)
        p.wait_terminal(len(ids), 120, workers)
        records = {r.id: r for r in p.records(ids)}
        for tid, (n, how, _) in zip(ids, ONCE, strict=False):
            rec = records[tid]
            assert (rec.state, rec.attempt) == (State.SUCCEEDED, 2), (n, how, rec)
            [error] = rec.errors
            assert error.type == "BrokenWorkerProcess", (how, error)
            assert "process-pool child running task" in error.message
            assert "died before returning" in error.message
        for tid in ids[len(ONCE) : len(ONCE) + len(ALWAYS)]:
            rec = records[tid]
            assert (rec.state, rec.attempt) == (State.DEAD, 3), rec
            assert [e.type for e in rec.errors] == ["BrokenWorkerProcess"] * 3
        for tid in ids[len(ONCE) + len(ALWAYS) :]:
            assert (records[tid].state, records[tid].attempt) == (State.SUCCEEDED, 1)
        # the same worker process, with its pool, goes on running tasks
        workers.assert_alive()
        later = p.enqueue(crash_app.crashy, AFTER)
        p.wait_terminal(len(ids) + len(later), 60, workers)
        assert {r.state for r in p.records(later)} == {State.SUCCEEDED}
        assert workers.started == 1
        assert workers.stop() == [0], workers.logs()
        numbers = [n for n, _, _ in ONCE + FINE + AFTER]
        summary = check_outcome(p, target.ledger, numbers, in_flight=0, succeeded=len(numbers))
        assert not {n for n, _, _ in ALWAYS} & set(target.ledger.runs())
    return summary.line(
        "process-pool-crash",
        target.kind,
        child_deaths=len(ONCE) + 3 * len(ALWAYS),
        dead_lettered=len(ALWAYS),
    )


@pytest.mark.slow
def test_pool_child_crash_redis(redis_target: Target, tmp_path: Path) -> None:
    print(_pool_crashes(redis_target, tmp_path))  # noqa: T201


@pytest.mark.slow
def test_pool_child_crash_postgres(pg_target: Target, tmp_path: Path) -> None:
    print(_pool_crashes(pg_target, tmp_path))  # noqa: T201
