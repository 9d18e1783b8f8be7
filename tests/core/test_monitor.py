"""The monitor's pure logic on the in-memory backend: alert rules and their evaluator,
health checks against real local servers, notifiers (a real local HTTP server for the
webhook), the host sampler, streaming, a backend outage and the ``monitor`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import psutil
import pytest

from taskcore import App, BackendUnavailable, ConfigurationError, FakeClock, State
from taskcore.memory import MemoryBackend
from taskcore.monitor import (
    Alert,
    AlertState,
    BackendCheck,
    CallableNotifier,
    Check,
    CheckResult,
    Evaluator,
    HttpCheck,
    Monitor,
    Notifier,
    QueueSnapshot,
    Rates,
    ResourceSample,
    Rule,
    Snapshot,
    TcpCheck,
    WebhookNotifier,
    default_rules,
)
from taskcore.monitor import cli as monitor_cli
from taskcore.monitor.metrics import MinuteFold, merge
from taskcore.monitor.resources import ResourceSampler
from tests.core.scripts import run as run_script

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


def queue(name: str = "q", **counts: Any) -> QueueSnapshot:
    fields: dict[str, Any] = dict.fromkeys(
        ("depth", "running", "scheduled", "retrying", "dead", "failed", "succeeded", "late"), 0
    )
    fields.update(counts)
    return QueueSnapshot(name=name, paused=fields.pop("paused", False), **fields)


def snap(
    at: float,
    queues: list[QueueSnapshot] | None = None,
    checks: list[CheckResult] | None = None,
    resources: ResourceSample | None = None,
) -> Snapshot:
    return Snapshot(
        at=at,
        queues=queues or [],
        workers=[],
        checks=checks or [],
        rates=Rates(),
        alerts=[],
        resources=resources,
    )


def host(cpu: float = 10.0, memory: float = 10.0, disk: float = 10.0) -> ResourceSample:
    return ResourceSample(cpu, memory, disk, 0.0, 0.0, 1)


def depth(s: Snapshot) -> dict[str, float]:
    return {q.name: q.depth for q in s.queues}


def dead(s: Snapshot) -> dict[str, float]:
    return {q.name: q.dead for q in s.queues}


# -- rules and the evaluator ---------------------------------------------------------------


async def test_an_alert_is_pending_until_for_seconds_then_fires_once_and_resolves() -> None:
    ev = Evaluator([Rule.above("deep", depth, 10, for_seconds=30, severity="critical")])
    active, moved = ev.evaluate(snap(T0, [queue(depth=11)]))
    assert [(a.state, a.subject, a.value, a.since) for a in active] == [
        (AlertState.PENDING, "q", 11, T0)
    ]
    assert moved == []
    active, moved = ev.evaluate(snap(T0 + 29.9, [queue(depth=12)]))
    assert [a.state for a in active] == [AlertState.PENDING] and moved == []
    active, moved = ev.evaluate(snap(T0 + 30, [queue(depth=13)]))
    assert [(a.state, a.fired_at, a.value, a.since) for a in moved] == [
        (AlertState.FIRING, T0 + 30, 13, T0)
    ]
    assert active == moved
    # still firing: no new transition
    active, moved = ev.evaluate(snap(T0 + 31, [queue(depth=14)]))
    assert [a.state for a in active] == [AlertState.FIRING] and moved == []
    active, moved = ev.evaluate(snap(T0 + 32, [queue(depth=10)]))
    assert active == []
    [resolved] = moved
    assert (resolved.state, resolved.fired_at, resolved.resolved_at, resolved.severity) == (
        AlertState.RESOLVED,
        T0 + 30,
        T0 + 32,
        "critical",
    )
    # quiet again: nothing more to say
    assert ev.evaluate(snap(T0 + 33, [queue(depth=0)])) == ([], [])


async def test_a_pending_alert_that_clears_is_never_notified_and_restarts_its_timer() -> None:
    ev = Evaluator([Rule.above("deep", depth, 10, for_seconds=30)])
    ev.evaluate(snap(T0, [queue(depth=11)]))
    assert ev.evaluate(snap(T0 + 20, [queue(depth=1)])) == ([], [])
    active, moved = ev.evaluate(snap(T0 + 35, [queue(depth=11)]))
    assert [(a.state, a.since) for a in active] == [(AlertState.PENDING, T0 + 35)]
    assert moved == []


async def test_one_rule_alerts_per_subject() -> None:
    ev = Evaluator([Rule.above("deep", depth, 10)])
    active, moved = ev.evaluate(snap(T0, [queue("a", depth=11), queue("b", depth=1)]))
    assert [(a.subject, a.state) for a in moved] == [("a", AlertState.FIRING)]
    active, moved = ev.evaluate(snap(T0 + 1, [queue("a", depth=11), queue("b", depth=20)]))
    assert [(a.subject, a.state) for a in moved] == [("b", AlertState.FIRING)]
    assert sorted(a.subject for a in active) == ["a", "b"]


async def test_an_increase_rule_counts_growth_over_its_window_and_ignores_drops() -> None:
    ev = Evaluator([Rule.above("growing", dead, 0, over=60)])
    # the first reading is only a baseline: existing dead letters do not alert
    assert ev.evaluate(snap(T0, [queue(dead=5)])) == ([], [])
    assert ev.evaluate(snap(T0 + 1, [queue(dead=3)]))[1] == []  # retried: a drop
    active, moved = ev.evaluate(snap(T0 + 2, [queue(dead=4)]))
    assert [(a.state, a.value) for a in moved] == [(AlertState.FIRING, 1)]
    active, moved = ev.evaluate(snap(T0 + 30, [queue(dead=6)]))
    assert moved == [] and [a.value for a in active] == [3]
    # the growth at T0+2 leaves the window at T0+62; the one at T0+30 at T0+90
    active, _ = ev.evaluate(snap(T0 + 63, [queue(dead=6)]))
    assert [a.value for a in active] == [2]
    active, moved = ev.evaluate(snap(T0 + 91, [queue(dead=6)]))
    assert active == [] and [(a.state, a.resolved_at) for a in moved] == [
        (AlertState.RESOLVED, T0 + 91)
    ]


async def test_a_ratio_rule_has_no_value_while_its_denominator_stands_still() -> None:
    rule = Rule.above(
        "failing",
        lambda s: {q.name: q.failed for q in s.queues},
        0.5,
        over=60,
        per=lambda s: {q.name: q.failed + q.succeeded for q in s.queues},
    )
    ev = Evaluator([rule])
    ev.evaluate(snap(T0, [queue(failed=0, succeeded=0)]))
    active, moved = ev.evaluate(snap(T0 + 1, [queue(failed=3, succeeded=1)]))
    assert [(a.state, a.value) for a in moved] == [(AlertState.FIRING, 0.75)]
    active, _ = ev.evaluate(snap(T0 + 2, [queue(failed=3, succeeded=5)]))
    assert active == []  # 3 of 8


async def test_a_partial_snapshot_keeps_the_state_of_missing_subjects() -> None:
    ev = Evaluator([Rule.above("deep", depth, 10)])
    ev.evaluate(snap(T0, [queue(depth=11)]))
    active, moved = ev.evaluate(snap(T0 + 1), partial=True)
    assert [a.state for a in active] == [AlertState.FIRING] and moved == []
    active, moved = ev.evaluate(snap(T0 + 2))  # a complete snapshot without the queue
    assert active == [] and [a.state for a in moved] == [AlertState.RESOLVED]


async def test_a_rule_that_raises_is_logged_and_keeps_its_alerts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {"now": False}

    def values(s: Snapshot) -> dict[str, float]:
        if broken["now"]:
            raise KeyError("oops")
        return depth(s)

    ev = Evaluator([Rule.above("deep", values, 10), Rule.above("deep2", depth, 10)])
    ev.evaluate(snap(T0, [queue(depth=11)]))
    broken["now"] = True
    with caplog.at_level(logging.ERROR, "taskcore.monitor"):
        active, moved = ev.evaluate(snap(T0 + 1, [queue(depth=0)]))
    assert [a.rule for a in active] == ["deep"]
    assert [(a.rule, a.state) for a in moved] == [("deep2", AlertState.RESOLVED)]
    assert "alert rule deep failed" in caplog.text


async def test_active_alerts_come_critical_first() -> None:
    ev = Evaluator(
        [
            Rule.above("a_info", depth, 0, severity="info"),
            Rule.above("b_warn", depth, 0, severity="warning"),
            Rule.above("c_crit", depth, 0, severity="critical"),
        ]
    )
    active, _ = ev.evaluate(snap(T0, [queue(depth=1)]))
    assert [a.rule for a in active] == ["c_crit", "b_warn", "a_info"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"op": "=>"}, "op='=>'"),
        ({"severity": "fatal"}, "severity='fatal'"),
        ({"for_seconds": -1}, "for_seconds=-1"),
        ({"over": 0}, "over=0"),
        ({"per": depth}, "give over= too"),
        ({"threshold": "10"}, "threshold='10'"),
    ],
)
async def test_rule_settings_are_checked(options: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"threshold": 1, **options}
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        Rule("r", depth, **kwargs)


async def test_rule_names_must_be_unique() -> None:
    with pytest.raises(ConfigurationError, match=r"repeated: \['r'\]"):
        Evaluator([Rule.above("r", depth, 1), Rule.below("r", depth, 1)])


async def test_default_rules_for_host_and_checks() -> None:
    ev = Evaluator(default_rules())
    bad = CheckResult("api", "http", ok=False, latency=0.5, at=T0, error="refused")
    slow = CheckResult("db", "tcp", ok=True, latency=0.7, at=T0)
    active, moved = ev.evaluate(snap(T0, checks=[bad, slow], resources=host(96, 86, 81)))
    assert {(a.rule, a.subject, a.severity) for a in moved} == {
        ("check_failing", "api", "critical"),
        ("check_slow", "db", "warning"),
        ("host_disk", "host", "warning"),
    }
    assert {(a.rule, a.state) for a in active} >= {
        ("host_cpu", AlertState.PENDING),
        ("host_memory", AlertState.PENDING),
    }
    _, moved = ev.evaluate(snap(T0 + 60, checks=[bad, slow], resources=host(96, 86, 81)))
    assert {a.rule for a in moved} == {"host_cpu", "host_memory"}
    _, moved = ev.evaluate(snap(T0 + 61, checks=[bad, slow], resources=host(95, 85, 80)))
    assert {(a.rule, a.state) for a in moved} == {
        ("host_cpu", AlertState.RESOLVED),
        ("host_memory", AlertState.RESOLVED),
        ("host_disk", AlertState.RESOLVED),
    }


# -- a real local HTTP server ------------------------------------------------------------


class Request(msgspec.Struct):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request], Awaitable[int]]


def answer(status: int) -> Handler:
    async def handler(request: Request) -> int:
        return status

    return handler


@contextlib.asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[tuple[str, list[Request]]]:
    """A minimal HTTP/1.1 server on 127.0.0.1: one request per connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    requests: list[Request] = []

    async def serve(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                head, _, body = data.partition(b"\r\n\r\n")
                line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = line.split(" ")
                headers = {
                    k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)
                }
                while len(body) < int(headers.get("content-length", 0)):
                    body += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            request = Request(method, path, headers, body)
            requests.append(request)
            status = await handler(request)
            await stream.send(
                f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield f"http://127.0.0.1:{port}", requests
        tg.cancel_scope.cancel()


async def closed_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return port


# -- checks ------------------------------------------------------------------------------


async def test_http_check_passes_on_the_expected_status_and_fails_otherwise(app: App) -> None:
    async with http_server(answer(200)) as (url, requests):
        result = await HttpCheck("api", url + "/health").run(app)
        assert (result.ok, result.kind, result.error, result.at) == (
            True,
            "http",
            None,
            app.clock.now(),
        )
        assert 0 < result.latency < 0.5
        assert [(r.method, r.path) for r in requests] == [("GET", "/health")]
        result = await HttpCheck("api", url + "/", expect_status=204).run(app)
        assert not result.ok
        assert result.error == f"CheckFailed: GET {url}/ answered 200, expected 204"
    async with http_server(answer(503)) as (url, _):
        result = await HttpCheck("api", url).run(app)
        assert not result.ok and "answered 503, expected 200" in (result.error or "")


async def test_http_check_fails_on_a_refused_connection_and_on_a_silent_server(app: App) -> None:
    port = await closed_port()
    result = await HttpCheck("api", f"http://127.0.0.1:{port}/").run(app)
    assert not result.ok and result.error is not None and "ConnectError" in result.error

    release = anyio.Event()

    async def never(request: Request) -> int:
        await release.wait()
        return 200

    async with http_server(never) as (url, requests):
        result = await HttpCheck("api", url, timeout=0.1).run(app)
        release.set()
    assert not result.ok and len(requests) == 1
    # httpx's own timeout or the check's bound, whichever noticed first
    assert result.error in ("no answer within 0.1 s", "ReadTimeout")
    assert 0.1 <= result.latency < 0.5


async def test_tcp_check_against_a_listener_and_a_closed_port(app: App) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener:
        result = await TcpCheck("db", "127.0.0.1", port).run(app)
    assert (result.ok, result.kind, result.error) == (True, "tcp", None)
    result = await TcpCheck("db", "127.0.0.1", await closed_port()).run(app)
    assert not result.ok and result.error is not None and "OSError" in result.error


async def test_a_check_that_hangs_fails_at_its_timeout(app: App) -> None:
    class Hangs(Check):
        async def probe(self, app: App) -> None:
            await anyio.sleep_forever()

    result = await Hangs("stuck", timeout=0.05).run(app)
    assert (result.ok, result.kind, result.error) == (False, "custom", "no answer within 0.05 s")
    assert 0.05 <= result.latency < 0.5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: HttpCheck("x", "ftp://host/"), "must start with http"),
        (lambda: TcpCheck("x", "h", 0), "port=0"),
        (lambda: TcpCheck("x", "h", 80, timeout=0), "timeout=0"),
        (lambda: BackendCheck(""), "check name ''"),
        (lambda: WebhookNotifier("localhost:80"), "must start with http"),
    ],
)
async def test_check_and_webhook_settings_are_checked(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()


def test_without_httpx_http_checks_name_the_extra() -> None:
    out = run_script(
        """
        import sys
        sys.modules["httpx"] = None  # as if not installed
        from taskcore.monitor import HttpCheck
        try:
            HttpCheck("api", "http://127.0.0.1/")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    assert out == (
        "ConfigurationError HttpCheck 'api' needs httpx, which is not installed: "
        'pip install "taskcore[monitor]"'
    )


def test_importing_the_monitor_loads_neither_psutil_nor_httpx() -> None:
    out = run_script(
        """
        import sys
        import taskcore.monitor
        import taskcore.monitor.cli
        print(sorted(m for m in ("psutil", "httpx", "rich") if m in sys.modules))
        """
    )
    assert out == "[]"


# -- notifiers -----------------------------------------------------------------------------

ALERT = Alert(
    rule="no_worker",
    severity="critical",
    state=AlertState.FIRING,
    subject="emails",
    summary="queue emails: 3 task(s) ready and no live worker consumes it",
    value=3.0,
    threshold=0.0,
    since=T0,
    fired_at=T0 + 30,
)


async def test_webhook_posts_the_alert_as_json() -> None:
    async with http_server(answer(204)) as (url, requests):
        await WebhookNotifier(url + "/hook", headers={"authorization": "Bearer t"}).notify(ALERT)
    [request] = requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer t"
    assert msgspec.json.decode(request.body, type=Alert) == ALERT


async def test_webhook_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "taskcore.monitor"):
        async with http_server(answer(500)) as (url, _):
            await WebhookNotifier(url).notify(ALERT)
        await WebhookNotifier(f"http://127.0.0.1:{await closed_port()}/").notify(ALERT)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"webhook {url}: alert no_worker (firing) refused with status 500"
    assert "not delivered: ConnectError" in messages[1]


async def test_a_failing_notifier_stops_neither_the_others_nor_the_monitor(
    app: App, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sync_seen: list[Alert] = []
    async_seen: list[Alert] = []

    def explode(alert: Alert) -> None:
        raise RuntimeError("notifier down")

    async def record(alert: Alert) -> None:
        await anyio.lowlevel.checkpoint()
        async_seen.append(alert)

    class Broken(Notifier):
        async def notify(self, alert: Alert) -> None:
            raise anyio.BrokenResourceError

    monitor = Monitor(
        app,
        resources=False,
        rules=[Rule.above("deep", depth, 0)],
        notifiers=[
            CallableNotifier(explode),
            CallableNotifier(sync_seen.append),
            Broken(),
            CallableNotifier(record),
        ],
    )

    @app.task(queue="q")
    async def job() -> None:
        pass

    await job.enqueue()
    with caplog.at_level(logging.ERROR, "taskcore.monitor"):
        snapshot = await monitor.sample()
    assert [a.rule for a in snapshot.alerts] == ["deep"]
    assert [(a.rule, a.state) for a in sync_seen] == [("deep", AlertState.FIRING)]
    assert async_seen == sync_seen == list(monitor.alert_log)
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2
    assert any("CallableNotifier" in m and "failed on alert deep" in m for m in failures)


# -- the host sampler ------------------------------------------------------------------------


async def test_resource_sampler_reads_the_host(tmp_path: Path) -> None:
    sampler = ResourceSampler(str(tmp_path))
    first = sampler.sample()
    assert (first.net_sent_per_s, first.net_recv_per_s) == (0.0, 0.0)  # no earlier reading
    # send a megabyte over loopback between two samples: the counters include lo
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        received = 0
        done = anyio.Event()

        async def drain(stream: anyio.abc.ByteStream) -> None:
            nonlocal received
            async with stream:
                async for chunk in stream:
                    received += len(chunk)
            done.set()

        tg.start_soon(listener.serve, drain)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"x" * 1_000_000)
        await done.wait()
        tg.cancel_scope.cancel()
    second = sampler.sample()
    assert received == 1_000_000
    assert second.net_sent_per_s > 0 and second.net_recv_per_s > 0
    assert 0 <= second.cpu_percent <= 100
    assert second.memory_percent == pytest.approx(psutil.virtual_memory().percent, abs=5)
    assert second.disk_percent == pytest.approx(psutil.disk_usage(str(tmp_path)).percent, abs=1)
    assert second.process_rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)


async def test_a_missing_disk_path_is_refused(app: App, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Monitor(app, disk_path=str(tmp_path / "nowhere"))


# -- the monitor ---------------------------------------------------------------------------


class FlakyBackend(MemoryBackend):
    """The in-memory backend with a switch that makes its admin calls fail."""

    down = False

    async def stats(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise BackendUnavailable("connection refused (test outage)")
        return await super().stats(*args, **kwargs)

    async def workers(self) -> Any:
        if self.down:
            raise BackendUnavailable("connection refused (test outage)")
        return await super().workers()


async def test_a_backend_outage_gives_a_snapshot_with_a_failed_backend_check(
    clock: FakeClock,
) -> None:
    backend = FlakyBackend(clock=clock)
    seen: list[Alert] = []
    async with App(backend=backend, clock=clock) as app:

        @app.task(queue="q")
        async def job() -> None:
            pass

        monitor = Monitor(app, resources=False, notifiers=[CallableNotifier(seen.append)])
        await job.enqueue()
        await monitor.sample()
        clock.advance(30)
        first = await monitor.sample()
        assert [(a.rule, a.state) for a in first.alerts] == [("no_worker", AlertState.FIRING)]
        backend.down = True
        clock.advance(1)
        down = await monitor.sample()
        assert down.queues == [] and down.workers == [] and down.rates == Rates()
        [check] = down.checks
        assert (check.name, check.ok) == ("backend", False)
        assert check.error == "BackendUnavailable: connection refused (test outage)"
        # the queue's alert neither resolves nor starts again: there is no data about it
        assert {(a.rule, a.subject, a.state) for a in down.alerts} == {
            ("no_worker", "q", AlertState.FIRING),
            ("check_failing", "backend", AlertState.FIRING),
        }
        backend.down = False
        clock.advance(1)
        up = await monitor.sample()
        assert [(a.rule, a.state) for a in up.alerts] == [("no_worker", AlertState.FIRING)]
    assert [(a.rule, a.state) for a in seen] == [
        ("no_worker", AlertState.FIRING),
        ("check_failing", AlertState.FIRING),
        ("check_failing", AlertState.RESOLVED),
    ]


async def test_run_samples_on_the_app_clock_and_streams_to_subscribers(
    app: App, clock: FakeClock
) -> None:
    monitor = Monitor(app, interval=5, resources=False, notifiers=[], history=2)
    with monitor.subscribe(buffer=1) as slow, monitor.subscribe() as fast:
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            assert monitor.latest is not None and monitor.latest.at == T0
            assert (await fast.receive()).at == T0
            for n in (1, 2, 3):
                while clock.sleepers == 0:  # the monitor is back asleep
                    await anyio.lowlevel.checkpoint()
                clock.advance(5)
                assert (await fast.receive()).at == T0 + 5 * n
            tg.cancel_scope.cancel()
        # the slow subscriber read nothing: it kept the first, missed the rest
        assert (await slow.receive()).at == T0
        with pytest.raises(anyio.WouldBlock):
            slow.receive_nowait()
        # caught up, it receives again
        clock.advance(1)
        latest = await monitor.sample()
        assert slow.receive_nowait() is latest is monitor.latest
    assert [s.at for s in monitor.history] == [T0 + 15, T0 + 16]  # bounded


async def test_a_late_wake_on_a_slot_samples_once(app: App, clock: FakeClock) -> None:
    """The clock jumps several intervals while the monitor sleeps, onto a slot: one
    sample then, the next one a whole interval later (not a second one at once)."""
    monitor = Monitor(app, interval=5, resources=False, notifiers=[])
    with monitor.subscribe() as stream:
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            assert (await stream.receive()).at == T0
            for step, expected in ((15, T0 + 15), (5, T0 + 20), (7, T0 + 27), (3, T0 + 30)):
                while clock.sleepers == 0:  # the monitor is back asleep
                    await anyio.lowlevel.checkpoint()
                clock.advance(step)
                assert (await stream.receive()).at == expected
            tg.cancel_scope.cancel()


async def test_rates_come_from_successive_counts_and_never_go_negative(
    app: App, clock: FakeClock
) -> None:
    monitor = Monitor(app, resources=False, notifiers=[], rules=[])

    @app.task(queue="q")
    async def job() -> None:
        pass

    assert (await monitor.sample()).rates == Rates()
    handles = [await job.enqueue() for _ in range(4)]
    async with app.worker(queues=["q"]):
        for h in handles:
            await h.result(timeout=5)
    clock.advance(2)
    assert (await monitor.sample()).rates == Rates(succeeded=2.0)
    await app.purge("q", [State.SUCCEEDED])
    clock.advance(2)
    assert (await monitor.sample()).rates == Rates()


async def test_monitor_settings_are_checked(app: App) -> None:
    with pytest.raises(ConfigurationError, match="interval=0"):
        Monitor(app, interval=0)
    with pytest.raises(ConfigurationError, match="history=0"):
        Monitor(app, history=0)
    with pytest.raises(ConfigurationError, match=r"check names must be unique: \['backend'\]"):
        Monitor(app, checks=[TcpCheck("backend", "127.0.0.1", 1)])
    with pytest.raises(ConfigurationError, match="wrap a function in CallableNotifier"):
        Monitor(app, notifiers=[print])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="buffer=0"):
        with Monitor(app, resources=False).subscribe(0):
            pass


# -- stored minutes ------------------------------------------------------------------------


async def test_partial_minutes_cover_what_was_watched_and_merge_weighted_by_snapshots() -> None:
    minute = T0 - T0 % 60
    fold = MinuteFold()
    assert fold.flush() is None
    for at, cpu in ((minute + 15, 10.0), (minute + 20, 20.0), (minute + 25, 30.0)):
        assert fold.add(snap(at, [queue(depth=int(cpu))], resources=host(cpu=cpu))) is None
    first = fold.flush()  # stopped: covered from its first snapshot to its last
    assert first is not None
    assert (first.at, first.samples, first.seconds, first.cpu_percent) == (minute, 3, 10.0, 20.0)
    assert fold.flush() is None
    # sampling again after a flush covers from the last snapshot flushed
    assert fold.add(snap(minute + 40, [queue(depth=7)], resources=host(cpu=60.0))) is None
    second = fold.add(snap(minute + 61))
    assert second is not None and (second.samples, second.seconds) == (1, 35.0)
    # a minute entered from the previous one is covered from its start
    whole = fold.add(snap(minute + 125))
    assert whole is not None and (whole.at, whole.seconds, whole.partial) == (
        minute + 60,
        60,
        False,
    )

    merged = merge([first, second])
    assert (merged.samples, merged.seconds, merged.depth) == (4, 45.0, 7)  # counts: the later
    assert merged.cpu_percent == (3 * 20.0 + 60.0) / 4 and merged.memory_percent == 10.0
    assert merge([first]) is first
    same_minute = msgspec.structs.replace(whole, at=minute)
    assert merge([first, same_minute, second]) is same_minute
    # overlapping partial points never cover more than the minute
    assert merge([first, first, first, first, first, first, first]).seconds == 60.0


# -- the command -------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    monitor_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["monitor", *argv])


def test_monitor_once_prints_a_sample_and_exits_1_on_an_alert(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich: one line per row
    port = anyio.run(closed_port)
    status = monitor_cli.run(
        parse("tests.core.cli_app:app", "--once", "--check-tcp", f"db=127.0.0.1:{port}")
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "check_failing" in out and "health check db is failing" in out
    assert "backend" in out and "host: CPU" in out


def test_monitor_once_exits_0_when_all_is_well(capsys: pytest.CaptureFixture[str]) -> None:
    async def serve_and_check() -> int:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            args = parse("tests.core.cli_app:app", "--once", "--check-tcp", f"db=127.0.0.1:{port}")
            # the command runs its own event loop: give it a thread of its own
            return await anyio.to_thread.run_sync(monitor_cli.run, args)

    status = anyio.run(serve_and_check)
    out = capsys.readouterr().out
    assert "db" in out and "failing" not in out
    assert status == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--check-tcp", "db"], "write it as NAME=HOST:PORT"),
        (["--check-tcp", "db=localhost"], "write the address as HOST:PORT"),
        (["--check-http", "api=localhost:80"], "must start with http"),
        (["--interval", "0"], "interval=0"),
    ],
)
def test_monitor_command_refuses_bad_options(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert monitor_cli.run(parse("tests.core.cli_app:app", "--once", *argv)) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
