"""``create_app``: the ASGI application serving the API, the dashboard, health probes
and Prometheus metrics for one taskcore App."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from taskcore.app import App
from taskcore.errors import ConfigurationError
from taskcore.task import RateLimit

from .api import RestApi
from .audit import AuditLog
from .auth import TokenAuth
from .context import MonitorSource, WebContext
from .enqueue import EnqueueApi
from .events import Dashboard
from .limits import BodyLimit, ClientRateLimit
from .metrics import metrics_endpoint
from .pages import Pages
from .routes import Endpoint, build_routes
from .serialize import json_response

log = logging.getLogger("taskcore.web")

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_RATE_LIMIT", "READY_TIMEOUT", "create_app"]

DEFAULT_RATE_LIMIT = "20/s"
DEFAULT_MAX_BODY = 64 * 1024
READY_TIMEOUT = 0.5


def create_app(
    app: App,
    *,
    monitor: MonitorSource | None = None,
    tokens: Mapping[str, str] | None = None,
    rate_limit: str | RateLimit | None = DEFAULT_RATE_LIMIT,
    max_body: int = DEFAULT_MAX_BODY,
    audit_size: int = 500,
    run_monitor: bool = True,
) -> Starlette:
    """The web API and live dashboard of ``app`` as a Starlette (ASGI) application.

    Its lifespan opens ``app`` and, with ``run_monitor``, runs ``monitor`` (sampling
    every interval) until shutdown.

    Args:
        app: the taskcore App to show and act on.
        monitor: a :class:`taskcore.monitor.Monitor` of ``app``; without one the
            dashboard shows the backend's lists but no live statistics, charts or alerts.
        tokens: bearer token -> role (``viewer``, ``operator`` or ``admin``). None or
            empty: open access (bind to loopback only).
        rate_limit: requests per client, e.g. ``"20/s"`` or ``"600/m"``, taken from the
            backend's cluster-wide token bucket; None for no limit.
        max_body: the largest request body, in bytes.
        audit_size: how many audit entries the dashboard's in-memory log keeps (every
            web process's; the trail itself is stored in the backend for
            ``App(audit_ttl=...)``).
        run_monitor: False when the caller runs ``monitor`` itself.

    Raises:
        ConfigurationError: an unknown role, a malformed rate limit or a bad body limit.
    """
    if max_body < 0:
        raise ConfigurationError(f"max_body={max_body}: give a size in bytes >= 0")
    limit = None if rate_limit is None else RateLimit.parse(rate_limit)
    audit = AuditLog(app.clock, audit_size, backend=lambda: app.backend)
    ctx = WebContext(app=app, monitor=monitor, auth=TokenAuth(tokens), audit=audit)
    api = RestApi(ctx)
    dashboard = Dashboard(ctx)
    pages = Pages(ctx, dashboard)

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Readiness: the backend answers within half a second."""
        try:
            with anyio.fail_after(READY_TIMEOUT):
                await app.open()
                await app.backend.kv_get("taskcore:web:ready")
        except TimeoutError:
            return json_response(
                {"status": "unavailable",
                 "error": f"the backend did not answer within {READY_TIMEOUT} s"}, 503,
            )  # fmt: skip
        except Exception as exc:  # any failure to reach the backend means not ready
            return json_response({"status": "unavailable", "error": str(exc)}, 503)
        return json_response({"status": "ready"})

    latest = (lambda: None) if monitor is None else (lambda: monitor.latest)
    endpoints: list[Endpoint] = [
        *pages.endpoints(),
        *api.endpoints(),
        *EnqueueApi(ctx).endpoints(),
        Endpoint("GET", "/healthz", healthz, None, "Liveness probe.", tag="ops"),
        Endpoint("GET", "/readyz", readyz, None,
                 "Readiness probe: 503 unless the backend answers within 0.5 s.", tag="ops"),
        Endpoint("GET", "/metrics", metrics_endpoint(latest), None,
                 "Prometheus metrics from the monitor's latest snapshot.",
                 media_type="text/plain; version=0.0.4", tag="ops"),
    ]  # fmt: skip
    api.all_endpoints = endpoints

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with app, anyio.create_task_group() as tg:
            try:
                await audit.load()
            except Exception as exc:  # the backend is down: the dashboard starts empty
                log.warning("the audit trail could not be loaded: %r", exc)
            if monitor is not None and run_monitor:
                await tg.start(_run, monitor)
            yield
            tg.cancel_scope.cancel()

    middleware = [Middleware(BodyLimit, max_body=max_body)]
    if limit is not None:
        middleware.insert(0, Middleware(ClientRateLimit, backend=lambda: app.backend, limit=limit))
    web = Starlette(
        routes=build_routes(ctx, endpoints),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    web.state.taskcore = ctx
    return web


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) as the API's JSON errors."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path}; the API is described at /api/openapi.json"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /api/openapi.json"
    else:
        message = str(exc.detail)
    return Response(
        msgspec.json.encode({"error": message, "status": exc.status_code}),
        exc.status_code,
        exc.headers,
        media_type="application/json",
    )


async def _run(monitor: MonitorSource, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    await monitor.run(task_status=task_status)
