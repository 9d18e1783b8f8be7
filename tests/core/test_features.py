"""Process pool, telemetry, cron, middleware, blocking facade, CLI and demo."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskcore import (
    App,
    ExecutionContext,
    FakeClock,
    Middleware,
    RetryPolicy,
    State,
    TaskCancelled,
    TaskFailed,
    TaskValidationError,
    Worker,
    chain,
    chord,
    group,
)
from taskcore.blocking import BlockingApp
from taskcore.cli import main as cli_main
from taskcore.memory import MemoryBackend
from taskcore.telemetry import Telemetry
from tests.core.scripts import run as run_script

from . import proc_tasks
from .conftest import Recorder

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_process_pool_runs_and_kills_on_timeout(anyio_backend: str) -> None:
    app = proc_tasks.app
    async with app, app.worker(processes=2) as worker:
        h = await proc_tasks.whoami.enqueue(21)
        out = await h.result(timeout=60)
        assert out["n"] == 42 and out["pid"] != os.getpid()
        hung = await proc_tasks.hang.enqueue(30)
        with pytest.raises(TaskFailed, match="TaskTimeout"):
            await hung.result(timeout=60)
        crashed = await proc_tasks.crash.enqueue()
        with pytest.raises(TaskFailed, match="BrokenWorkerProcess"):
            await crashed.result(timeout=60)  # os._exit in the child: a failed attempt
        again = await proc_tasks.whoami.enqueue(1)
        assert (await again.result(timeout=60))["n"] == 2  # the pool survives both kills
        assert worker.busy["process"] == 0


@pytest.mark.anyio
async def test_metrics_and_traces(clock: FakeClock) -> None:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(MeterProvider(metric_readers=[reader]), tracer_provider)
    app = App(backend=MemoryBackend(clock=clock), clock=clock, telemetry=telemetry)

    @app.task(retry=None)
    async def ok(n: int) -> int:
        return n

    @app.task
    async def bad() -> None:
        raise ValueError("x")

    async with app, app.worker() as worker:
        ids = [(await ok.enqueue(i)).id for i in range(3)]
        for tid in ids:
            await app.handle(tid).result(timeout=5)
        await (await bad.enqueue()).record()
        await worker.maintain()
        with anyio.fail_after(5):
            while not (await app.list_tasks(state=State.RETRYING)):
                await anyio.lowlevel.checkpoint()
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    enq = {tuple(sorted(p.attributes.items())): p.value for p in points["taskcore.tasks.enqueued"]}
    assert enq[(("priority", "P2"), ("queue", "default"), ("task", ok.name))] == 3
    assert sum(p.value for p in points["taskcore.tasks.succeeded"]) == 3
    assert sum(p.value for p in points["taskcore.tasks.failed"]) == 1
    assert sum(p.value for p in points["taskcore.tasks.retried"]) == 1
    assert sum(p.count for p in points["taskcore.task.run_time"]) == 4
    outcomes = {p.attributes["outcome"]: p.count for p in points["taskcore.task.run_time"]}
    assert outcomes == {"succeeded": 3, "retry": 1}
    assert all(p.attributes["complexity"] == "simple" for p in points["taskcore.tasks.started"])
    assert "taskcore.queue.depth" in points and "taskcore.worker.busy_slots" in points
    for series in points.values():
        for p in series:
            assert not any(v in ids for v in p.attributes.values())  # never the task id
    spans = exporter.get_finished_spans()
    enqueue_spans = [s for s in spans if s.name == f"enqueue {ok.name}"]
    run_spans = [s for s in spans if s.name == f"run {ok.name}"]
    assert len(enqueue_spans) == 3 and len(run_spans) == 3
    assert {s.context.trace_id for s in run_spans} == {s.context.trace_id for s in enqueue_spans}
    assert all(s.parent is not None for s in run_spans)


@pytest.mark.anyio
async def test_a_trace_context_from_elsewhere_travels_without_a_tracer_provider(
    clock: FakeClock,
) -> None:
    from opentelemetry import baggage, context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    app = App(backend=MemoryBackend(clock=clock), clock=clock)

    @app.task
    async def noop() -> None:
        pass

    incoming = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
    incoming = SpanContext(incoming.trace_id, incoming.span_id, True, TraceFlags(1))
    async with app:
        assert not app.telemetry.tracing  # no tracer provider: no spans of our own
        plain = await noop.enqueue()
        ctx = baggage.set_baggage(
            "tenant", "t1", trace.set_span_in_context(NonRecordingSpan(incoming))
        )
        token = context.attach(ctx)
        try:
            carried = await noop.enqueue()
            bulk = await app.enqueue_many(noop, [(), ()])
        finally:
            context.detach(token)

        async def trace_of(tid: str) -> dict[str, str]:
            rec = await app.backend.get(tid)
            assert rec is not None
            return app.codec.decode_envelope(rec.body).trace

        assert await trace_of(plain.id) == {}  # an empty context: nothing to carry
        expected = {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "baggage": "tenant=t1",
        }
        assert await trace_of(carried.id) == expected
        assert [await trace_of(h.id) for h in bulk] == [expected, expected]


def test_a_global_tracer_provider_set_or_named_later_is_seen() -> None:
    # A fresh interpreter each: the API sets its global provider once per process.
    # Set after the app was made (and had looked once):
    out = run_script(
        """
        import opentelemetry.trace as trace
        from opentelemetry.sdk.trace import TracerProvider
        from taskcore import App
        app = App("memory://")
        before = app.telemetry.tracing
        trace.set_tracer_provider(TracerProvider())
        print(before, app.telemetry.tracing)
        """
    )
    assert out == "False True"
    # Named in the environment (OpenTelemetry loads it at the first get_tracer_provider()):
    out = run_script(
        """
        import os
        os.environ["OTEL_PYTHON_TRACER_PROVIDER"] = "sdk_tracer_provider"
        import opentelemetry.trace
        from taskcore import App
        print(App("memory://").telemetry.tracing)
        """
    )
    assert out == "True"


@pytest.mark.anyio
async def test_a_bulk_enqueue_is_one_producer_span_parent_of_every_run(clock: FakeClock) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=tracer_provider)
    app = App(backend=MemoryBackend(clock=clock), clock=clock, telemetry=telemetry)

    @app.task
    async def ok(n: int) -> int:
        return n

    async with app, app.worker():
        handles = await app.enqueue_many(ok, [(1,), (2,), (3,)])
        assert [await h.result(timeout=5) for h in handles] == [1, 2, 3]
    spans = exporter.get_finished_spans()
    [producer] = [s for s in spans if s.name == f"enqueue {ok.name}"]
    runs = [s for s in spans if s.name == f"run {ok.name}"]
    assert len(runs) == 3
    assert all(s.parent is not None and s.parent.span_id == producer.context.span_id for s in runs)


@pytest.mark.anyio
async def test_middleware_hooks_run_in_order(clock: FakeClock) -> None:
    events: list[str] = []

    class Audit(Middleware):
        async def before_enqueue(self, task: Any, envelope: Any) -> None:
            events.append(f"before_enqueue {envelope.task.rsplit('.', 1)[-1]}")

        async def after_enqueue(self, task: Any, message: Any, created: bool) -> None:
            events.append(f"after_enqueue created={created}")

        async def before_run(self, ctx: ExecutionContext) -> None:
            events.append(f"before_run args={ctx.args} kwargs={ctx.kwargs}")

        async def after_run(self, ctx: ExecutionContext) -> None:
            events.append(f"after_run {ctx.outcome} result={ctx.result}")

    app = App(backend=MemoryBackend(clock=clock), clock=clock, middleware=[Audit()])

    @app.task
    async def double(n: int) -> int:
        return n * 2

    async with app, app.worker():
        await (await double.enqueue(4)).result(timeout=5)
    assert events == [
        "before_enqueue double",
        "after_enqueue created=True",
        "before_run args=[] kwargs={'n': 4}",
        "after_run succeeded result=8",
    ]


@pytest.mark.anyio
async def test_middleware_sees_every_call_of_a_bulk_enqueue(clock: FakeClock) -> None:
    events: list[str] = []

    class Stamp(Middleware):
        async def before_enqueue(self, task: Any, envelope: Any) -> None:
            if bytes(envelope.args) == b'{"n":13}':
                raise PermissionError("13 is refused")
            envelope.headers["stamped"] = "yes"
            events.append(f"before {bytes(envelope.args).decode()}")

        async def after_enqueue(self, task: Any, message: Any, created: bool) -> None:
            events.append(f"after created={created}")

    app = App(backend=MemoryBackend(clock=clock), clock=clock, middleware=[Stamp()])

    @app.task
    async def double(n: int) -> int:
        return n * 2

    async with app:
        handles = await app.enqueue_many(double, [(1,), (2,)])
        assert events == [
            'before {"n":1}',
            'before {"n":2}',
            "after created=True",
            "after created=True",
        ]
        for h in handles:  # what before_enqueue changed is what was stored
            rec = await app.backend.get(h.id)
            assert rec is not None
            assert app.codec.decode_envelope(rec.body).headers == {"stamped": "yes"}
        with pytest.raises(PermissionError, match="13 is refused"):
            await app.enqueue_many(double, [(12,), (13,)])
        assert len(await app.list_tasks()) == 2  # the refused batch stored nothing


@pytest.mark.anyio
async def test_cron_tick_enqueued_once_with_two_workers(
    clock: FakeClock, recorder: Recorder
) -> None:
    clock.set(1_700_000_100.0)  # 2023-11-14 22:15:00 UTC; next */5 tick at 22:20
    app = App(backend=MemoryBackend(clock=clock), clock=clock, middleware=[recorder])

    @app.periodic("*/5 * * * *", tz="Europe/Paris")
    async def sweep() -> str:
        return "swept"

    async with app, app.worker(), app.worker():
        with anyio.fail_after(5):
            while clock.sleepers < 2 + 2 * 2:  # cron, extend and maintenance loops
                await anyio.lowlevel.checkpoint()
        clock.advance(300)
        await recorder.wait_runs(1)
    ticks = await app.list_tasks(task=sweep.name)
    assert len(ticks) == 1 and ticks[0].unique_key == f"cron:{sweep.name}:1700000400"
    assert ticks[0].state is State.SUCCEEDED


def test_cron_next_tick_honours_time_zone() -> None:
    from taskcore.cron import Periodic

    # 2024-03-30 23:30 UTC; 02:00 Paris time on the 31st does not exist (DST)
    p = Periodic("t", "0 9 * * *", "Europe/Paris")
    assert p.next_after(1711841400.0) == 1711868400.0  # 09:00 CEST = 07:00 UTC
    assert Periodic("t", "0 9 * * *").next_after(1711841400.0) == 1711875600.0  # 09:00 UTC


@contextlib.contextmanager
def running_worker(tc: BlockingApp, app: App, **options: Any) -> Iterator[Worker]:
    """A worker running in the facade's portal; stopped however the block ends (a
    failed assertion must not leave it running: closing the facade waits for it)."""
    worker = app.worker(**options)
    tc.portal.start_task_soon(worker.run)
    try:
        yield worker
    finally:
        tc.portal.call(worker.stop)


def test_blocking_facade() -> None:
    app = App("memory://")

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with app.blocking() as tc, running_worker(tc, app, concurrency=2):
        h = tc.enqueue(add, 2, 3)
        assert h.result(timeout=5) == 5
        assert h.status() is State.SUCCEEDED
        rec = h.record()
        assert rec is not None and rec.attempt == 1
        later = tc.enqueue_with(add, {"delay": 60}, 1, 1)
        assert later.status() is State.SCHEDULED
        assert later.cancel() and tc.handle(later.id).status() is State.CANCELLED
        hs = tc.enqueue_many(add, [(1, 1), (2, 2)])
        assert [x.result(timeout=5) for x in hs] == [2, 4]
        [stats] = tc.stats(["default"])
        assert stats.states[State.SUCCEEDED] == 3
        assert len(tc.list_tasks(state=State.SUCCEEDED)) == 3
        assert tc.cancel([h.id]) == [False]
        assert tc.retry_dead([h.id]) == [False]
        assert tc.purge("default", [State.CANCELLED]) == 1
        tc.pause("default")
        [paused] = tc.stats(["default"])
        assert paused.paused
        tc.resume("default")
        assert not tc.stats(["default"])[0].paused


def test_blocking_facade_events_and_workflows() -> None:
    app = App("memory://")

    @app.task(on="order.created")
    async def bill(order_id: int) -> str:
        return f"billed {order_id}"

    @app.task(on="order.created")
    def notify(order_id: int) -> int:
        return order_id

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def total(xs: list[int]) -> int:
        return sum(xs)

    @app.task(retry=RetryPolicy(retries=0))
    async def fail(x: int) -> int:
        raise ValueError(f"no {x}")

    with app.blocking() as tc, running_worker(tc, app, concurrency=2):
        handles = tc.emit("order.created", 7)
        assert [h.result(timeout=5) for h in handles] == ["billed 7", 7]
        assert tc.emit("nobody.listens", 1) == []
        flow = tc.enqueue_workflow(chain(add.s(1, 2), add.s(10)))
        assert flow.result(timeout=5) == 13 and flow.id == flow.ids[-1]
        assert flow.step(flow.ids[0]).status() is State.SUCCEEDED
        fan = tc.enqueue_workflow(chord(group(add.s(1, 1), add.s(2, 2)), total.s()))
        assert fan.result(timeout=5) == 6
        assert tc.enqueue_workflow(add.s(4, 4)).result(timeout=5) == 8
        broken = tc.enqueue_workflow(chain(fail.s(1), add.s(1)))
        with pytest.raises(TaskFailed, match="no 1") as info:
            broken.result(timeout=5)
        assert info.value.task_id == broken.ids[0]
        assert [r.id for r in tc.dead_letters()] == [broken.ids[0]]
        later = tc.enqueue_workflow(chain(add.with_options(delay=60).s(1, 1), add.s(1)))
        assert later.cancel() == [True, False]  # the second step does not exist yet
        with pytest.raises(TaskCancelled):
            later.result(timeout=5)
        with pytest.raises(TaskValidationError, match="cannot take the previous result"):
            tc.enqueue_workflow(chain(add.s(1, 2), add.s(1, 2)))


def test_blocking_facade_task_logs_and_rejects() -> None:
    from taskcore.ingest import ingest

    app = App("memory://")
    task_log = logging.getLogger("tests.blocking")

    @app.task
    async def add(x: int, y: int) -> int:
        task_log.warning("adding %d and %d", x, y)
        return x + y

    with app.blocking() as tc, running_worker(tc, app, concurrency=2):
        h = tc.enqueue(add, 2, 3)
        assert h.result(timeout=5) == 5
        [line] = h.logs()
        assert (line.level, line.message, line.attempt) == ("WARNING", "adding 2 and 3", 1)
        assert tc.task_logs(h.id) == [line]
        assert tc.task_logs("no-such-task") == []

        report = tc.portal.call(lambda: ingest(app, add, [{"x": 1, "y": 2}, {"x": "one"}]))
        assert (report.enqueued, report.rejected) == (1, 1)
        [reject] = tc.rejects(report.run)
        assert (reject.number, reject.task) == (2, add.name)
        assert tc.rejects() == [reject]
        assert tc.rejects(since=reject.at + 1) == []
        assert tc.rejects("another-run") == []


def test_cli_status(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert cli_main(["status", "tests.core.cli_app:app"]) == 0
    out = capsys.readouterr().out
    assert "taskcore queues" in out and "0 worker(s) alive" in out
    assert cli_main(["status", "tests.core.cli_app:not_an_app"]) == 2
    assert "does not name a taskcore App" in capsys.readouterr().err
    assert cli_main(["status", "no_such_module_xyz:app"]) == 2


def test_cli_worker_without_uvloop_installed_says_how_to_get_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    monkeypatch.chdir(ROOT)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    assert cli_main(["worker", "tests.core.cli_app:app", "--loop", "uvloop"]) == 2
    err = capsys.readouterr().err
    assert "uvloop is not installed" in err and "taskcore[uvloop]" in err


def test_cli_monitor_and_web_parse_their_own_options(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["web", "--help"])
    assert exit_.value.code == 0
    assert "usage: taskcore web" in capsys.readouterr().out
    assert cli_main(["web", "tests.core.cli_app:app", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    assert cli_main(["monitor", "tests.core.cli_app:app", "--once", "--check-tcp", "db"]) == 2
    assert "NAME=HOST:PORT" in capsys.readouterr().err


def test_cli_worker_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskcore", "worker", "tests.core.cli_app:app", "--grace", "5"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the worker logs once it is up
        lines.append(line)
        if "worker" in line and "started" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, "".join(lines) + rest
    assert "SIGTERM: stopping" in rest


def test_demo_small_run(capsys: pytest.CaptureFixture[str]) -> None:
    from taskcore.demo import run_demo

    logger = logging.getLogger("taskcore")
    level = logger.level
    assert run_demo(total=150, live=False) == 0
    assert logger.level == level  # the demo's silence ends with it
    out = capsys.readouterr().out
    assert "per priority" in out and "per complexity" in out and "runs/s overall" in out
    assert "P4 BATCH" in out and "complex" in out


def test_worker_prefetch_option_takes_a_count_or_auto(capsys: pytest.CaptureFixture[str]) -> None:
    from taskcore.cli import _prefetch

    assert _prefetch("auto") == "auto" and _prefetch("0") == 0 and _prefetch("25") == 25
    with pytest.raises(SystemExit):
        cli_main(["worker", "tests.core.cli_app:app", "--prefetch", "lots"])
    assert "'lots': use a number of tasks >= 0, or 'auto'" in capsys.readouterr().err


def test_task_log_capture_leaves_unconfigured_logging_printing_warnings() -> None:
    # a program that never configured logging: Python's last-resort handler prints
    # warnings to stderr (here sent to stdout), with a worker running or not, and a
    # task's lines are captured, even from a logger that does not propagate
    out = run_script(
        """
        import logging, sys
        import anyio
        from taskcore import App

        sys.stderr = sys.stdout
        app = App("memory://")
        quiet = logging.getLogger("quiet")
        quiet.propagate = False

        @app.task
        async def job() -> None:
            quiet.warning("from the task")

        async def main():
            async with app, app.worker() as w:
                logging.getLogger("prog").warning("outside any task")
                handle = await job.enqueue()
                await handle.result(timeout=5)
                await w.write_logs()
                print([line.message for line in await handle.logs()])

        anyio.run(main)
        """
    )
    # the task's line is printed by the last-resort handler too (its logger has none)
    assert out.splitlines() == ["outside any task", "from the task", "['from the task']"]
