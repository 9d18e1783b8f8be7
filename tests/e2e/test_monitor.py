"""The monitor against every backend: what a snapshot shows, rates between snapshots,
and alerts that wait out their duration on the fake clock, fire once and resolve.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from taskcore import App, FakeClock, Priority, RetryPolicy, TaskFailed, Worker
from taskcore.monitor import (
    Alert,
    AlertState,
    CallableNotifier,
    MetricsPoint,
    Monitor,
    Rates,
    Rule,
    default_rules,
    read_metrics,
)

from .conftest import POLL

pytestmark = pytest.mark.anyio


def worker(app: App) -> Worker:
    return app.worker(queues=["mon"], poll_interval=POLL)


def by_name(rules: list[Rule], *names: str) -> list[Rule]:
    return [r for r in rules if r.name in names]


async def test_a_snapshot_shows_depth_late_and_dead_tasks_live_workers_and_rates(
    app: App, clock: FakeClock
) -> None:
    @app.task(queue="mon", priority=Priority.CRITICAL)
    async def urgent(n: int) -> int:
        return n

    @app.task(queue="mon", retry=RetryPolicy.fixed(0))
    async def boom() -> None:
        raise RuntimeError("no")

    monitor = Monitor(app, resources=False, notifiers=[])
    handles = [await urgent.enqueue(n) for n in range(3)]
    first = await monitor.sample()
    [q] = first.queues
    assert (q.name, q.depth, q.depth_by_priority[0], q.running, q.late, q.dead) == (
        "mon",
        3,
        3,
        0,
        0,
        0,
    )
    assert first.workers == [] and first.rates == Rates()
    assert [(c.name, c.kind, c.ok) for c in first.checks] == [("backend", "backend", True)]
    assert [(a.rule, a.subject, a.state) for a in first.alerts] == [
        ("no_worker", "mon", AlertState.PENDING)
    ]

    clock.advance(2)  # past P0's one-second SLA: the three start late
    async with worker(app) as w:
        assert [await h.result(timeout=10) for h in handles] == [0, 1, 2]
        with pytest.raises(TaskFailed):
            await (await boom.enqueue()).result(timeout=10)
        second = await monitor.sample()
    [q] = second.queues
    assert (q.depth, q.succeeded, q.dead, q.late, q.late_by_priority[0]) == (0, 3, 1, 3, 3)
    assert [(x.id, x.queues, x.concurrency) for x in second.workers] == [(w.id, ["mon"], w.target)]
    # two seconds of the fake clock between the snapshots
    assert second.rates == Rates(succeeded=1.5, dead=0.5)
    assert {(a.rule, a.subject, a.severity, a.state, a.value) for a in second.alerts} == {
        ("late_p0_p1", "mon", "critical", AlertState.FIRING, 3),
        ("late_tasks", "mon", "warning", AlertState.FIRING, 3),
        ("dead_letters_growing", "mon", "warning", AlertState.FIRING, 1),
        ("failure_rate", "mon", "warning", AlertState.FIRING, 0.25),
    }
    assert second.alerts[0].rule == "late_p0_p1"  # critical first
    assert [s.at for s in monitor.history] == [first.at, second.at]


async def test_an_alert_fires_after_its_duration_once_and_resolves(
    app: App, clock: FakeClock
) -> None:
    sync_seen: list[Alert] = []
    async_seen: list[Alert] = []

    async def record(alert: Alert) -> None:
        await anyio.lowlevel.checkpoint()
        async_seen.append(alert)

    @app.task(queue="mon")
    async def job() -> str:
        return "done"

    monitor = Monitor(
        app,
        resources=False,
        rules=by_name(default_rules(), "no_worker"),
        notifiers=[CallableNotifier(sync_seen.append), CallableNotifier(record)],
    )
    handle = await job.enqueue()
    start = clock.now()
    assert [a.state for a in (await monitor.sample()).alerts] == [AlertState.PENDING]
    clock.advance(29)
    assert [a.state for a in (await monitor.sample()).alerts] == [AlertState.PENDING]
    assert sync_seen == []
    clock.advance(1)
    firing = await monitor.sample()
    [alert] = firing.alerts
    assert (alert.state, alert.subject, alert.severity, alert.value) == (
        AlertState.FIRING,
        "mon",
        "critical",
        1,
    )
    assert (alert.since, alert.fired_at) == (start, start + 30)
    clock.advance(5)
    assert [a.state for a in (await monitor.sample()).alerts] == [AlertState.FIRING]
    assert len(sync_seen) == 1  # no repeat while it keeps firing

    async with worker(app):
        assert await handle.result(timeout=10) == "done"
        clock.advance(1)
        resolved = await monitor.sample()
    assert resolved.alerts == []
    assert [(a.state, a.fired_at, a.resolved_at) for a in sync_seen] == [
        (AlertState.FIRING, start + 30, None),
        (AlertState.RESOLVED, start + 30, start + 36),
    ]
    assert async_seen == sync_seen == list(monitor.alert_log)


async def test_run_streams_a_snapshot_per_interval_of_the_app_clock(
    app: App, clock: FakeClock
) -> None:
    @app.task(queue="mon")
    async def job() -> None:
        pass

    monitor = Monitor(app, interval=1, resources=False, notifiers=[])
    with monitor.subscribe() as snapshots:
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            assert (await snapshots.receive()).queues == []
            await job.enqueue()
            while clock.sleepers == 0:
                await anyio.lowlevel.checkpoint()
            clock.advance(1)
            snapshot = await snapshots.receive()
            tg.cancel_scope.cancel()
    assert snapshot is monitor.latest
    assert snapshot.at == clock.now()
    assert [(q.name, q.depth) for q in snapshot.queues] == [("mon", 1)]


async def test_each_minute_is_stored_as_one_point_shared_and_kept_for_metrics_ttl(
    app: App, clock: FakeClock, make_app: Any
) -> None:
    @app.task(queue="mon")
    async def job() -> None: ...

    monitor = Monitor(app, resources=False, notifiers=[])
    clock.advance(60 - clock.now() % 60)  # to the start of a minute
    minute = clock.now()
    await job.enqueue()
    for _ in range(3):  # three snapshots in the first minute
        await monitor.sample()
        clock.advance(20)
    await job.enqueue()
    await job.enqueue()
    await monitor.sample()  # the next minute: the first one is stored
    assert await monitor.metrics() == [
        MetricsPoint(
            at=minute,
            samples=3,
            succeeded_per_s=0.0,
            failed_per_s=0.0,
            dead_per_s=0.0,
            depth=1,
            running=0,
            late=0,
            dead=0,
            workers=0,
            busy=0,
            concurrency=0,
            alerts=1,  # no worker for the queue
            depth_by_queue={"mon": 1},
        )
    ]
    async with make_app() as other:  # another process's monitor on the same backend
        second = Monitor(other, resources=False, notifiers=[])
        await second.sample()
        clock.advance(60)
        await second.sample()  # a third minute: the second stores the second minute
        await monitor.sample()  # ... which this one then does not store again
        points = await second.metrics()
        assert [(p.at, p.samples, p.depth) for p in points] == [
            (minute, 3, 1),
            (minute + 60, 1, 3),
        ]
        assert [p.at for p in await read_metrics(other.backend, since=minute + 1)] == [minute + 60]
        assert [p.at for p in await read_metrics(other.backend, until=minute + 60)] == [minute]
        assert [p.at for p in await read_metrics(other.backend, limit=1)] == [minute + 60]
    # kept for metrics_ttl: the monitor applies it as it stores each minute
    clock.advance(app.metrics_ttl - 120 + 1)  # the first minute is now past it
    await monitor.sample()
    assert [p.at for p in await monitor.metrics()] == [minute + 60, minute + 120]


async def run_for(monitor: Monitor, clock: FakeClock, intervals: int) -> None:
    """Run ``monitor``: a snapshot now and one after each of ``intervals`` intervals of
    the fake clock; then stop it (cancel :meth:`Monitor.run`)."""
    with monitor.subscribe() as snapshots:
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            await snapshots.receive()
            for _ in range(intervals):
                clock.advance(monitor.interval)
                await snapshots.receive()
            tg.cancel_scope.cancel()


async def test_a_stopped_monitor_stores_its_partial_minute_and_a_restart_completes_it(
    app: App, clock: FakeClock, make_app: Any
) -> None:
    @app.task(queue="mon")
    async def job() -> None: ...

    clock.advance(60 - clock.now() % 60 + 10)
    minute = clock.now() - 10
    await job.enqueue()
    # snapshots at 10, 20 and 30 seconds into the minute; then the monitor stops
    await run_for(Monitor(app, interval=10, rules=[], resources=False, notifiers=[]), clock, 2)
    [stored] = await app.backend.journal_read("metrics")
    [point] = await read_metrics(app.backend)
    assert msgspec.msgpack.decode(stored.payload, type=MetricsPoint) == point
    # covered from its first snapshot to its last: 20 of the minute's 60 seconds
    assert (stored.at, point.at, point.samples, point.seconds, point.partial) == (
        minute,
        minute,
        3,
        20.0,
        True,
    )
    assert (point.depth, point.depth_by_queue, point.succeeded_per_s, point.workers) == (
        1,
        {"mon": 1},
        0.0,
        0,
    )

    # restarted (here: in another process) 45 seconds into the minute, stopped just after
    clock.advance(15)
    await job.enqueue()
    async with make_app() as other:
        restarted = Monitor(other, interval=15, rules=[], resources=False, notifiers=[])
        await run_for(restarted, clock, 1)  # snapshots at 45 and 60
    assert [(e.at, len(e.payload) > 0) for e in await app.backend.journal_read("metrics")] == [
        (minute + 60, True),  # the next minute's first snapshot, stored at the stop
        (minute, True),  # 45-60 s, stored when the next minute began
        (minute, True),  # 10-30 s
    ]
    points = await read_metrics(app.backend)
    # the minute's two partial points read as one: 35 of its 60 seconds, four
    # snapshots, the counts of the later one
    assert [(p.at, p.samples, p.seconds, p.depth, p.partial) for p in points] == [
        (minute, 4, 35.0, 2, True),
        (minute + 60, 1, 0.0, 2, True),
    ]
    # a limit counts minutes, not stored points
    assert [(p.at, p.samples) for p in await read_metrics(app.backend, limit=1)] == [
        (minute + 60, 1)
    ]
    assert [(p.at, p.samples) for p in await read_metrics(app.backend, limit=2)] == [
        (minute, 4),
        (minute + 60, 1),
    ]
    assert [p.samples for p in await read_metrics(app.backend, until=minute + 60)] == [4]


async def test_a_whole_minute_outweighs_the_partial_points_of_other_monitors(
    app: App, clock: FakeClock, make_app: Any
) -> None:
    clock.advance(60 - clock.now() % 60)
    minute = clock.now()
    steady = Monitor(app, interval=20, rules=[], resources=False, notifiers=[])
    await steady.sample()  # from the minute's start
    async with make_app() as other:  # a web process that stops in the middle of the minute
        clock.advance(10)
        await run_for(
            Monitor(other, interval=20, rules=[], resources=False, notifiers=[]), clock, 1
        )
    await steady.sample()  # at 30 s
    clock.advance(20)
    await steady.sample()
    assert [p.seconds for p in await read_metrics(app.backend)] == [20.0]  # the partial so far
    clock.advance(10)
    await steady.sample()  # the next minute: the whole one is stored
    assert [(p.at, p.samples, p.seconds) for p in await read_metrics(app.backend)] == [
        (minute, 3, 60.0)
    ]
    assert len(await app.backend.journal_read("metrics")) == 2  # both are kept
