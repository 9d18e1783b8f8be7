"""Circuit breakers, per-key rate limits, poison tasks and worker recycling: settings,
and the breaker's state machine driven by a FakeClock on the in-memory backend.

The scenarios every backend must share run in tests/e2e/test_resilience_e2e.py.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import anyio
import msgspec
import pytest

from taskcore import (
    App,
    Circuit,
    ConfigurationError,
    FakeClock,
    RateLimited,
    Retry,
    RetryPolicy,
    State,
)
from taskcore.circuit import CircuitBreakers, CircuitState, Ticket
from taskcore.cli import main as cli_main
from taskcore.memory import MemoryBackend
from taskcore.recycle import Recycle, parse_size
from taskcore.supervisor import Supervisor
from taskcore.telemetry import Telemetry
from taskcore.testing import Recorder

from .conftest import settled

pytestmark = pytest.mark.anyio


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": 0}, r"failures=0\): must be between 1 and 10000"),
        ({"failures": 2.5}, r"failures=2\.5\): give a whole number"),
        ({"failures": True}, r"failures=True\): give a whole number"),
        ({"window": 0}, r"window=0\): must be a number of seconds > 0"),
        ({"cooldown": -1}, r"cooldown=-1\): must be a number of seconds > 0"),
        ({"cooldown": float("inf")}, r"cooldown=inf\)"),
        ({"ignore": ["ValueError"]}, r"ignore=\['ValueError'\]\): give exception classes"),
    ],
)
def test_circuit_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Circuit(**kwargs)


def test_circuit_defaults_and_what_counts() -> None:
    c = Circuit()
    assert (c.failures, c.window, c.cooldown) == (5, 60.0, 30.0)
    assert c.counts(ConnectionError()) and c.counts(TimeoutError())
    assert not c.counts(Retry()) and not c.counts(RateLimited(3))
    assert not Circuit(ignore=ValueError).counts(ValueError("bad input"))


def test_task_circuit_option(clock: FakeClock) -> None:
    app = App(backend=MemoryBackend(clock=clock), circuits={"payments": Circuit(failures=2)})

    @app.task(circuit="payments")
    async def charge() -> None: ...

    @app.task(circuit=Circuit(failures=9), name="own")
    async def own() -> None: ...

    @app.task(circuit="search")
    async def search() -> None: ...

    assert charge.options.circuit == "payments"
    assert app.circuit_settings("payments") == Circuit(failures=2)
    assert own.options.circuit == "own" and app.circuit_settings("own") == Circuit(failures=9)
    assert app.circuit_settings("search") == Circuit()  # unlisted name: the defaults
    with pytest.raises(ConfigurationError, match=r"circuit=5 must be a dependency name"):
        app.task(circuit=5)(lambda: None)
    with pytest.raises(ConfigurationError, match=r"invalid circuit name 'pay ments'"):
        app.task(circuit="pay ments", name="x")(lambda: None)
    with pytest.raises(ConfigurationError, match=r"must be a taskcore.Circuit"):
        App(circuits={"payments": {"failures": 2}})  # type: ignore[dict-item]


def test_rate_key_is_validated(clock: FakeClock) -> None:
    app = App(backend=MemoryBackend(clock=clock))
    with pytest.raises(ConfigurationError, match=r"rate_key='customer' needs a rate_limit"):

        @app.task(rate_key="customer")
        async def no_limit(customer: str) -> None: ...

    with pytest.raises(
        ConfigurationError, match=r"rate_key='client' must name one of its parameters \['c'\]"
    ):

        @app.task(rate_limit="1/s", rate_key="client", name="typo")
        async def typo(c: str) -> None: ...

    @app.task(rate_limit="1/s", rate_key="customer")
    async def per_customer(n: int, *, customer: str) -> None: ...

    assert per_customer.rate_bucket(None, {"n": 1, "customer": "acme"}).endswith(":acme")
    assert per_customer.rate_bucket("vip", {"n": 1, "customer": "acme"}).endswith(":vip")


async def test_per_call_rate_key_needs_a_rate_limit(app: App) -> None:
    @app.task
    async def plain() -> None: ...

    @app.task(rate_limit="2/s")
    async def limited() -> None: ...

    with pytest.raises(Exception, match=r"has no rate_limit, so rate_key='acme' would limit"):
        await plain.with_options(rate_key="acme").enqueue()
    for bad in ("", "a\x00b"):
        with pytest.raises(
            Exception, match=rf"invalid rate_key {re.escape(repr(bad))}: give a non-empty"
        ):
            await limited.with_options(rate_key=bad).enqueue()
    h = await limited.with_options(rate_key="acme").enqueue()
    assert await h.status() is State.QUEUED


@pytest.mark.parametrize(
    ("value", "size"),
    [(4096, 4096), ("512MB", 512 * 2**20), ("512m", 512 * 2**20), ("1.5GiB", 3 * 2**29)],
)
def test_parse_size(value: int | str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["lots", "12 parsecs", "0", "-5MB", "MB", "5iB", True])
def test_parse_size_refuses_nonsense(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"max_rss="):
        parse_size(value)


async def test_worker_limits_are_validated(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"max_tasks=0: give the number of tasks"):
        app.worker(max_tasks=0)
    with pytest.raises(ConfigurationError, match=r"max_rss='huge'"):
        app.worker(max_rss="huge")
    with pytest.raises(ConfigurationError, match=r"lost_lease_allowance=-1"):
        app.worker(lost_lease_allowance=-1)
    with pytest.raises(ConfigurationError, match=r"prefetch=-1: use a number of tasks >= 0"):
        app.worker(prefetch=-1)
    with pytest.raises(ConfigurationError, match=r"prefetch='always'"):
        app.worker(prefetch="always")  # type: ignore[arg-type]
    assert app.worker(max_tasks=10, max_rss="1GB").recycle == Recycle(10, 2**30)


# -- the breaker's state machine ----------------------------------------------------------


@pytest.fixture
def breakers(clock: FakeClock) -> CircuitBreakers:
    return CircuitBreakers(MemoryBackend(clock=clock), clock, Telemetry())


async def _fail(breakers: CircuitBreakers, circuit: Circuit, n: int = 1) -> None:
    for _ in range(n):
        ticket = await breakers.admit("payments", circuit)
        assert isinstance(ticket, Ticket) and not ticket.probe
        await breakers.record(ticket, ConnectionError("refused"))


async def test_opens_after_n_failures_then_one_probe_closes_it(
    breakers: CircuitBreakers, clock: FakeClock
) -> None:
    circuit = Circuit(failures=3, window=60, cooldown=30)
    await _fail(breakers, circuit, 2)
    assert await breakers.state("payments") == (CircuitState.CLOSED, None)
    opened_at = clock.now()
    await _fail(breakers, circuit, 1)
    assert await breakers.state("payments") == (CircuitState.OPEN, opened_at + 30)
    assert breakers.telemetry.circuits["payments"] == CircuitState.OPEN
    deferred = await breakers.admit("payments", circuit)
    assert isinstance(deferred, float) and opened_at + 30 <= deferred <= opened_at + 33

    clock.advance(29.9)
    assert isinstance(await breakers.admit("payments", circuit), float)
    clock.advance(0.1)  # cool-down over: half-open
    probe = await breakers.admit("payments", circuit)
    assert isinstance(probe, Ticket) and probe.probe
    for _ in range(3):  # one probe only; the others come back within about a second
        other = await breakers.admit("payments", circuit)
        assert isinstance(other, float) and clock.now() + 1 <= other <= clock.now() + 1.1
    assert breakers.telemetry.circuits["payments"] == CircuitState.HALF_OPEN
    await breakers.record(probe, None)
    assert await breakers.state("payments") == (CircuitState.CLOSED, None)
    # closing starts a fresh count: the failures that opened it are forgotten
    await _fail(breakers, circuit, 2)
    assert (await breakers.state("payments"))[0] is CircuitState.CLOSED


async def test_failed_probe_reopens_for_another_cooldown(
    breakers: CircuitBreakers, clock: FakeClock
) -> None:
    circuit = Circuit(failures=1, cooldown=10)
    await _fail(breakers, circuit)
    clock.advance(10)
    probe = await breakers.admit("payments", circuit)
    assert isinstance(probe, Ticket) and probe.probe
    await breakers.record(probe, TimeoutError("still down"))
    assert await breakers.state("payments") == (CircuitState.OPEN, clock.now() + 10)
    clock.advance(10)
    second = await breakers.admit("payments", circuit)
    assert isinstance(second, Ticket) and second.probe  # a new generation, a new probe


async def test_a_probe_that_never_reports_is_replaced_after_a_cooldown(
    breakers: CircuitBreakers, clock: FakeClock
) -> None:
    circuit = Circuit(failures=1, cooldown=10)
    await _fail(breakers, circuit)
    clock.advance(10)
    lost = await breakers.admit("payments", circuit)
    assert isinstance(lost, Ticket) and lost.probe
    await breakers.record(lost, Retry())  # control flow: no verdict
    assert isinstance(await breakers.admit("payments", circuit), float)
    clock.advance(10)
    again = await breakers.admit("payments", circuit)
    assert isinstance(again, Ticket) and again.probe


async def test_failures_count_within_one_window(
    breakers: CircuitBreakers, clock: FakeClock
) -> None:
    circuit = Circuit(failures=3, window=60)
    clock.set(1_700_000_030.0)  # 50 s into a window (they start at multiples of 60 s)
    await _fail(breakers, circuit, 2)
    clock.advance(20)  # the next window: the count starts over
    await _fail(breakers, circuit, 2)
    assert (await breakers.state("payments"))[0] is CircuitState.CLOSED
    await _fail(breakers, circuit, 1)
    assert (await breakers.state("payments"))[0] is CircuitState.OPEN


async def test_ignored_errors_and_control_flow_do_not_count(breakers: CircuitBreakers) -> None:
    circuit = Circuit(failures=1, ignore=ValueError)
    for error in (ValueError("bad input"), Retry(), RateLimited(5)):
        ticket = await breakers.admit("payments", circuit)
        assert isinstance(ticket, Ticket)
        await breakers.record(ticket, error)
    assert (await breakers.state("payments"))[0] is CircuitState.CLOSED


async def test_concurrent_failures_open_the_circuit_once(
    breakers: CircuitBreakers, clock: FakeClock
) -> None:
    circuit = Circuit(failures=4)
    tickets = [await breakers.admit("payments", circuit) for _ in range(12)]
    async with anyio.create_task_group() as tg:
        for t in tickets:
            assert isinstance(t, Ticket)
            tg.start_soon(breakers.record, t, ConnectionError("down"))
    raw = await breakers.backend.kv_get("circuit:payments")
    assert raw is not None and msgspec.json.decode(raw)["gen"] == 1  # one transition
    assert (await breakers.state("payments"))[0] is CircuitState.OPEN


async def test_unreadable_state_counts_as_closed(breakers: CircuitBreakers) -> None:
    await breakers.backend.kv_set("circuit:payments", b"not json")
    assert await breakers.state("payments") == (CircuitState.CLOSED, None)


# -- through a worker ------------------------------------------------------------------------


async def test_open_circuit_defers_without_spending_an_attempt(
    clock: FakeClock, recorder: Recorder
) -> None:
    app = App(
        backend=MemoryBackend(clock=clock),
        clock=clock,
        middleware=[recorder],
        circuits={"payments": Circuit(failures=1, cooldown=30)},
    )

    @app.task(circuit="payments", retry=RetryPolicy.fixed(3, delay=1000))
    async def charge(n: int) -> int:
        if n == 0:
            raise ConnectionError("payments API down")
        return n

    async with app, app.worker():
        failing = await charge.enqueue(0)
        await settled(app, failing.id, State.RETRYING)
        deferred = await charge.enqueue(1)
        await settled(app, deferred.id, State.RETRYING)
        rec = await deferred.record()
        assert rec is not None and rec.attempt == 0 and rec.errors == ()
        assert clock.now() + 30 <= rec.eligible_at <= clock.now() + 33
        assert recorder.started == [failing.id]  # the deferred task never ran
        clock.advance(33)
        assert await deferred.result(timeout=5) == 1  # the probe succeeded


async def test_timeouts_count_as_circuit_failures(clock: FakeClock) -> None:
    app = App(backend=MemoryBackend(clock=clock), clock=clock)

    @app.task(circuit=Circuit(failures=1), timeout=0.05, name="hangs")
    async def hangs() -> None:
        await anyio.sleep(30)

    async with app, app.worker() as w:
        h = await hangs.enqueue()
        await settled(app, h.id, State.RETRYING)
        with anyio.fail_after(5):
            while (await w.admission.breakers.state("hangs"))[0] is not CircuitState.OPEN:
                await anyio.lowlevel.checkpoint()


# -- recycling -----------------------------------------------------------------------------


async def test_max_rss_retires_after_running_tasks_finish(app: App, recorder: Recorder) -> None:
    release = anyio.Event()

    @app.task
    async def hold(n: int) -> int:
        await release.wait()
        return n

    handles = await app.enqueue_many(hold, [(1,), (2,), (3,)])
    w = app.worker(concurrency=2, max_rss=1)  # any process is over one byte
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        with anyio.fail_after(5):
            while True:  # bounded poll of the worker's own periodic check
                if w.recycled is not None:
                    break
                await anyio.sleep(0.01)
        assert "reached max_rss 0 MiB" in w.recycled
        assert w.running == 2  # retiring: no claims, the running tasks go on
        release.set()
    assert [await handles[i].result(timeout=5) for i in (0, 1)] == [1, 2]
    assert await handles[2].status() is State.QUEUED  # never claimed
    assert sorted(recorder.started) == sorted(h.id for h in handles[:2])


async def test_a_signal_while_retiring_applies_the_grace_period(app: App) -> None:
    @app.task
    async def hold() -> None:
        await anyio.sleep_forever()

    h = await hold.enqueue()
    w = app.worker(max_tasks=1, grace_period=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        with anyio.fail_after(5):
            while w.recycled is None or w._drain_scope is None:
                await anyio.lowlevel.checkpoint()
        w.stop()
    await settled(app, h.id, State.QUEUED)  # handed back, not lost
    rec = await h.record()
    assert rec is not None and rec.attempt == 0


async def test_a_retiring_worker_runs_its_prefetched_tasks(app: App, recorder: Recorder) -> None:
    @app.task
    async def job(n: int) -> int:
        await anyio.lowlevel.checkpoint()  # the worker retires while prefetched ones wait
        return n

    handles = await app.enqueue_many(job, [(n,) for n in range(8)])
    w = app.worker(concurrency=1, prefetch=3, max_tasks=4)
    with anyio.fail_after(5):
        await w.run()  # claims 4 at once: one for the slot, three prefetched
    assert w.recycled == "claimed max_tasks=4 tasks"
    assert recorder.started == [h.id for h in handles[:4]]
    assert [await h.status() for h in handles[4:]] == [State.QUEUED] * 4


async def test_max_tasks_counts_with_reserved_critical_slots(app: App) -> None:
    @app.task
    async def job(n: int) -> int:
        return n

    handles = await app.enqueue_many(job, [(1,), (2,)])
    w = app.worker(concurrency=4, reserved_critical=2, max_tasks=1)
    with anyio.fail_after(5):
        await w.run()  # the last task of its budget is not held back for P0 work
    assert w.recycled == "claimed max_tasks=1 tasks"
    assert [await h.status() for h in handles] == [State.SUCCEEDED, State.QUEUED]


# -- the supervisor ------------------------------------------------------------------------


async def test_supervisor_replaces_children_that_exit_and_stops_them() -> None:
    quits = [
        sys.executable,
        "-c",
        "import os, sys; sys.exit(int(os.environ['TASKCORE_WORKER_SLOT']) + 3)",
    ]
    sup = Supervisor(quits, 2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        with anyio.fail_after(30):
            while True:  # bounded poll: each slot's child exits at once and is replaced
                if sup.restarts >= 4:
                    break
                await anyio.sleep(0.02)
        sup.stop()
    assert sup.started >= 4

    sleeper = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"], 2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper.run)
        with anyio.fail_after(30):
            while True:
                if sleeper.started == 2:
                    break
                await anyio.sleep(0.02)
        sleeper.stop()  # SIGTERM to both; run() returns once they are gone
    assert sleeper.started == 2 and sleeper.restarts == 0


def test_cli_refuses_bad_supervisor_options() -> None:
    assert cli_main(["worker", "tests.core.cli_app:app", "--workers", "0"]) == 2
    assert cli_main(["worker", "tests.core.cli_app:app", "--workers", "2", "--max-rss", "x"]) == 2
