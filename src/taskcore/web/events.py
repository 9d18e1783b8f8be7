"""The dashboard's live stream: Server-Sent Events at ``/api/events``. Each new monitor
snapshot pushes every panel re-rendered (one ``panels`` event whose data is a JSON
object of panel id -> HTML), the audit panel with the entries every web process of the
backend stored since; a comment line keeps idle connections open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from taskcore.backend import TaskFilter
from taskcore.monitor.snapshot import Snapshot
from taskcore.states import State

from .context import WebContext
from .panels import PanelData, render_panels
from .serialize import schedule_json

__all__ = ["Dashboard", "sse_event"]

KEEPALIVE = 15.0


def sse_event(event: str, data: bytes) -> bytes:
    """One SSE event; ``data`` must hold no newline (JSON-encoded, it does not)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class Dashboard:
    """Gathers what the panels show and renders them, once per snapshot however many
    browsers watch."""

    def __init__(self, ctx: WebContext, dead_limit: int = 20, rejects_limit: int = 20) -> None:
        self.ctx = ctx
        self.dead_limit = dead_limit
        self.rejects_limit = rejects_limit
        self._lock = anyio.Lock()
        self._rendered: tuple[Snapshot | None, int, dict[str, str]] | None = None
        self._pulled: Snapshot | None = None  # the snapshot the audit log was pulled for

    async def data(self) -> PanelData:
        app, monitor = self.ctx.app, self.ctx.monitor
        now = app.clock.now()
        await app.open()
        dead = await app.backend.list_tasks(TaskFilter(state=State.DEAD, limit=self.dead_limit))
        rejects = await app.rejects(limit=self.rejects_limit)
        return PanelData(
            now=now,
            snapshot=None if monitor is None else monitor.latest,
            history=() if monitor is None else monitor.history,
            alert_log=() if monitor is None else monitor.alert_log,
            audit=self.ctx.audit.entries,
            dead=dead,
            schedules=[schedule_json(app, p, now) for p in app.periodics],
            monitored=monitor is not None,
            rejects=rejects,
        )

    async def panels(self) -> dict[str, str]:
        """Every panel's HTML; cached until a new snapshot or audit entry. The audit
        log takes in other web processes' entries once per snapshot (at every call
        before the monitor's first one)."""
        async with self._lock:
            monitor = self.ctx.monitor
            latest = None if monitor is None else monitor.latest
            if latest is None or latest is not self._pulled:
                await self.ctx.app.open()
                await self.ctx.audit.pull()
                self._pulled = latest
            key = (latest, self.ctx.audit.version)
            if self._rendered is not None and self._rendered[:2] == key:
                return self._rendered[2]
            rendered = render_panels(await self.data())
            self._rendered = (*key, rendered)
            return rendered

    async def stream(self, request: Request) -> Response:
        return StreamingResponse(
            self._events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(self) -> AsyncIterator[bytes]:
        monitor = self.ctx.monitor
        yield b"retry: 3000\n\n"
        yield sse_event("panels", msgspec.json.encode(await self.panels()))
        if monitor is None:
            while True:  # nothing will change by itself; keep the connection for reloads
                await anyio.sleep(KEEPALIVE)
                yield b": keepalive\n\n"
        with monitor.subscribe() as snapshots:
            while True:
                fresh = False
                # no yield inside the cancel scope: a generator suspended there would
                # leave the scope open across the consumer's code
                with anyio.move_on_after(KEEPALIVE):
                    try:
                        await snapshots.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        return
                    fresh = True
                if fresh:
                    yield sse_event("panels", msgspec.json.encode(await self.panels()))
                else:
                    yield b": keepalive\n\n"
