"""The web API and dashboard end to end, on memory (asyncio and trio), Redis and
PostgreSQL: requests through httpx's ASGI transport (the SSE stream through the ASGI
interface directly, since that transport buffers whole responses), one run under a
real uvicorn server. The monitor is driven by ``await monitor.sample()``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from taskcore import App, ConfigurationError, FakeClock, State
from taskcore.backend import AttemptError, Outcome, OutcomeKind
from taskcore.memory import MemoryBackend
from taskcore.monitor.monitor import Monitor
from taskcore.monitor.rules import Rule
from taskcore.web import cli as web_cli
from taskcore.web import create_app
from taskcore.web.audit import AuditLog
from taskcore.web.auth import fingerprint
from taskcore.web.charts import sparkline
from taskcore.web.panels import PANELS
from taskcore.web.routes import openapi_path

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"view-token": "viewer", "op-token": "operator", "admin-token": "admin"}
EVIL = "<script>alert(1)</script>"


def client(web: Starlette, token: str | None = None, **headers: str) -> httpx.AsyncClient:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web), base_url="http://testserver", headers=headers
    )


def job(app: App, name: str = "web.job", queue: str = "default") -> Any:
    @app.task(name=name, queue=queue)
    async def fn(x: int) -> int:
        return x

    return fn


async def dead_letter(app: App, task: Any, message: str = "boom") -> str:
    """A task in the dead-letter queue, its one attempt failed with ``message``."""
    handle = await task.enqueue(1)
    leases = await app.backend.claim([task.options.queue], 100, 30.0, "test-worker")
    now = app.clock.now()
    error = AttemptError(1, "ValueError", message, f"Traceback: {message}", now)
    outcomes = [  # the others go back as they were
        Outcome(lease.message.id, lease.token, OutcomeKind.RELEASED, now)
        if lease.message.id != handle.id
        else Outcome(handle.id, lease.token, OutcomeKind.DEAD, now, error=error)
        for lease in leases
    ]
    assert handle.id in [o.task_id for o in outcomes]
    assert all(await app.backend.settle(outcomes))
    return str(handle.id)


async def state_of(app: App, task_id: str) -> State | None:
    rec = await app.backend.get(task_id)
    return None if rec is None else rec.state


# -- queues, tasks, dead letters ---------------------------------------------------------


async def test_pause_shows_in_stats_and_resume_clears_it(app: App) -> None:
    await job(app).enqueue(1)
    web = create_app(app, tokens=TOKENS)
    async with client(web, "op-token") as http:
        r = await http.post("/api/queues/default/pause")
        assert r.status_code == 200, r.text
        [stats] = await app.stats(["default"])
        assert stats.paused
        [queue] = (await http.get("/api/queues")).json()
        assert queue["queue"] == "default" and queue["paused"] is True
        assert queue["depth_by_priority"]["P2"] == 1 and queue["states"]["queued"] == 1
        assert (await http.post("/api/queues/default/resume")).status_code == 200
        [stats] = await app.stats(["default"])
        assert not stats.paused


async def test_task_search_detail_and_clear_errors(app: App) -> None:
    fn = job(app)
    queued = await fn.enqueue(1)
    dead = await dead_letter(app, fn, "it broke")
    web = create_app(app)
    async with client(web) as http:
        r = await http.get("/api/tasks", params={"state": "queued"})
        assert [t["id"] for t in r.json()] == [queued.id]
        r = await http.get("/api/tasks", params={"state": "dead", "task": "web.job"})
        assert [t["last_error"] for t in r.json()] == ["ValueError: it broke"]
        detail = (await http.get(f"/api/tasks/{dead}")).json()
        assert detail["state"] == "dead" and detail["args"] == {"x": 1}
        assert [e["message"] for e in detail["errors"]] == ["it broke"]

        r = await http.get("/api/tasks", params={"state": "zombie"})
        assert r.status_code == 400
        assert "unknown state 'zombie'" in r.json()["error"] and "queued" in r.json()["error"]
        r = await http.get("/api/tasks", params={"limit": "0"})
        assert r.status_code == 400 and "limit='0'" in r.json()["error"]
        r = await http.get("/api/tasks", params={"limit": "many"})
        assert r.status_code == 400
        r = await http.get("/api/tasks/no-such-task")
        assert r.status_code == 404 and "no-such-task" in r.json()["error"]
        # an id no task can have (PostgreSQL's text holds no NUL): found nowhere, no 500
        assert (await http.get("/api/tasks/a%00b")).status_code == 404
        assert (await http.post("/api/tasks/a%00b/cancel")).status_code == 404
        r = await http.get("/api/tasks", params={"text": "a\x00b"})
        assert r.status_code == 200 and r.json() == []
        r = await http.get("/api/nothing")
        assert r.status_code == 404 and "/api/openapi.json" in r.json()["error"]
        r = await http.delete("/api/queues")
        assert r.status_code == 405 and "DELETE is not allowed" in r.json()["error"]


async def test_cancel_and_retry_change_the_backend(app: App) -> None:
    fn = job(app)
    waiting = await fn.enqueue(1)
    web = create_app(app)
    async with client(web) as http:
        r = await http.post(f"/api/tasks/{waiting.id}/cancel")
        assert r.status_code == 200 and r.json()["result"] == "cancelled"
        assert await state_of(app, waiting.id) == State.CANCELLED
        r = await http.post(f"/api/tasks/{waiting.id}/cancel")
        assert r.status_code == 409 and "cancelled" in r.json()["error"]
        r = await http.post(f"/api/tasks/{waiting.id}/retry")
        assert r.status_code == 409 and "only dead or failed" in r.json()["error"]

        dead = await dead_letter(app, fn)
        assert (await http.post(f"/api/tasks/{dead}/retry")).status_code == 200
        assert await state_of(app, dead) == State.QUEUED
        assert (await http.post("/api/tasks/nope/cancel")).status_code == 404


async def test_dead_letters_list_retry_and_purge(app: App) -> None:
    fn = job(app)
    first = await dead_letter(app, fn)
    web = create_app(app, tokens=TOKENS)
    async with client(web, "admin-token") as admin, client(web, "op-token") as operator:
        listed = (await admin.get("/api/dead-letters")).json()
        assert [t["id"] for t in listed] == [first]
        r = await operator.post("/api/dead-letters/retry", json={"ids": [first, "unknown"]})
        assert r.json() == {"retried": [first], "not_retried": ["unknown"]}
        assert await state_of(app, first) == State.QUEUED

        second = await dead_letter(app, fn)
        r = await operator.post("/api/dead-letters/purge", json={"queue": "default"})
        assert r.status_code == 403 and "admin" in r.json()["error"]
        assert await state_of(app, second) == State.DEAD
        r = await admin.post("/api/dead-letters/purge", json={"queue": "default"})
        assert r.json()["purged"] == 1
        assert await state_of(app, second) is None
        assert await state_of(app, first) == State.QUEUED  # only dead letters go

        r = await admin.post("/api/dead-letters/retry", json={"ids": "x"})
        assert r.status_code == 400 and "ids" in r.json()["error"]


async def test_purge_queue_states_needs_admin_and_valid_states(app: App) -> None:
    fn = job(app)
    queued = await fn.enqueue(1)
    dead = await dead_letter(app, fn)
    web = create_app(app, tokens=TOKENS)
    async with client(web, "admin-token") as http:
        r = await http.post("/api/queues/default/purge", json={"states": ["deadish"]})
        assert r.status_code == 400 and "unknown state 'deadish'" in r.json()["error"]
        r = await http.post("/api/queues/default/purge", json={"states": ["running"]})
        assert r.status_code == 400 and "cancel" in r.json()["error"]
        r = await http.post("/api/queues/default/purge", json={"states": ["queued"]})
        assert r.json()["purged"] == 1
    assert await state_of(app, queued.id) is None
    assert await state_of(app, dead) == State.DEAD


async def test_schedules_list_periodic_tasks_with_next_run(app: App, clock: FakeClock) -> None:
    @app.periodic("*/5 * * * *", name="web.tick")
    async def tick() -> None: ...

    web = create_app(app)
    async with client(web) as http:
        [s] = (await http.get("/api/schedules")).json()
    assert s["task"] == "web.tick" and s["cron"] == "*/5 * * * *" and s["tz"] == "UTC"
    assert clock.now() < s["next_run"] <= clock.now() + 300 and s["next_run"] % 300 == 0


# -- auth and audit --------------------------------------------------------------------------


async def test_roles_401_403_and_cookie_login(app: App) -> None:
    await job(app).enqueue(1)
    web = create_app(app, tokens=TOKENS)
    async with client(web) as anon:
        r = await anon.get("/api/queues")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "no token" in r.json()["error"]
        r = await anon.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
        assert (await anon.get("/healthz")).status_code == 200
    async with client(web, "wrong") as bad:
        r = await bad.get("/api/queues")
        assert r.status_code == 401 and "unknown token" in r.json()["error"]
    async with client(web, "view-token") as viewer:
        assert (await viewer.get("/api/queues")).status_code == 200
        r = await viewer.post("/api/queues/default/pause")
        assert r.status_code == 403 and "operator" in r.json()["error"]
    async with client(web, "op-token") as operator:
        r = await operator.post("/api/queues/default/purge", json={"states": ["dead"]})
        assert r.status_code == 403
    [stats] = await app.stats(["default"])
    assert not stats.paused  # the refused pause changed nothing

    async with client(web) as browser:
        r = await browser.post("/login", json={"token": "nope"})
        assert r.status_code == 401
        r = await browser.post("/login", json={"token": "op-token"})
        assert r.status_code == 200 and r.json() == {"role": "operator"}
        cookie = r.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert (await browser.get("/api/queues")).status_code == 200
        assert (await browser.get("/")).status_code == 200
        r = await browser.post("/api/queues/default/pause")  # no CSRF header
        assert r.status_code == 403 and "x-requested-with" in r.json()["error"]
        r = await browser.post(
            "/api/queues/default/pause", headers={"X-Requested-With": "taskcore"}
        )
        assert r.status_code == 200
        [stats] = await app.stats(["default"])
        assert stats.paused
        await browser.post("/logout")
        assert (await browser.get("/api/queues")).status_code == 401

    async with client(web) as form:  # the login page's plain form post
        r = await form.post("/login", data={"token": "view-token", "next": "/tasks"})
        assert r.status_code == 303 and r.headers["location"] == "/tasks"
        r = await form.post("/login", data={"token": "view-token", "next": "//evil.example"})
        assert r.headers["location"] == "/"


async def test_every_change_is_audited_without_the_token(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskcore.audit")
    fn = job(app)
    handle = await fn.enqueue(1)
    web = create_app(app, tokens=TOKENS)
    async with client(web, "op-token") as operator, client(web, "view-token") as viewer:
        await operator.post("/api/queues/default/pause")
        await operator.post(f"/api/tasks/{handle.id}/cancel")
        await viewer.post("/api/queues/default/resume")  # refused
        entries = (await viewer.get("/api/audit")).json()
    who = f"operator:{fingerprint('op-token')}"
    assert [(e["who"], e["action"], e["targets"], e["ok"]) for e in entries] == [
        (who, "queue.pause", ["default"], True),
        (who, "task.cancel", [handle.id], True),
        (f"viewer:{fingerprint('view-token')}", "queue.resume", ["default"], False),
    ]
    assert entries[1]["result"] == "cancelled" and "403" in entries[2]["result"]
    assert entries[0]["at"] == app.clock.now()
    logged = [r.getMessage() for r in caplog.records if r.name == "taskcore.audit"]
    assert len(logged) == 3 and "queue.pause" in logged[0]
    everything = json.dumps(entries) + "".join(logged)
    assert not any(token in everything for token in TOKENS)


# -- limits -------------------------------------------------------------------------------


async def test_body_over_the_limit_is_refused_with_413(app: App) -> None:
    web = create_app(app, max_body=64)
    async with client(web) as http:
        r = await http.post("/api/dead-letters/retry", json={"ids": ["x" * 100]})
        assert r.status_code == 413
        assert "over the limit of 64 bytes" in r.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            yield b'{"ids": ["'
            yield b"y" * 100
            yield b'"]}'

        r = await http.post("/api/dead-letters/retry", content=chunks())
        assert r.status_code == 413
        r = await http.post("/api/dead-letters/retry", json={"ids": ["z"]})
        assert r.status_code == 200


async def test_rate_limit_429_with_retry_after_from_the_backend_bucket(
    app: App, clock: FakeClock
) -> None:
    web = create_app(app, rate_limit="2/m")  # one request per 30 s, bursts of 1
    async with client(web) as http:
        assert (await http.get("/api/queues")).status_code == 200
        r = await http.get("/api/queues")
        assert r.status_code == 429 and r.headers["retry-after"] == "30"
        assert "retry after 30 s" in r.json()["error"]
        assert (await http.get("/healthz")).status_code == 200  # probes are exempt
        clock.advance(30)
        assert (await http.get("/api/queues")).status_code == 200


# -- health, metrics, OpenAPI ----------------------------------------------------------------


async def test_health_and_readiness(app: App) -> None:
    async with client(create_app(app)) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}


class _Unresponsive(MemoryBackend):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.answer = anyio.Event()

    async def kv_get(self, key: str) -> bytes | None:
        await self.answer.wait()
        return None


async def test_readiness_503_when_the_backend_does_not_answer(
    backend_kind: str, clock: FakeClock
) -> None:
    if backend_kind != "memory":
        pytest.skip("a backend that hangs on purpose is built on the memory backend")
    backend = _Unresponsive(clock)
    async with App(backend=backend, clock=clock) as app, client(create_app(app)) as http:
        with anyio.fail_after(5):  # the probe itself must give up after half a second
            r = await http.get("/readyz")
        assert r.status_code == 503 and "0.5 s" in r.json()["error"]
        backend.answer.set()
        assert (await http.get("/readyz")).status_code == 200


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_expose_the_latest_snapshot(app: App) -> None:
    fn = job(app)
    for _ in range(3):
        await fn.enqueue(1)
    await fn.with_options(priority=0).enqueue(1)
    await dead_letter(app, fn)
    monitor = Monitor(app, resources=True)
    async with client(create_app(app, monitor=monitor)) as http:
        before = _samples((await http.get("/metrics")).text)
        assert before[("taskcore_monitor_up", ())] == 0
        await monitor.sample()
        r = await http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)
    assert m[("taskcore_monitor_up", ())] == 1
    assert m[("taskcore_queue_depth", (("priority", "P2"), ("queue", "default")))] == 3
    assert m[("taskcore_queue_depth", (("priority", "P0"), ("queue", "default")))] == 1
    assert m[("taskcore_queue_tasks", (("queue", "default"), ("state", "dead")))] == 1
    assert m[("taskcore_queue_paused", (("queue", "default"),))] == 0
    assert m[("taskcore_workers_alive", ())] == 0
    assert m[("taskcore_alerts_firing", (("severity", "critical"),))] == 0
    assert 0 <= m[("taskcore_host_cpu_percent", ())] <= 100
    labels = {k for _, pairs in m for k, _ in pairs}
    assert labels <= {"queue", "priority", "state", "check", "kind", "outcome", "severity"}


def test_a_sparkline_shows_the_latest_value_and_the_peak_it_is_scaled_to() -> None:
    svg = sparkline("<Depth>", [1.0, 4.0, 2.0], unit="/s")
    assert "&lt;Depth&gt;: <b>2/s</b>" in svg and "(max 4/s)" in svg
    points = re.search(r'points="([^"]+)"', svg)
    assert points is not None
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    assert len(ys) == 3 and ys[1] == min(ys) == 2.0  # the peak touches the top padding
    idle = sparkline("Throughput", [0.0, 0.0], unit="/s")
    assert "(max 0/s)" in idle and "1e-09" not in idle


def test_the_grafana_dashboard_charts_metrics_that_exist() -> None:
    async def exposed() -> set[str]:
        async with App("memory://") as app:
            monitor = Monitor(app, resources=True)
            async with client(create_app(app, monitor=monitor)) as http:
                await monitor.sample()
                text = (await http.get("/metrics")).text
        return {f.name for f in text_string_to_metric_families(text)}

    names = anyio.run(exposed)
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"taskcore_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 10
    assert queried <= names, f"not exposed by /metrics: {sorted(queried - names)}"


async def test_openapi_describes_every_route(app: App) -> None:
    web = create_app(app, tokens=TOKENS)
    async with client(web) as http:  # public: clients discover the API before a token
        doc = (await http.get("/api/openapi.json")).json()
    served = {
        (openapi_path(route.path), method.lower())
        for route in web.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert len(served) >= 25
    assert served == described
    purge = doc["paths"]["/api/queues/{queue}/purge"]["post"]
    assert purge["x-taskcore-role"] == "admin" and purge["requestBody"]
    assert doc["paths"]["/api/tasks"]["get"]["parameters"][1]["name"] == "state"


async def test_alerts_snapshot_and_history_follow_the_monitor(app: App, clock: FakeClock) -> None:
    fn = job(app)
    for _ in range(2):
        await fn.enqueue(1)
    deep = Rule(
        "deep",
        lambda s: {q.name: q.depth for q in s.queues},
        threshold=1,
        severity="critical",
        summary="queue {subject} holds {value} " + EVIL,
    )
    monitor = Monitor(app, resources=False, rules=[deep], notifiers=())
    async with client(create_app(app, monitor=monitor)) as http:
        r = await http.get("/api/snapshot")
        assert r.status_code == 503 and "first sample" in r.json()["error"]
        await monitor.sample()
        alerts = (await http.get("/api/alerts")).json()
        [active] = alerts["active"]
        assert (active["rule"], active["state"], active["subject"]) == ("deep", "firing", "default")
        m = _samples((await http.get("/metrics")).text)
        assert m[("taskcore_alerts_firing", (("severity", "critical"),))] == 1
        panel = (await http.get("/")).text
        assert "queue default holds 2" in panel and EVIL not in panel

        await app.purge("default", [State.QUEUED])
        clock.advance(1)
        await monitor.sample()
        alerts = (await http.get("/api/alerts")).json()
        assert alerts["active"] == []
        assert [a["state"] for a in alerts["recent"]] == ["firing", "resolved"]
        history = (await http.get("/api/history")).json()
        snapshot = (await http.get("/api/snapshot")).json()
    assert [h["at"] for h in history] == [clock.now() - 1, clock.now()]
    assert snapshot == history[-1] and snapshot["queues"][0]["depth"] == 0


# -- the dashboard ------------------------------------------------------------------------


async def test_dashboard_page_has_every_panel_and_no_external_assets(app: App) -> None:
    fn = job(app)
    await fn.enqueue(1)

    @app.periodic("0 * * * *", name="web.hourly")
    async def hourly() -> None: ...

    monitor = Monitor(app, resources=False)
    await monitor.sample()
    async with client(create_app(app, monitor=monitor)) as http:
        r = await http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for name in PANELS:
        assert f'<section id="panel-{name}">' in page
    assert 'data-post="/api/queues/default/pause"' in page
    assert "web.hourly" in page and "<svg" in page and "new EventSource" in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN


async def test_user_data_is_escaped_everywhere(app: App) -> None:
    fn = job(app, name=f"evil{EVIL}", queue="evil<b>q")
    dead = await dead_letter(app, fn, f'<img src=x onerror="alert(2)"> {EVIL}')
    monitor = Monitor(app, resources=False)
    await monitor.sample()
    async with client(create_app(app, monitor=monitor)) as http:
        pages = [
            (await http.get("/")).text,
            (await http.get("/tasks", params={"state": "dead"})).text,
            (await http.get(f"/tasks/{dead}")).text,
        ]
    for page in pages:
        assert EVIL not in page and "<img" not in page and "evil<b>q" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "evil&lt;b&gt;q" in pages[0]
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in pages[2]


async def test_task_views_find_and_show_a_task(app: App) -> None:
    fn = job(app)
    queued = await fn.enqueue(7)
    dead = await dead_letter(app, fn, "kaput")
    async with client(create_app(app)) as http:
        found = (await http.get("/tasks", params={"text": "kaput"})).text
        assert dead in found and queued.id not in found
        detail = await http.get(f"/tasks/{dead}")
        assert "Traceback: kaput" in detail.text
        assert f'data-post="/api/tasks/{dead}/retry"' in detail.text
        missing = await http.get("/tasks/nothing-here")
        assert missing.status_code == 404 and "nothing-here" in missing.text
        r = await http.get("/tasks", params={"state": "bogus"})
        assert r.status_code == 400 and "unknown state" in r.text


class SSE:
    """Reads one Server-Sent Events response driven through the ASGI interface."""

    def __init__(self, chunks: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""
        self.status = 0
        self.headers: Mapping[bytes, bytes] = {}
        self.complete = anyio.Event()

    async def event(self, timeout: float = 5) -> tuple[str, str]:
        with anyio.fail_after(timeout):
            while True:
                while b"\n\n" in self.buffer:
                    raw, self.buffer = self.buffer.split(b"\n\n", 1)
                    fields = dict(
                        line.split(b": ", 1) for line in raw.split(b"\n") if b": " in line
                    )
                    if b"event" in fields:
                        return fields[b"event"].decode(), fields[b"data"].decode()
                self.buffer += await self.chunks.receive()


@contextlib.asynccontextmanager
async def sse(web: Starlette, path: str, headers: dict[str, str]) -> AsyncIterator[SSE]:
    send_chunk, chunks = anyio.create_memory_object_stream[bytes](100)
    reader = SSE(chunks)
    gone = anyio.Event()
    asked = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reader.status = message["status"]
            reader.headers = dict(message["headers"])
        elif message["type"] == "http.response.body":
            await send_chunk.send(message.get("body", b""))
            if not message.get("more_body", False):
                reader.complete.set()

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    async with anyio.create_task_group() as tg:
        tg.start_soon(web, scope, receive, send)
        yield reader
        gone.set()
        tg.cancel_scope.cancel()


async def test_events_push_rerendered_panels_after_each_sample(app: App) -> None:
    fn = job(app)
    monitor = Monitor(app, resources=False)
    await monitor.sample()
    web = create_app(app, monitor=monitor, tokens=TOKENS)
    async with sse(web, "/api/events", {"Authorization": "Bearer view-token"}) as stream:
        event, data = await stream.event()
        assert stream.status == 200
        assert stream.headers[b"content-type"].startswith(b"text/event-stream")
        assert event == "panels"
        first = json.loads(data)
        assert set(first) == set(PANELS) and "No queues yet." in first["queues"]

        await fn.enqueue(1)
        await fn.enqueue(2)
        await monitor.sample()
        event, data = await stream.event()
        queues = json.loads(data)["queues"]
        assert event == "panels" and "<td>default</td>" in queues
        assert 'data-post="/api/queues/default/pause"' in queues
    async with sse(web, "/api/events", {}) as anonymous:
        with anyio.fail_after(5):
            await anonymous.complete.wait()
        assert anonymous.status == 401 and b"authentication required" in anonymous.buffer + (
            await anonymous.chunks.receive()
        )


# -- a real server ----------------------------------------------------------------------------


async def test_served_by_uvicorn_over_real_http(app: App, anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("uvicorn serves on asyncio")
    import uvicorn

    started = anyio.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            started.set()

    web = create_app(app, monitor=Monitor(app, resources=False))
    server = Server(uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            await started.wait()
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.get("/healthz")
            snapshot = await http.get("/api/snapshot")  # the lifespan ran the monitor
        server.should_exit = True
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert snapshot.status_code == 200 and "queues" in snapshot.json()


# -- the command ---------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskcore")
    web_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["web", "tests.core.cli_app:app", *argv])


def test_the_command_refuses_an_open_dashboard_beyond_loopback() -> None:
    with pytest.raises(ConfigurationError, match=r"--host 0.0.0.0 .* --token TOKEN:ROLE"):
        web_cli.run(_args("--host", "0.0.0.0"))
    web_cli.check_bind("0.0.0.0", {"s3cret": "admin"})  # with a token it may
    for loopback in ("127.0.0.1", "::1", "localhost"):
        web_cli.check_bind(loopback, {})


def test_the_command_reads_tokens_and_their_roles() -> None:
    args = _args("--token", "a:b:viewer", "--token", "s3cret:ADMIN", "--port", "9000")
    assert web_cli.parse_tokens(args.token) == {"a:b": "viewer", "s3cret": "admin"}
    assert args.port == 9000 and args.host == "127.0.0.1" and args.interval == 1.0
    with pytest.raises(ConfigurationError, match="unknown role 'root'"):
        web_cli.parse_tokens(["s3cret:root"])
    with pytest.raises(ConfigurationError, match="TOKEN:ROLE"):
        web_cli.parse_tokens(["s3cret"])


def test_the_command_parser_loads_without_the_web_dependencies() -> None:
    # the taskcore command builds every subcommand's parser, even for 'taskcore worker'
    script = (
        "import sys; import taskcore.web.cli; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'prometheus_client') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


async def test_the_audit_trail_is_stored_shared_and_kept_for_audit_ttl(
    app: App, make_app: Any, clock: FakeClock
) -> None:
    first = create_app(app, tokens=TOKENS)
    t0 = clock.now()
    async with client(first, "op-token") as operator:
        await operator.post("/api/queues/a/pause")
        clock.advance(10)
        await operator.post("/api/queues/b/pause")
    # another web process on the same backend (or this one restarted) reads the same trail
    async with make_app() as other_app:
        other = create_app(other_app, tokens=TOKENS)
        async with client(other, "view-token") as viewer:
            entries = (await viewer.get("/api/audit")).json()
            assert [e["targets"] for e in entries] == [["a"], ["b"]]
            since = (await viewer.get("/api/audit", params={"since": t0 + 5})).json()
            assert [e["targets"] for e in since] == [["b"]]
            latest = (await viewer.get("/api/audit", params={"limit": 1})).json()
            assert [e["targets"] for e in latest] == [["b"]]
            bad = await viewer.get("/api/audit", params={"since": "yesterday"})
            assert bad.status_code == 400 and "epoch seconds" in bad.json()["error"]
        async with other.router.lifespan_context(other):  # start-up loads the dashboard's log
            assert [e.targets for e in other.state.taskcore.audit.entries] == [["a"], ["b"]]
    clock.advance(app.audit_ttl - 10 + 1)  # the first entry is past audit_ttl
    await app.trim_journal()
    async with client(first, "view-token") as viewer:
        entries = (await viewer.get("/api/audit")).json()
    assert [e["targets"] for e in entries] == [["b"]]


async def test_the_live_audit_panel_shows_every_web_process_s_changes_once(
    app: App, make_app: Any, clock: FakeClock
) -> None:
    elsewhere = create_app(app, tokens=TOKENS)  # another web process on the same backend
    async with make_app() as here_app:
        monitor = Monitor(here_app, resources=False, rules=[], notifiers=[])
        await monitor.sample()
        here = create_app(here_app, monitor=monitor, tokens=TOKENS)
        async with sse(here, "/api/events", {"Authorization": "Bearer view-token"}) as stream:
            assert "No actions yet." in json.loads((await stream.event())[1])["audit"]
            async with client(elsewhere, "op-token") as operator:
                assert (await operator.post("/api/queues/far/pause")).status_code == 200
            clock.advance(1)
            await monitor.sample()
            audit = json.loads((await stream.event())[1])["audit"]
            assert audit.count("queue.pause") == 1 and "<td>far</td>" in audit

            async with client(here, "op-token") as operator:  # this process's own change
                assert (await operator.post("/api/queues/near/pause")).status_code == 200
            clock.advance(1)
            await monitor.sample()
            audit = json.loads((await stream.event())[1])["audit"]
            assert audit.count("queue.pause") == 2 and "<td>near</td>" in audit
        entries = here.state.taskcore.audit.entries
        assert [e.targets for e in entries] == [["far"], ["near"]]


async def test_pulling_the_audit_trail_takes_each_new_entry_once_late_ones_too(
    app: App, make_app: Any, clock: FakeClock
) -> None:
    mine = AuditLog(clock, backend=lambda: app.backend)
    async with make_app() as other:
        theirs = AuditLog(clock, backend=lambda: other.backend)
        behind = AuditLog(FakeClock(clock.now() - 5), backend=lambda: other.backend)
        await theirs.record(None, "twice", ["t"], "ok", ok=True)
        await theirs.record(None, "twice", ["t"], "ok", ok=True)  # the same, the same instant
        clock.advance(1)
        await mine.record(None, "mine", [], "ok", ok=True)
        assert await mine.pull() == 2
        assert await mine.pull() == 0
        await behind.record(None, "late", [], "ok", ok=True)  # stored after newer ones
        assert await mine.pull() == 1
        assert [e.action for e in mine.entries] == ["late", "twice", "twice", "mine"]
        # bounded: at most `limit` entries a pull, the newest; a later pull with room
        # takes the rest
        clock.advance(1)
        for n in range(3):
            await theirs.record(None, "burst", [str(n)], "ok", ok=True)
        assert await mine.pull(limit=2) == 2
        assert [e.targets for e in mine.entries[-2:]] == [["1"], ["2"]]
        assert await mine.pull() == 1
        assert [e.targets for e in mine.entries[-3:]] == [["0"], ["1"], ["2"]]


async def test_task_logs_on_the_api_and_the_detail_page(app: App) -> None:
    loud = logging.getLogger("tests.web.task")
    loud.setLevel(logging.INFO)

    @app.task(name="web.talks")
    async def talks(x: int) -> int:
        loud.info("working on <%d>", x)
        return x

    @app.task(name="web.quiet")
    async def quiet() -> None: ...

    web = create_app(app)
    try:
        async with app.worker(poll_interval=0.05):
            h = await talks.enqueue(3)
            q = await quiet.enqueue()
            await h.result(timeout=5)
            await q.result(timeout=5)
    finally:
        loud.setLevel(logging.NOTSET)
    async with client(web) as http:
        [line] = (await http.get(f"/api/tasks/{h.id}/logs")).json()
        assert (line["level"], line["logger"], line["message"], line["attempt"]) == (
            "INFO",
            "tests.web.task",
            "working on <3>",
            1,
        )
        assert (await http.get(f"/api/tasks/{q.id}/logs")).json() == []
        assert (await http.get("/api/tasks/nope/logs")).status_code == 404
        page = (await http.get(f"/tasks/{h.id}")).text
        assert "INFO tests.web.task: working on &lt;3&gt;" in page
        assert "<h2>Logs</h2><p class=empty>None.</p>" in (await http.get(f"/tasks/{q.id}")).text


async def test_metrics_history_serves_the_stored_minutes(app: App, clock: FakeClock) -> None:
    monitor = Monitor(app, resources=False, notifiers=[])
    clock.advance(60 - clock.now() % 60)
    minute = clock.now()
    for _ in range(3):  # minutes 0, 1, 2: the first two are stored
        await monitor.sample()
        clock.advance(60)
    web = create_app(app)  # no monitor in this process: the history is the backend's
    async with client(web) as http:
        points = (await http.get("/api/metrics/history")).json()
        assert [(p["at"], p["samples"]) for p in points] == [(minute, 1), (minute + 60, 1)]
        later = (await http.get("/api/metrics/history", params={"since": minute + 1})).json()
        assert [p["at"] for p in later] == [minute + 60]
        until = (await http.get("/api/metrics/history", params={"until": minute + 60})).json()
        assert [p["at"] for p in until] == [minute]
        # the in-memory history is still the monitor's (404 without one)
        assert (await http.get("/api/history")).status_code == 404
