"""Worker recycling with real processes on Redis and PostgreSQL.

``taskcore worker --workers 2`` runs two worker processes under the supervisor; the
task leaks the memory it allocates. Each worker retires after ``--max-tasks`` tasks, or
once its resident memory reaches ``--max-rss``; the supervisor starts a replacement.
Every task must run exactly once (retiring loses nothing and re-runs nothing), each
process must respect its limit, and a crashed worker process is replaced too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import psutil
import psycopg
import pytest

import redis as redis_sync
from taskcore import App, State

from . import recycle_app

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20

Rows = Callable[[], list[tuple[int, int, int]]]  # (task number, pid, rss at start)


@pytest.fixture(params=["redis", "postgres"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Rows]]:
    """(backend URL, ledger name, reader of the ledger's rows) on an isolated prefix
    or schema, removed afterwards."""
    if request.param == "redis":
        base = request.getfixturevalue("redis_url")
        prefix = f"tcrecycle{uuid.uuid4().hex[:10]}"
        client = redis_sync.Redis.from_url(base, decode_responses=True)
        ledger = f"{prefix}:ledger"

        def redis_rows() -> list[tuple[int, int, int]]:
            return [_row(r) for r in client.lrange(ledger, 0, -1)]

        yield f"{base}?prefix={prefix}", ledger, redis_rows
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = f"tcrecycle_{uuid.uuid4().hex[:10]}"
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".ledger ("row" text NOT NULL)')
        conn.execute(f'CREATE TABLE "{schema}".ledger_markers (marker text PRIMARY KEY)')

        def pg_rows() -> list[tuple[int, int, int]]:
            rows = conn.execute(f'SELECT "row" FROM "{schema}".ledger').fetchall()  # type: ignore[arg-type]
            return [_row(r[0]) for r in rows]

        yield f"{dsn}?schema={schema}", f'"{schema}".ledger', pg_rows
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


def _row(text: str) -> tuple[int, int, int]:
    n, pid, rss = text.split(":")
    return int(n), int(pid), int(rss)


class Supervised:
    """``taskcore worker --workers K`` as a child process; its log goes to a file."""

    def __init__(self, url: str, ledger: str, options: Sequence[str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="tc-recycle-", suffix=".log", delete=False)
        env = {
            **os.environ,
            "TASKCORE_FAULT_URL": url,
            "TASKCORE_FAULT_LEDGER": ledger,
            "PYTHONPATH": str(ROOT),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskcore",
                "worker",
                "tests.faults.recycle_app:app",
                "--lease",
                "2",
                "--maintenance-interval",
                "0.5",
                "--grace",
                "20",
                "--log-level",
                "INFO",
                *options,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the supervisor; it stops its workers and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self.log.close()


def _enqueue(url: str, task: str, calls: list[tuple[Any, ...]]) -> list[str]:
    async def run() -> list[str]:
        app = App(url)
        app.tasks.update(recycle_app.app.tasks)
        async with app:
            handles = await app.enqueue_many(getattr(recycle_app, task), calls)
        return [h.id for h in handles]

    return anyio.run(run)


async def _states(url: str) -> dict[State, int]:
    async with App(url) as app:
        [stats] = await app.stats(["default"])
        return dict(stats.states)


def _drained(url: str, n: int, sup: Supervised, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (states := anyio.run(_states, url)).get(State.SUCCEEDED, 0) < n:
        assert sup.proc.poll() is None, f"the supervisor exited:\n{sup.text()[-3000:]}"
        assert time.monotonic() < deadline, f"{states}\n{sup.text()[-3000:]}"
        time.sleep(0.2)  # bounded poll of the observable end state
    assert states.get(State.RUNNING, 0) == 0 and states.get(State.QUEUED, 0) == 0


def _check_exactly_once(rows: list[tuple[int, int, int]], n: int) -> Counter[int]:
    runs = Counter(r[0] for r in rows)
    assert set(runs) == set(range(n)), f"lost: {sorted(set(range(n)) - set(runs))[:10]}"
    assert max(runs.values()) == 1, f"ran twice: {[k for k, v in runs.items() if v > 1][:10]}"
    return Counter(r[1] for r in rows)  # tasks per process


@pytest.mark.slow
def test_workers_recycle_after_max_tasks(target: tuple[str, str, Rows]) -> None:
    url, ledger, rows = target
    n, per_process = 120, 20
    _enqueue(url, "leak", [(i, 64) for i in range(n)])
    sup = Supervised(
        url, ledger, ["--workers", "2", "--max-tasks", str(per_process), "--concurrency", "4"]
    )
    try:
        _drained(url, n, sup)
    finally:
        code = sup.stop()
    assert code == 0
    per_pid = _check_exactly_once(rows(), n)
    assert len(per_pid) >= n // per_process  # at least 6 processes took part
    assert max(per_pid.values()) <= per_process  # none ran more than its share
    assert sup.text().count("retired after") >= n // per_process - 2
    assert not any(psutil.pid_exists(pid) for pid in per_pid)  # all gone, none orphaned
    kind = url.split(":")[0]
    report = f"{kind}: {n} tasks, {len(per_pid)} processes, runs each {sorted(per_pid.values())}"
    print(report)  # noqa: T201


@pytest.mark.slow
def test_workers_recycle_at_the_rss_ceiling(target: tuple[str, str, Rows]) -> None:
    url, ledger, rows = target
    n, leak_mib, ceiling = 80, 8, 192 * MiB
    _enqueue(url, "leak", [(i, leak_mib * 1024, 0.25) for i in range(n)])
    sup = Supervised(url, ledger, ["--workers", "2", "--max-rss", "192MB", "--concurrency", "2"])
    try:
        _drained(url, n, sup)
    finally:
        code = sup.stop()
    assert code == 0
    found = rows()
    per_pid = _check_exactly_once(found, n)
    # 640 MiB leaked in all: two processes cannot hold it under 192 MiB each (a worker
    # starts at about 42 MiB, so each holds at most ~19 of these tasks)
    assert len(per_pid) >= 4
    peak = max(r[2] for r in found)
    # a task starts at most one memory check (0.5 s: a few 8 MiB tasks) past the ceiling
    assert peak < ceiling + 64 * MiB, f"peak RSS at a task's start {peak / MiB:.0f} MiB"
    assert "reached max_rss 192 MiB" in sup.text()
    kind = url.split(":")[0]
    report = (
        f"{kind}: {n} tasks x {leak_mib} MiB leaked, {len(per_pid)} processes, "
        f"peak RSS at a task's start {peak / MiB:.0f} MiB (ceiling 192 MiB)"
    )
    print(report)  # noqa: T201


@pytest.mark.slow
def test_supervisor_replaces_a_crashed_worker(target: tuple[str, str, Rows]) -> None:
    url, ledger, _ = target
    [task_id] = _enqueue(url, "crash_once", [("m1",)])
    sup = Supervised(url, ledger, ["--workers", "1"])
    try:
        _drained(url, 1, sup)  # the replacement ran it once its lease expired
    finally:
        code = sup.stop()
    assert code == 0
    assert "exited with 3" in sup.text() and "starting another" in sup.text()

    async def record() -> Any:
        async with App(url) as app:
            return await app.backend.get(task_id)

    rec = anyio.run(record)
    assert rec.state is State.SUCCEEDED and [e.type for e in rec.errors] == ["LeaseExpired"]
