"""The REST API under ``/api``: queues, workers, tasks, dead letters, ingestion
rejects, schedules, alerts, the monitor's snapshots and the audit log."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from taskcore import __version__
from taskcore.backend import TaskRecord
from taskcore.errors import ConfigurationError
from taskcore.formats import CONTENT_TYPES, FORMATS, parse_format, render, task_rows
from taskcore.states import State

from .auth import Role
from .context import ApiError, WebContext
from .routes import Endpoint, Param, openapi_document
from .serialize import json_response, queue_json, schedule_json, task_json, worker_json

__all__ = ["RestApi", "parse_limit", "parse_state", "parse_time"]

MAX_LIMIT = 1000
T = TypeVar("T")
_STATES = ", ".join(State)
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


class PurgeQueue(msgspec.Struct, forbid_unknown_fields=True):
    states: list[str] = msgspec.field(default_factory=lambda: ["dead"])


class TaskIds(msgspec.Struct, forbid_unknown_fields=True):
    ids: list[str]


class PurgeDead(msgspec.Struct, forbid_unknown_fields=True):
    queue: str | None = None


def parse_state(text: str | None) -> State | None:
    if text is None or text == "":
        return None
    try:
        return State(text)
    except ValueError:
        raise ApiError(400, f"unknown state {text!r}: use one of {_STATES}") from None


def parse_limit(request: Request, default: int = 100, name: str = "limit") -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    low = 0 if name == "offset" else 1
    high = None if name == "offset" else MAX_LIMIT
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        raise ApiError(400, f"{name}={text!r}: give a whole number {bound}")
    return value


def parse_time(request: Request, name: str) -> float | None:
    """An optional time query parameter: epoch seconds."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(400, f"{name}={text!r}: give a time in epoch seconds, e.g. 1700000000")
    return value


async def read_json(request: Request, type: type[T]) -> T:
    body = await request.body()
    try:
        return msgspec.json.decode(body or b"{}", type=type)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"the request body is not JSON ({exc}); send a JSON object") from None


def export_response(
    request: Request, app: Any, records: Sequence[TaskRecord], name: str
) -> Response | None:
    """The records in the ``format`` the query asks for (None: no format asked)."""
    text = request.query_params.get("format")
    if not text:
        return None
    try:
        fmt = parse_format(text)
    except ConfigurationError as exc:
        raise ApiError(400, str(exc)) from None
    safe = request.query_params.get("spreadsheet_safe", "true")
    if safe.strip().lower() not in _BOOLS:
        raise ApiError(400, f"spreadsheet_safe={safe!r}: give true or false")
    filename = f"{name}.{fmt}"
    return Response(
        render(
            task_rows(app, records),
            fmt,
            root=name.replace("-", "_"),
            spreadsheet_safe=_BOOLS[safe.strip().lower()],
        ),
        media_type=CONTENT_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class RestApi:
    """The ``/api`` handlers over one :class:`WebContext`."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.app = ctx.app
        self._endpoints: list[Endpoint] = []

    # -- queues ---------------------------------------------------------------
    async def list_queues(self, request: Request) -> Response:
        return json_response([queue_json(s) for s in await self.app.stats()])

    async def pause_queue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        await self.app.pause(queue)
        await self.ctx.audited(request, "queue.pause", [queue], "paused", ok=True)
        return json_response({"queue": queue, "paused": True})

    async def resume_queue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        await self.app.resume(queue)
        await self.ctx.audited(request, "queue.resume", [queue], "resumed", ok=True)
        return json_response({"queue": queue, "paused": False})

    async def purge_queue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        body = await read_json(request, PurgeQueue)
        states = [s for s in (parse_state(text) for text in body.states) if s is not None]
        if not states:
            raise ApiError(400, f"name the states to purge, e.g. {{'states': ['dead']}}: {_STATES}")
        if State.RUNNING in states:
            raise ApiError(
                400, "running tasks cannot be purged (their workers hold them); cancel them"
            )
        count = await self.app.purge(queue, states)
        await self.ctx.audited(
            request, "queue.purge", [queue], f"purged {count} ({', '.join(states)})", ok=True
        )
        return json_response({"queue": queue, "states": states, "purged": count})

    # -- workers --------------------------------------------------------------
    async def list_workers(self, request: Request) -> Response:
        await self.app.open()
        workers = await self.app.backend.workers()
        return json_response([worker_json(w) for w in workers])

    # -- tasks ----------------------------------------------------------------
    async def list_tasks(self, request: Request) -> Response:
        q = request.query_params
        records = await self.app.list_tasks(
            queue=q.get("queue") or None,
            state=parse_state(q.get("state")),
            task=q.get("task") or None,
            text=q.get("text") or None,
            limit=parse_limit(request),
            offset=parse_limit(request, 0, "offset"),
        )
        exported = export_response(request, self.app, records, "tasks")
        if exported is not None:
            return exported
        return json_response([task_json(self.app, r) for r in records])

    async def _record(self, task_id: str) -> Any:
        await self.app.open()
        rec = await self.app.backend.get(task_id)
        if rec is None:
            raise ApiError(
                404, f"no task with id {task_id!r} (never enqueued, or expired and removed)"
            )
        return rec

    async def get_task(self, request: Request) -> Response:
        rec = await self._record(request.path_params["task_id"])
        return json_response(task_json(self.app, rec, detail=True))

    async def task_logs(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        await self.app.open()
        lines = await self.app.task_logs(task_id)
        if not lines:
            await self._record(task_id)  # 404 for an unknown task; else just nothing logged
        return json_response([msgspec.to_builtins(line) for line in lines])

    async def cancel_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        rec = await self._record(task_id)
        [done] = await self.app.cancel([task_id])
        if not done:
            await self.ctx.audited(
                request, "task.cancel", [task_id], f"refused: {rec.state}", ok=False
            )
            raise ApiError(409, f"task {task_id} is {rec.state}, so it cannot be cancelled")
        now = await self._record(task_id)
        result = "cancel requested" if now.state == State.RUNNING else "cancelled"
        await self.ctx.audited(request, "task.cancel", [task_id], result, ok=True)
        return json_response({"id": task_id, "state": str(now.state), "result": result})

    async def retry_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        rec = await self._record(task_id)
        [done] = await self.app.retry_dead([task_id])
        if not done:
            await self.ctx.audited(
                request, "task.retry", [task_id], f"refused: {rec.state}", ok=False
            )
            raise ApiError(
                409, f"task {task_id} is {rec.state}; only dead or failed tasks can be retried"
            )
        await self.ctx.audited(request, "task.retry", [task_id], "queued", ok=True)
        return json_response({"id": task_id, "state": "queued"})

    # -- dead letters ---------------------------------------------------------
    async def list_dead(self, request: Request) -> Response:
        records = await self.app.dead_letters(
            request.query_params.get("queue") or None, parse_limit(request)
        )
        exported = export_response(request, self.app, records, "dead-letters")
        if exported is not None:
            return exported
        return json_response([task_json(self.app, r) for r in records])

    async def retry_dead(self, request: Request) -> Response:
        body = await read_json(request, TaskIds)
        if not body.ids:
            raise ApiError(400, "give the ids of the dead letters to retry: {'ids': [...]}")
        if len(body.ids) > MAX_LIMIT:
            raise ApiError(400, f"{len(body.ids)} ids: retry at most {MAX_LIMIT} per request")
        done = await self.app.retry_dead(body.ids)
        retried = [i for i, ok in zip(body.ids, done, strict=True) if ok]
        refused = [i for i, ok in zip(body.ids, done, strict=True) if not ok]
        await self.ctx.audited(
            request,
            "dead.retry",
            body.ids,
            f"retried {len(retried)}, refused {len(refused)}",
            ok=not refused,
        )
        return json_response({"retried": retried, "not_retried": refused})

    async def purge_dead(self, request: Request) -> Response:
        body = await read_json(request, PurgeDead)
        queues = [body.queue] if body.queue else [s.queue for s in await self.app.stats()]
        count = 0
        for queue in queues:
            count += await self.app.purge(queue, [State.DEAD])
        await self.ctx.audited(request, "dead.purge", queues, f"purged {count}", ok=True)
        return json_response({"queues": queues, "purged": count})

    # -- schedules, monitor, audit --------------------------------------------
    async def list_schedules(self, request: Request) -> Response:
        now = self.app.clock.now()
        return json_response([schedule_json(self.app, p, now) for p in self.app.periodics])

    def _monitor(self) -> Any:
        if self.ctx.monitor is None:
            raise ApiError(
                404, "no monitor runs in this web app; pass create_app(monitor=Monitor(app))"
            )
        return self.ctx.monitor

    async def alerts(self, request: Request) -> Response:
        monitor = self._monitor()
        latest = monitor.latest
        limit = parse_limit(request)
        log = list(monitor.alert_log)[-limit:]
        return json_response({"active": [] if latest is None else latest.alerts, "recent": log})

    async def snapshot(self, request: Request) -> Response:
        latest = self._monitor().latest
        if latest is None:
            raise ApiError(
                503,
                "the monitor has not taken its first sample yet; retry in a moment",
                {"Retry-After": "1"},
            )
        return Response(msgspec.json.encode(latest), media_type="application/json")

    async def history(self, request: Request) -> Response:
        limit = parse_limit(request, MAX_LIMIT)
        snapshots = list(self._monitor().history)[-limit:]
        return Response(msgspec.json.encode(snapshots), media_type="application/json")

    async def metrics_history(self, request: Request) -> Response:
        from taskcore.monitor.metrics import read_metrics

        limit = parse_limit(request, MAX_LIMIT)
        since, until = parse_time(request, "since"), parse_time(request, "until")
        await self.app.open()
        points = await read_metrics(self.app.backend, since, until, limit)
        return Response(msgspec.json.encode(points), media_type="application/json")

    async def audit_log(self, request: Request) -> Response:
        limit = parse_limit(request)
        since = parse_time(request, "since")
        await self.app.open()
        return json_response(await self.ctx.audit.read(since=since, limit=limit))

    async def list_rejects(self, request: Request) -> Response:
        limit = parse_limit(request)
        since = parse_time(request, "since")
        run = request.query_params.get("run") or None
        rejects = await self.app.rejects(run, since=since, limit=limit)
        return json_response([msgspec.to_builtins(r) for r in rejects])

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(self.all_endpoints, __version__))

    all_endpoints: Sequence[Endpoint] = ()
    """Every endpoint of the web app (set by ``create_app``) for the OpenAPI document."""

    def endpoints(self) -> list[Endpoint]:
        V, O, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN  # noqa: E741
        queue = Param("queue", "queue name", "path")
        task_id = Param("task_id", "task id", "path")
        limit = Param("limit", f"at most this many (1-{MAX_LIMIT})", type="integer")
        since = Param("since", "from this time on (epoch seconds)", type="number")
        fmt = Param(
            "format",
            f"export as {', '.join(FORMATS)} (with arguments and results); default: the JSON list",
        )
        safe = Param(
            "spreadsheet_safe",
            "CSV: prefix text cells a spreadsheet would run as formulas (=, +, -, @, tab, "
            "CR) with ' (default true); false for the exact values",
            type="boolean",
        )
        exports = tuple(CONTENT_TYPES[f] for f in FORMATS if f != "json")
        ids = {
            "type": "object",
            "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
            "required": ["ids"],
        }
        q = "/api/queues/{queue:path}"
        t = "/api/tasks/{task_id}"
        return [
            Endpoint("GET", "/api/queues", self.list_queues, V, "Queue statistics."),
            Endpoint(
                "POST",
                f"{q}/pause",
                self.pause_queue,
                O,
                "Pause a queue.",
                (queue,),
                audit="queue.pause",
            ),
            Endpoint(
                "POST",
                f"{q}/resume",
                self.resume_queue,
                O,
                "Resume a paused queue.",
                (queue,),
                audit="queue.resume",
            ),
            Endpoint(
                "POST",
                f"{q}/purge",
                self.purge_queue,
                A,
                "Delete a queue's tasks in the given states (admin).",
                (queue,),
                body={
                    "type": "object",
                    "properties": {"states": {"type": "array", "items": {"enum": list(State)}}},
                },
                audit="queue.purge",
            ),
            Endpoint("GET", "/api/workers", self.list_workers, V, "Live workers."),
            Endpoint(
                "GET",
                "/api/tasks",
                self.list_tasks,
                V,
                "Search tasks.",
                (
                    Param("queue", "queue name"),
                    Param("state", f"one of {_STATES}"),
                    Param("task", "task name"),
                    Param("text", "substring of the id, unique key or last error"),
                    limit,
                    Param("offset", "skip this many", type="integer"),
                    fmt,
                    safe,
                ),
                media_types=exports,
            ),
            Endpoint(
                "GET",
                t,
                self.get_task,
                V,
                "One task, with its arguments, result and attempt errors.",
                (task_id,),
            ),
            Endpoint(
                "GET",
                f"{t}/logs",
                self.task_logs,
                V,
                "What the task logged while it ran (every attempt), oldest line first.",
                (task_id,),
            ),
            Endpoint(
                "POST",
                f"{t}/cancel",
                self.cancel_task,
                O,
                "Cancel a waiting task, or ask a running one to stop.",
                (task_id,),
                audit="task.cancel",
            ),
            Endpoint(
                "POST",
                f"{t}/retry",
                self.retry_task,
                O,
                "Re-queue a dead or failed task.",
                (task_id,),
                audit="task.retry",
            ),
            Endpoint(
                "GET",
                "/api/dead-letters",
                self.list_dead,
                V,
                "Dead letters.",
                (Param("queue", "queue name"), limit, fmt, safe),
                media_types=exports,
            ),
            Endpoint(
                "POST",
                "/api/dead-letters/retry",
                self.retry_dead,
                O,
                "Re-queue dead letters by id.",
                body=ids,
                audit="dead.retry",
            ),
            Endpoint(
                "POST",
                "/api/dead-letters/purge",
                self.purge_dead,
                A,
                "Delete the dead letters of one queue, or of every queue (admin).",
                body={"type": "object", "properties": {"queue": {"type": "string"}}},
                audit="dead.purge",
            ),
            Endpoint(
                "GET",
                "/api/schedules",
                self.list_schedules,
                V,
                "Periodic tasks: cron, time zone and next run.",
            ),
            Endpoint(
                "GET",
                "/api/alerts",
                self.alerts,
                V,
                "Active alerts and the recent alert log.",
                (limit,),
            ),
            Endpoint("GET", "/api/snapshot", self.snapshot, V, "The monitor's latest snapshot."),
            Endpoint(
                "GET",
                "/api/history",
                self.history,
                V,
                "The monitor's recent snapshots, oldest first.",
                (limit,),
            ),
            Endpoint(
                "GET",
                "/api/metrics/history",
                self.metrics_history,
                V,
                "The stored per-minute performance metrics (kept metrics_ttl), oldest "
                "first: the newest `limit` minutes (default 1000) from `since` to `until`.",
                (since, Param("until", "before this time (epoch seconds)", type="number"), limit),
            ),
            Endpoint(
                "GET",
                "/api/audit",
                self.audit_log,
                V,
                "Audited actions of every web process (kept audit_ttl), oldest first: the "
                "newest `limit` from `since`.",
                (since, limit),
            ),
            Endpoint(
                "GET",
                "/api/rejects",
                self.list_rejects,
                V,
                "Records ingestion refused (kept dead_ttl), oldest first: the newest `limit` "
                "(default 100) from `since`, only those of ingestion `run` if given.",
                (Param("run", "the ingestion's run id (IngestReport.run)"), since, limit),
            ),
            Endpoint("GET", "/api/openapi.json", self.openapi, None, "This OpenAPI document."),
        ]
