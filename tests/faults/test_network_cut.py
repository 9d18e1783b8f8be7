"""Network cut: the worker processes reach the server through a TCP proxy that drops
every connection mid-run, twice, and then refuses connections for a second. The
workers reconnect and finish; nothing is lost, and re-runs are bounded by the tasks
in flight at the cuts."""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pytest

from taskcore.worker import SETTLE_BACKLOG_PER_SLOT

from . import crash_app
from .harness import Target, Workers, check_outcome, probe, wait_for
from .proxy import ThreadedProxy, proxy_in_thread

N = 3000  # half fast, half 50 ms
WORKERS = 2
CONCURRENCY = 10
OUTAGE = 1.0  # seconds the proxy refuses connections


def _cut(proxy: ThreadedProxy, outage: bool) -> int:
    if not outage:
        return proxy.drop()
    before = proxy.proxy.dropped
    proxy.stop()
    time.sleep(OUTAGE)  # the length of the outage, not synchronisation
    proxy.start()
    return proxy.proxy.dropped - before


def _network_cuts(target: Target, log_dir: Path) -> str:
    numbers = list(range(N))
    plan = [False, False, True]  # drop, drop, outage
    cut_connections = []
    with (
        proxy_in_thread(target.url) as proxy,
        probe(target.url) as p,  # the test's own view goes around the proxy
        Workers(attrs.evolve(target, url=proxy.url), log_dir, concurrency=CONCURRENCY) as workers,
    ):
        p.enqueue(crash_app.work, [(n, n % 2 == 0) for n in numbers])
        workers.start(WORKERS)
        started = time.monotonic()
        for i, outage in enumerate(plan, 1):
            mark = N * i // (len(plan) + 1)
            p.wait_succeeded(mark, 120)
            cut_connections.append(_cut(proxy, outage))
        p.wait_terminal(N, 120, workers)
        elapsed = time.monotonic() - started
        # the faults were real: the workers saw backend calls fail (and carried on)
        assert workers.logged("failed"), workers.logs()
        workers.assert_alive()
        assert workers.stop() == [0] * WORKERS, workers.logs()
        assert all(cut_connections), cut_connections  # every cut hit live connections
        summary = check_outcome(
            p, target.ledger, numbers, in_flight=len(plan) * WORKERS * CONCURRENCY
        )
    return summary.line(
        "network-cut",
        target.kind,
        cuts=len(plan),
        connections_cut=cut_connections,
        elapsed=f"{elapsed:.1f}s",
    )


@pytest.mark.slow
def test_network_cut_redis(redis_target: Target, tmp_path: Path) -> None:
    print(_network_cuts(redis_target, tmp_path))  # noqa: T201


@pytest.mark.slow
def test_network_cut_postgres(pg_target: Target, tmp_path: Path) -> None:
    print(_network_cuts(pg_target, tmp_path))  # noqa: T201


def _rate_limiter_unreachable(target: Target, log_dir: Path) -> str:
    """The worker's call for a rate-limit token fails (its connection is cut): the task
    is deferred, not failed, and the worker keeps going."""
    numbers = list(range(50))
    with (
        proxy_in_thread(target.url) as proxy,
        probe(target.url) as p,
        Workers(attrs.evolve(target, url=proxy.url), log_dir, concurrency=10) as workers,
    ):
        workers.start(1)
        proxy.refuse_requests(f"rate:{crash_app.limited.name}".encode(), times=5)
        ids = p.enqueue(crash_app.limited, [(n,) for n in numbers])
        p.wait_terminal(len(numbers), 60, workers)
        assert proxy.proxy.refused == 5
        workers.assert_alive()
        assert workers.stop() == [0], workers.logs()
        assert {r.attempt for r in p.records(ids)} == {1}  # deferred, not failed
        summary = check_outcome(p, target.ledger, numbers, in_flight=0)
    return summary.line("rate-limiter-cut", target.kind, token_calls_cut=5)


@pytest.mark.slow
def test_rate_limiter_cut_redis(redis_target: Target, tmp_path: Path) -> None:
    print(_rate_limiter_unreachable(redis_target, tmp_path))  # noqa: T201


@pytest.mark.slow
def test_rate_limiter_cut_postgres(pg_target: Target, tmp_path: Path) -> None:
    print(_rate_limiter_unreachable(pg_target, tmp_path))  # noqa: T201


SILENT = 2.0  # seconds: the dead-peer bound the workers behind the blackhole are given
# URL options that set that bound (defaults: docs/redis.md, docs/postgres.md)
DEAD_PEER_OPTIONS = {
    "redis": f"socket_timeout={SILENT:g}&socket_connect_timeout={SILENT:g}&retries=1",
    "postgres": f"operation_timeout={SILENT:g}&connect_timeout={SILENT:g}&timeout={SILENT:g}",
}
# a backend call gives up after at most two attempts, each bounded by the timeout
# (plus getting a connection, bounded by it too), and the worker logs it
GIVE_UP_BOUND = 4 * SILENT + 3.0


def _blackhole(target: Target, log_dir: Path) -> str:
    """The proxy stops forwarding bytes without closing anything (the server seems to
    vanish): the workers notice within the configured bound instead of hanging,
    reconnect once bytes flow again, and finish every task."""
    numbers = list(range(600))
    behind = attrs.evolve(target, url=f"{target.url}&{DEAD_PEER_OPTIONS[target.kind]}")
    with (
        proxy_in_thread(behind.url) as proxy,
        probe(target.url) as p,
        Workers(attrs.evolve(behind, url=proxy.url), log_dir, concurrency=CONCURRENCY) as workers,
    ):
        p.enqueue(crash_app.work, [(n, n % 2 == 0) for n in numbers])
        workers.start(WORKERS)
        p.wait_succeeded(len(numbers) // 3, 120)
        assert workers.logged("unavailable") == 0, workers.logs()
        proxy.blackhole()
        silent_from = time.monotonic()
        wait_for(lambda: workers.logged("unavailable"), "a worker to give up", 60, 0.05)
        gave_up = time.monotonic() - silent_from
        proxy.forward()
        assert proxy.proxy.swallowed_bytes > 0  # the blackhole swallowed live traffic
        assert proxy.proxy.dropped == 0  # and the proxy closed nothing
        assert gave_up <= GIVE_UP_BOUND, (gave_up, workers.logs())
        p.wait_terminal(len(numbers), 120, workers)
        workers.assert_alive()
        assert workers.stop() == [0] * WORKERS, workers.logs()
        # the silence outlasts the 2 s lease: every task a worker held may run again,
        # the running ones and the finished ones whose settle was waiting (the worker
        # keeps claiming until SETTLE_BACKLOG_PER_SLOT outcomes per slot wait; under
        # load the settles lag that far behind, docs/guide.md)
        held = WORKERS * CONCURRENCY * (1 + SETTLE_BACKLOG_PER_SLOT)
        summary = check_outcome(p, target.ledger, numbers, in_flight=held)
    return summary.line(
        "blackhole", target.kind, gave_up_after=f"{gave_up:.1f}s (bound {GIVE_UP_BOUND:g}s)"
    )


@pytest.mark.slow
def test_blackhole_redis(redis_target: Target, tmp_path: Path) -> None:
    print(_blackhole(redis_target, tmp_path))  # noqa: T201


@pytest.mark.slow
def test_blackhole_postgres(pg_target: Target, tmp_path: Path) -> None:
    print(_blackhole(pg_target, tmp_path))  # noqa: T201
