"""Worker crash: worker processes drain tasks while the test SIGKILLs one of them at
intervals and starts a replacement. Every accepted task must end succeeded, run at
least once (the ledger holds every id), and nothing may stay running; re-runs are
counted and bounded by the tasks in flight at the kills."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import psycopg
import pytest

import redis as redis_sync
from taskcore import App, State

from . import crash_app

ROOT = Path(__file__).resolve().parents[2]
N = 1500
WORKERS = 3
CONCURRENCY = 10
KILLS = 5
LEASE = 2.0


def _start_worker(url: str, ledger: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TASKCORE_FAULT_URL": url,
        "TASKCORE_FAULT_LEDGER": ledger,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskcore",
            "worker",
            "tests.faults.crash_app:app",
            "--concurrency",
            str(CONCURRENCY),
            "--lease",
            str(LEASE),
            "--grace",
            "5",
            "--maintenance-interval",
            "0.5",
            "--log-level",
            "ERROR",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _states(url: str) -> dict[State, int]:
    async with App(url) as app:
        [stats] = await app.stats(["default"])
        return dict(stats.states)


def _enqueue(url: str) -> None:
    async def run() -> None:
        app = App(url)
        app.tasks.update(crash_app.app.tasks)
        async with app:
            await app.enqueue_many(crash_app.work, [(n,) for n in range(N)])

    anyio.run(run)


def _run_scenario(url: str, ledger: str) -> dict[str, float]:
    _enqueue(url)
    workers = [_start_worker(url, ledger) for _ in range(WORKERS)]
    rng = random.Random(7)
    kills = 0
    started = time.monotonic()
    try:
        while kills < KILLS:
            time.sleep(0.7)  # pacing of the fault injection, not synchronisation
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.append(_start_worker(url, ledger))
        deadline = time.monotonic() + 90
        while True:  # wait for the observable end state, bounded
            states = anyio.run(_states, url)
            if states[State.SUCCEEDED] == N:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
    states = anyio.run(_states, url)
    assert states[State.RUNNING] == 0 and states[State.QUEUED] == 0
    assert states[State.DEAD] == 0 and states[State.SUCCEEDED] == N
    return {"kills": kills, "elapsed": elapsed}


def _check_ledger(runs: dict[int, int], kills: int) -> int:
    assert set(runs) == set(range(N)), f"missing {sorted(set(range(N)) - set(runs))[:10]}"
    duplicates = sum(runs.values()) - N
    # only tasks in flight in a killed worker may run twice
    assert 0 <= duplicates <= kills * CONCURRENCY
    return duplicates


@pytest.fixture
def redis_target(redis_url: str) -> Iterator[tuple[str, str]]:
    prefix = f"tccrash{uuid.uuid4().hex[:10]}"
    client = redis_sync.Redis.from_url(redis_url)
    yield f"{redis_url}?prefix={prefix}", f"{prefix}:ledger"
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def pg_target(pg_dsn: str) -> Iterator[tuple[str, str]]:
    schema = f"tccrash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".ledger (n int NOT NULL)')
        conn.execute(f'CREATE TABLE "{schema}".ledger_starts (mark text NOT NULL)')
    yield f"{pg_dsn}?schema={schema}", f'"{schema}".ledger'
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.slow
def test_worker_crash_redis(redis_target: tuple[str, str], redis_url: str) -> None:
    url, ledger = redis_target
    result = _run_scenario(url, ledger)
    client = redis_sync.Redis.from_url(redis_url)
    runs = {int(k): int(v) for k, v in client.hgetall(ledger).items()}
    client.close()
    dup = _check_ledger(runs, int(result["kills"]))
    print(f"redis: {N} tasks, {result['kills']} kills, {dup} re-runs, {result['elapsed']:.1f} s")  # noqa: T201


@pytest.mark.slow
def test_worker_crash_postgres(pg_target: tuple[str, str], pg_dsn: str) -> None:
    url, ledger = pg_target
    result = _run_scenario(url, ledger)
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT n, count(*) FROM {ledger} GROUP BY n").fetchall()  # type: ignore[arg-type]
    dup = _check_ledger(dict(rows), int(result["kills"]))
    print(f"postgres: {N} tasks, {result['kills']} kills, {dup} re-runs, {result['elapsed']:.1f} s")  # noqa: T201


def _recovery(url: str, ledger: str, starts: Callable[[], list[str]]) -> float:
    """Kill the worker running a long task; return seconds until another worker
    starts it again."""

    async def enqueue() -> None:
        app = App(url)
        app.tasks.update(crash_app.app.tasks)
        async with app:
            await app.enqueue_call(crash_app.long_job, (1.0,), {})

    anyio.run(enqueue)
    workers = [_start_worker(url, ledger) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not starts():  # bounded wait for the observable first start
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = int(starts()[0].split(":")[0])
        victim = next(w for w in workers if w.pid == pid)
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.wait()
        while len(starts()) < 2:
            assert time.monotonic() < deadline, "the killed worker's task never ran again"
            time.sleep(0.05)
        second_pid, second_at = starts()[1].split(":")
        assert int(second_pid) != pid
        return float(second_at) - killed_at
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)


@pytest.mark.slow
def test_recovery_time_redis(redis_target: tuple[str, str], redis_url: str) -> None:
    url, ledger = redis_target
    client = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    try:
        took = _recovery(url, ledger, lambda: client.lrange(f"{ledger}:starts", 0, -1))
    finally:
        client.close()
    print(f"redis: re-run {took:.2f} s after the kill (lease {LEASE} s)")  # noqa: T201
    assert took < LEASE + 5


@pytest.mark.slow
def test_recovery_time_postgres(pg_target: tuple[str, str], pg_dsn: str) -> None:
    url, ledger = pg_target
    with psycopg.connect(pg_dsn, autocommit=True) as conn:

        def starts() -> list[str]:
            rows = conn.execute(f"SELECT mark FROM {ledger}_starts ORDER BY mark").fetchall()  # type: ignore[arg-type]
            return sorted((r[0] for r in rows), key=lambda m: float(m.split(":")[1]))

        took = _recovery(url, ledger, starts)
    print(f"postgres: re-run {took:.2f} s after the kill (lease {LEASE} s)")  # noqa: T201
    assert took < LEASE + 5


def _graceful(url: str, ledger: str) -> None:
    """SIGTERM a worker mid-run: it finishes what it runs, so nothing is lost and
    nothing that finished runs again."""
    _enqueue(url)
    workers = [_start_worker(url, ledger) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while anyio.run(_states, url)[State.SUCCEEDED] < N // 4:  # bounded wait: mid-run
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stopping = workers.pop(0)
        stopping.send_signal(signal.SIGTERM)
        assert stopping.wait(timeout=30) == 0
        workers.append(_start_worker(url, ledger))
        while (states := anyio.run(_states, url))[State.SUCCEEDED] < N:
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)


@pytest.mark.slow
def test_sigterm_loses_and_reruns_nothing_redis(
    redis_target: tuple[str, str], redis_url: str
) -> None:
    url, ledger = redis_target
    _graceful(url, ledger)
    client = redis_sync.Redis.from_url(redis_url)
    runs = {int(k): int(v) for k, v in client.hgetall(ledger).items()}
    client.close()
    assert _check_ledger(runs, kills=0) == 0


@pytest.mark.slow
def test_sigterm_loses_and_reruns_nothing_postgres(pg_target: tuple[str, str], pg_dsn: str) -> None:
    url, ledger = pg_target
    _graceful(url, ledger)
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT n, count(*) FROM {ledger} GROUP BY n").fetchall()  # type: ignore[arg-type]
    assert _check_ledger(dict(rows), kills=0) == 0
