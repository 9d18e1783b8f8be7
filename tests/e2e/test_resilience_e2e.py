"""Resilience features end to end, on memory (asyncio and trio), Redis and PostgreSQL:
circuit breakers shared by workers, per-key rate limits, ``RateLimited``, poison tasks
and workers that retire after ``max_tasks``.

Everything is built on the coordination primitives of the backend seam (``kv``,
``once``, ``take_tokens``), so each scenario proves the feature on every backend.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest

from taskcore import (
    App,
    Circuit,
    FakeClock,
    RateLimited,
    RetryPolicy,
    State,
    Task,
    TaskFailed,
    Worker,
)
from taskcore.circuit import CircuitBreakers, CircuitState, Ticket
from taskcore.testing import Recorder

from .conftest import POLL, settled, until

pytestmark = pytest.mark.anyio

MakeApp = Callable[..., contextlib.AbstractAsyncContextManager[App]]
LATER = RetryPolicy.fixed(3, delay=1000)  # failed runs come back long after the scenario


def moment(t: float) -> Any:
    return pytest.approx(t, rel=0, abs=1e-3)


def worker(app: App, **options: Any) -> Worker:
    options.setdefault("poll_interval", POLL)
    return app.worker(**options)


# -- circuit breaker ---------------------------------------------------------------------------


def _charge(app: App, down: dict[str, bool], holding: list[int], release: anyio.Event) -> Task:
    @app.task(name="charge", circuit="payments", retry=LATER)
    async def charge(n: int) -> int:
        if down["now"]:
            raise ConnectionError("payments API down")
        if not holding:  # the first run after the outage holds until released
            holding.append(n)
            await release.wait()
        return n

    return charge


async def test_circuit_opens_for_every_worker_and_one_probe_closes_it(
    make_app: MakeApp, clock: FakeClock, recorder: Recorder
) -> None:
    settings = {"payments": Circuit(failures=2, window=60, cooldown=30)}
    down = {"now": True}
    holding: list[int] = []
    release = anyio.Event()
    async with (
        make_app([recorder], circuits=settings) as app1,
        make_app([recorder], circuits=settings) as app2,
    ):
        charge1 = _charge(app1, down, holding, release)
        charge2 = _charge(app2, down, holding, release)
        async with worker(app1):
            failed = [await charge1.enqueue(1), await charge1.enqueue(2)]
            for h in failed:
                await settled(app1, h.id, State.RETRYING)
        opened_at = clock.now()
        # a second machine: the circuit it reads from the backend is open
        async with worker(app2):
            waiting = [await charge2.enqueue(3), await charge2.enqueue(4)]
            for h in waiting:
                await settled(app2, h.id, State.RETRYING)
                rec = await h.record()
                assert rec is not None and rec.attempt == 0 and rec.errors == ()  # deferred
                assert opened_at + 30 <= rec.eligible_at <= opened_at + 33
            assert len(recorder.started) == 2  # only the two failures ran

            down["now"] = False
            clock.advance(33.5)  # cool-down over: half-open, both deferred tasks due
            await recorder.wait_started(3)
            probe = next(h for h in waiting if h.id == recorder.started[2])
            other = next(h for h in waiting if h is not probe)

            async def deferred_again() -> bool:
                rec = await other.record()
                return rec is not None and rec.eligible_at >= clock.now() + 1

            await until(deferred_again)  # one probe at a time: the other waits
            rec = await other.record()
            assert rec is not None and rec.state is State.RETRYING and rec.attempt == 0
            assert len(recorder.started) == 3
            release.set()
            assert await probe.result(timeout=5) == holding[0]  # success closes it
            clock.advance(1.2)
            assert await other.result(timeout=5) in (3, 4)
            clock.advance(1000)  # the failed runs' retries: the circuit is closed now
            assert [await h.result(timeout=5) for h in failed] == [1, 2]
        assert len(recorder.started) == 6


async def test_failed_probe_reopens_the_circuit(
    make_app: MakeApp, clock: FakeClock, recorder: Recorder
) -> None:
    async with make_app([recorder], circuits={"search": Circuit(failures=1, cooldown=20)}) as app:

        @app.task(circuit="search", retry=LATER)
        async def query(n: int) -> int:
            raise TimeoutError("search cluster unreachable")

        async with worker(app):
            first = await query.enqueue(1)
            await settled(app, first.id, State.RETRYING)
            probe = await query.enqueue(2)
            await settled(app, probe.id, State.RETRYING)
            rec = await probe.record()
            assert rec is not None and rec.errors == ()  # deferred, not run
            clock.advance(22.5)
            await recorder.wait_runs(2)  # the probe ran and failed
            await until(lambda: _errors(app, probe.id, 1))
            reopened_at = clock.now()
            third = await query.enqueue(3)
            await settled(app, third.id, State.RETRYING)
            rec = await third.record()
            assert rec is not None and rec.errors == () and rec.attempt == 0
            assert reopened_at + 20 <= rec.eligible_at <= reopened_at + 22
        assert recorder.started == [first.id, probe.id]


async def test_two_workers_tripping_one_circuit_at_once_open_it_once(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure that reaches the threshold and one counted after it both try to open
    the circuit, concurrently, from two workers: one transition, one new generation."""
    circuit = Circuit(failures=1, cooldown=60)
    async with make_app([]) as app:
        workers = [CircuitBreakers(app.backend, app.clock, app.telemetry) for _ in range(2)]
        tickets = [await w.admit("payments", circuit) for w in workers]
        assert all(isinstance(t, Ticket) and t.gen == 0 and not t.probe for t in tickets)
        with caplog.at_level(logging.WARNING, "taskcore.circuit"):
            async with anyio.create_task_group() as tg:
                for w, t in zip(workers, tickets, strict=True):
                    assert isinstance(t, Ticket)
                    tg.start_soon(w.record, t, ConnectionError("payments API down"))
        opened = [r for r in caplog.records if "opened after" in r.getMessage()]
        assert len(opened) == 1
        state, until = await workers[0].state("payments")
        assert state is CircuitState.OPEN and until is not None
        later = await workers[1].admit("payments", circuit)
        assert isinstance(later, float) and until <= later <= until + 1.0  # its end, jittered
        raw = await app.backend.kv_get("circuit:payments")
        assert raw is not None and msgspec.json.decode(raw)["gen"] == 1  # generation 0 -> 1


async def _errors(app: App, task_id: str, n: int) -> bool:
    rec = await app.backend.get(task_id)
    return rec is not None and rec.state is State.RETRYING and len(rec.errors) == n


# -- rate limits -------------------------------------------------------------------------------


async def test_rate_limits_per_key(app: App, clock: FakeClock, recorder: Recorder) -> None:
    @app.task(rate_limit="1/s", rate_key="customer")
    async def call_api(customer: str, n: int) -> str:
        return f"{customer}{n}"

    async with worker(app):
        assert await (await call_api.enqueue("acme", 1)).result(timeout=5) == "acme1"
        # another customer has a bucket of its own
        assert await (await call_api.enqueue("globex", 1)).result(timeout=5) == "globex1"
        limited = await call_api.enqueue("acme", 2)
        await settled(app, limited.id, State.RETRYING)
        rec = await limited.record()
        assert rec is not None and rec.attempt == 0 and rec.errors == ()
        assert rec.eligible_at == moment(clock.now() + 1)
        # a per-call key picks the bucket, whatever the argument says
        vip = call_api.with_options(rate_key="vip")
        assert await (await vip.enqueue("acme", 3)).result(timeout=5) == "acme3"
        second_vip = await vip.enqueue("globex", 4)
        await settled(app, second_vip.id, State.RETRYING)
        clock.advance(1)
        assert await limited.result(timeout=5) == "acme2"
        assert await second_vip.result(timeout=5) == "globex4"
    rec = await limited.record()
    assert rec is not None and rec.attempt == 1  # deferrals spent no attempt


async def test_rate_limited_exception_defers_without_spending_an_attempt(
    app: App, clock: FakeClock
) -> None:
    calls = {"n": 0}

    @app.task(retry=RetryPolicy.fixed(0))  # no retries: a failure would be final
    async def call_api() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RateLimited(retry_after=7)  # the API answered 429
        return "ok"

    async with worker(app):
        h = await call_api.enqueue()
        await settled(app, h.id, State.RETRYING)
        rec = await h.record()
        assert rec is not None and rec.attempt == 0 and rec.errors == ()
        assert rec.eligible_at == moment(clock.now() + 7)
        clock.advance(6.9)
        assert await h.status() is State.RETRYING
        clock.advance(0.1)
        assert await h.result(timeout=5) == "ok"
    rec = await h.record()
    assert rec is not None and rec.attempt == 1 and calls["n"] == 2


# -- poison tasks ------------------------------------------------------------------------------


@pytest.mark.parametrize(("allowance", "poison"), [(1, True), (2, False)])
async def test_a_task_whose_worker_keeps_dying_is_dead_lettered(
    app: App, clock: FakeClock, recorder: Recorder, allowance: int, poison: bool
) -> None:
    @app.task(retry=RetryPolicy.fixed(1))  # 2 attempts
    async def crashes_its_worker() -> str:
        return "ran"

    h = await crashes_its_worker.enqueue()
    for lost in range(3):  # claimed by a worker that dies before it settles
        [lease] = await app.backend.claim(["default"], 1, 10.0, "doomed")
        assert lease.attempt == lost + 1
        clock.advance(10)
        assert await app.backend.reap() == [h.id]
    # claim 4: beyond 2 attempts + 1 allowed loss, within 2 + 2
    async with worker(app, lost_lease_allowance=allowance):
        if poison:
            with pytest.raises(
                TaskFailed,
                match=r"PoisonTask: lease expired 3 times: worker lost while running it - "
                r"poison task\? \(claim 4 > 2 attempts \+ lost_lease_allowance 1\)",
            ):
                await h.result(timeout=5)
            assert recorder.started == []  # dead-lettered instead of run
            assert [r.id for r in await app.dead_letters()] == [h.id]
        else:
            assert await h.result(timeout=5) == "ran"


# -- recycling ---------------------------------------------------------------------------------


async def test_worker_retires_after_max_tasks_and_loses_nothing(
    app: App, recorder: Recorder
) -> None:
    @app.task
    async def job(n: int) -> int:
        return n * 10

    handles = await app.enqueue_many(job, [(n,) for n in range(7)])
    retiring = worker(app, max_tasks=3, concurrency=10)
    with anyio.fail_after(10):
        await retiring.run()  # returns by itself once its three tasks are settled
    assert retiring.recycled == "claimed max_tasks=3 tasks" and retiring.processed == 3
    states = [await h.status() for h in handles]
    assert states.count(State.SUCCEEDED) == 3 and states.count(State.QUEUED) == 4
    async with worker(app):  # the replacement
        assert [await h.result(timeout=5) for h in handles] == [n * 10 for n in range(7)]
    assert sorted(recorder.started) == sorted(h.id for h in handles)  # each exactly once
