"""The HTML views: the live dashboard, task search, task detail and login."""

from __future__ import annotations

import json
from html import escape
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from taskcore.formats import decoded
from taskcore.states import State

from .api import parse_limit, parse_state
from .auth import COOKIE, Role
from .context import ApiError, WebContext
from .events import Dashboard
from .panels import PANELS, button, stamp, table, task_link
from .routes import Endpoint, Param

__all__ = ["Pages"]

_STATIC = files(__package__) / "static"
SESSION_SECONDS = 12 * 3600


def _asset(name: str) -> str:
    return (_STATIC / name).read_text(encoding="utf-8")


def _local(path: str | None) -> str:
    """Only same-site paths as a redirect target (no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


class Pages:
    def __init__(self, ctx: WebContext, dashboard: Dashboard) -> None:
        self.ctx = ctx
        self.dashboard = dashboard
        self._css = _asset("dashboard.css")
        self._js = _asset("dashboard.js")

    def page(self, title: str, body: str, *, status: int = 200, single: bool = True) -> Response:
        nav = (
            '<a href="/">Dashboard</a> <a href="/tasks">Tasks</a> '
            '<a href="/api/openapi.json">API</a>'
        )
        if not self.ctx.auth.open:
            nav += ' <button type="button" data-post="/logout" data-reload>Log out</button>'
        html = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} · taskcore</title><style>{self._css}</style></head><body>"
            f'<header><h1>taskcore</h1><nav>{nav}</nav><small id="live"></small></header>'
            f'<div id="flash" role="status"></div>'
            f'<main class="{"single" if single else "grid"}">{body}</main>'
            f"<script>{self._js}</script></body></html>"
        )
        return HTMLResponse(html, status)

    async def index(self, request: Request) -> Response:
        """The live dashboard; its panels update from ``/api/events``."""
        panels = await self.dashboard.panels()
        body = "".join(f'<section id="panel-{name}">{panels[name]}</section>' for name in PANELS)
        return self.page("Dashboard", body, single=False)

    async def search(self, request: Request) -> Response:
        """Search tasks by queue, state, task name and text."""
        q = request.query_params
        try:
            state = parse_state(q.get("state"))
            limit = parse_limit(request, 50)
            offset = parse_limit(request, 0, "offset")
        except ApiError as exc:
            return self.page("Tasks", f'<p class="bad">{escape(exc.message)}</p>', status=400)
        filters = {k: q.get(k) or None for k in ("queue", "task", "text")}
        records = await self.ctx.app.list_tasks(**filters, state=state, limit=limit, offset=offset)
        options = "".join(
            f"<option{' selected' if state == s else ''}>{escape(s)}</option>" for s in State
        )
        form = (
            '<form class="search" method="get" action="/tasks">'
            + "".join(
                f'<input name="{k}" placeholder="{k}" value="{escape(v or "")}">'
                for k, v in filters.items()
            )
            + f'<select name="state"><option value="">any state</option>{options}</select>'
            + '<button type="submit">Search</button></form>'
        )
        rows = [
            [
                task_link(r.id),
                escape(r.task),
                escape(r.queue),
                f"P{r.priority}",
                escape(r.state),
                str(r.attempt),
                escape(stamp(r.updated_at)),
                escape(f"{r.errors[-1].type}: {r.errors[-1].message}" if r.errors else ""),
            ]
            for r in records
        ]
        more = ""
        if len(records) == limit:
            params = {k: v for k, v in q.items() if k != "offset"}
            query = urlencode({**params, "offset": offset + limit})
            more = f'<p><a href="/tasks?{escape(query)}">Next page</a></p>'
        headers = ["id", "task", "queue", "priority", "state", "attempts", "updated (UTC)",
                   "last error"]  # fmt: skip
        return self.page(
            "Tasks",
            "<section><h2>Tasks</h2>" + form + table(headers, rows, "No matching tasks.")
            + more + "</section>",
        )  # fmt: skip

    async def detail(self, request: Request) -> Response:
        """One task: its fields, arguments, result, every attempt's error and what it
        logged."""
        task_id = request.path_params["task_id"]
        await self.ctx.app.open()
        rec = await self.ctx.app.backend.get(task_id)
        if rec is None:
            return self.page(
                "Task not found",
                f'<p class="bad">No task with id {escape(task_id)} (never enqueued, or expired '
                'and removed).</p><p><a href="/tasks">Search tasks</a></p>',
                status=404,
            )
        args, result = decoded(self.ctx.app, rec)
        path = f"/api/tasks/{quote(rec.id, safe='')}"
        actions = []
        if not rec.state.terminal:
            actions.append(button("Cancel", f"{path}/cancel", confirm=f"Cancel task {rec.id}?"))
        if rec.state in (State.DEAD, State.FAILED):
            actions.append(button("Retry", f"{path}/retry"))
        fields: list[tuple[str, Any]] = [
            ("id", rec.id), ("task", rec.task), ("queue", rec.queue),
            ("priority", f"P{rec.priority}"), ("state", rec.state), ("attempt", rec.attempt),
            ("enqueued", stamp(rec.enqueued_at)), ("eligible", stamp(rec.eligible_at)),
            ("started", stamp(rec.started_at)), ("finished", stamp(rec.finished_at)),
            ("updated", stamp(rec.updated_at)), ("deadline", stamp(rec.deadline)),
            ("worker", rec.worker or "-"), ("unique key", rec.unique_key or "-"),
            ("cancel requested", rec.cancel_requested),
        ]  # fmt: skip
        kv = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in fields)
        errors = "".join(
            f"<h3>Attempt {e.attempt}: {escape(e.type)} at {escape(stamp(e.at))}</h3>"
            f"<p>{escape(e.message)}</p><pre>{escape(e.traceback)}</pre>"
            for e in rec.errors
        )
        lines = await self.ctx.app.task_logs(rec.id)
        logs = "".join(
            f"{stamp(ln.at)} [{ln.attempt}] {ln.level} {ln.logger}: {ln.message}\n" for ln in lines
        )
        body = (
            f"<section><h2>Task {escape(rec.task)}</h2>"
            f'<p class="actions">{" ".join(actions)}</p><dl class="kv">{kv}</dl>'
            f"<h2>Arguments</h2><pre>{escape(_pretty(args))}</pre>"
            f"<h2>Result</h2><pre>{escape(_pretty(result))}</pre>"
            f"<h2>Errors</h2>{errors or '<p class=empty>None.</p>'}"
            f"<h2>Logs</h2>"
            + (f'<pre class="logs">{escape(logs)}</pre>' if logs else "<p class=empty>None.</p>")
            + "</section>"
        )
        return self.page(f"Task {rec.id}", body)

    async def login_page(self, request: Request) -> Response:
        """The login form (sets the session cookie the dashboard's live stream uses)."""
        return self._login_form(_local(request.query_params.get("next")))

    def _login_form(self, next_: str, error: str = "", status: int = 200) -> Response:
        message = f'<p class="bad">{escape(error)}</p>' if error else ""
        return self.page(
            "Log in",
            "<section><h2>Log in</h2>" + message
            + '<form method="post" action="/login">'
            f'<input type="hidden" name="next" value="{escape(next_)}">'
            '<label>Token <input type="password" name="token" autocomplete="current-password" '
            "required></label> <button type=submit>Log in</button></form></section>",
            status=status,
        )  # fmt: skip

    async def login(self, request: Request) -> Response:
        """Exchange a token for an HttpOnly session cookie: a form post (redirects) or
        JSON ``{"token": ...}`` (answers JSON)."""
        raw = await request.body()
        is_json = request.headers.get("content-type", "").startswith("application/json")
        if is_json:
            try:
                form = msgspec.json.decode(raw or b"{}", type=dict[str, str])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ApiError(400, f'send {{"token": "..."}} as JSON ({exc})') from None
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        token = form.get("token", "")
        next_ = _local(form.get("next"))
        principal = self.ctx.auth.identify(token or None, None)
        client = self.ctx.client(request)
        if principal is None:
            await self.ctx.audit.record(None, "login", [], "refused: unknown token", ok=False,
                                  client=client)  # fmt: skip
            if is_json:
                raise ApiError(401, "unknown token; ask an admin for a valid one")
            return self._login_form(next_, "Unknown token.", 401)
        await self.ctx.audit.record(principal, "login", [], "ok", ok=True, client=client)
        response: Response
        if is_json:
            response = Response(
                msgspec.json.encode({"role": principal.role.label}),
                media_type="application/json",
            )
        else:
            response = RedirectResponse(next_, 303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """Clear the session cookie."""
        response = Response(b'{"logged_out": true}', media_type="application/json")
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    def endpoints(self) -> list[Endpoint]:
        V = Role.VIEWER
        html = "text/html"
        return [
            Endpoint("GET", "/", self.index, V, "The live dashboard.", media_type=html,
                     html=True, tag="pages"),
            Endpoint("GET", "/tasks", self.search, V, "Task search.",
                     (Param("queue", "queue name"), Param("state", "task state"),
                      Param("task", "task name"), Param("text", "id, unique key or error text"),
                      Param("limit", "page size", type="integer"),
                      Param("offset", "skip this many", type="integer")),
                     media_type=html, html=True, tag="pages"),
            Endpoint("GET", "/tasks/{task_id}", self.detail, V, "One task's detail.",
                     (Param("task_id", "task id", "path"),), media_type=html, html=True,
                     tag="pages"),
            Endpoint("GET", "/login", self.login_page, None, "The login form.",
                     (Param("next", "where to go after logging in"),), media_type=html,
                     tag="auth"),
            Endpoint("POST", "/login", self.login, None,
                     "Log in with a token: sets an HttpOnly session cookie.",
                     body={"type": "object", "properties": {"token": {"type": "string"}},
                           "required": ["token"]}, tag="auth"),
            Endpoint("POST", "/logout", self.logout, None, "Clear the session cookie.",
                     tag="auth"),
            Endpoint("GET", "/api/events", self.dashboard.stream, V,
                     "Server-Sent Events: a 'panels' event (panel id -> HTML) per snapshot.",
                     media_type="text/event-stream"),
        ]  # fmt: skip


def _pretty(value: object) -> str:
    if value is None:
        return "-"
    try:
        return json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
