"""Server restart: the Redis server (AOF, fsync per write) is killed and started again
mid-run, PostgreSQL is restarted mid-run (fast, then immediate: crash recovery). The
worker processes must reconnect by themselves and finish; nothing is lost, and tasks
run twice are no more than the workers held when the server went away.

Both servers are private to the test (see :mod:`tests.faults.servers`); the ledger
is on the shared servers, out of harm's way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from taskcore import State

from . import crash_app
from .harness import Target, Workers, check_outcome, probe, wait_for
from .servers import PrivatePostgres, PrivateRedis

N = 3000  # half fast, half 50 ms
WORKERS = 2
CONCURRENCY = 10
OUTAGE = 1.0  # seconds the Redis server stays down


def _restarts(target: Target, log_dir: Path, failures: Sequence[Callable[[], None]]) -> str:
    """Run ``failures`` one after another, spread over the run, then check the end."""
    numbers = list(range(N))
    recoveries = []
    running_at_failure = []
    with probe(target.url) as p, Workers(target, log_dir, concurrency=CONCURRENCY) as workers:
        p.enqueue(crash_app.work, [(n, n % 2 == 0) for n in numbers])
        workers.start(WORKERS)
        started = time.monotonic()
        for i, fail in enumerate(failures, 1):
            mark = N * i // (len(failures) + 1)
            p.wait_succeeded(mark, 120)
            running_at_failure.append(len(p.running()))
            fail()
            back = time.monotonic()
            # the server is back: the workers must finish tasks again, on their own
            before = wait_for(p.try_states, "the probe to reconnect", 30)[State.SUCCEEDED]
            wait_for(
                lambda b=before: (s := p.try_states()) and s[State.SUCCEEDED] > b,
                "the workers to finish tasks after the restart",
                60,
                interval=0.05,
            )
            recoveries.append(time.monotonic() - back)
        p.wait_terminal(N, 120, workers)
        elapsed = time.monotonic() - started
        # the faults were real: the workers saw backend calls fail (and carried on)
        assert workers.logged("failed"), workers.logs()
        workers.assert_alive()  # they reconnected; none died and none was replaced
        assert workers.stop() == [0] * WORKERS, workers.logs()
        summary = check_outcome(
            p, target.ledger, numbers, in_flight=len(failures) * WORKERS * CONCURRENCY
        )
    return summary.line(
        "server-restart",
        target.kind,
        restarts=len(failures),
        running_at_restarts=running_at_failure,
        resumed_after=[f"{r:.2f}s" for r in recoveries],
        elapsed=f"{elapsed:.1f}s",
    )


@pytest.mark.slow
def test_redis_restart_with_aof(private_redis: tuple[PrivateRedis, Target], tmp_path: Path) -> None:
    server, target = private_redis

    def kill_and_restart() -> None:
        server.kill()
        time.sleep(OUTAGE)  # the length of the outage, not synchronisation
        server.restart()

    print(_restarts(target, tmp_path, [kill_and_restart]))  # noqa: T201
    assert server.restarts == 1


@pytest.mark.slow
def test_postgres_restart(private_postgres: tuple[PrivatePostgres, Target], tmp_path: Path) -> None:
    server, target = private_postgres
    line = _restarts(
        target, tmp_path, [lambda: server.restart("fast"), lambda: server.restart("immediate")]
    )
    print(line)  # noqa: T201
    assert server.restarts == 2
