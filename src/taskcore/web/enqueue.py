"""Enqueueing over HTTP: ``POST /api/tasks`` (one call) and ``POST /api/tasks/bulk``
(a JSON array of calls, stored all or nothing in one backend call), validated exactly
as ``enqueue`` validates them, and audited."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from taskcore.errors import TaskcoreError, UnknownTask

from .auth import Role
from .context import ApiError, WebContext
from .routes import Endpoint
from .serialize import json_response

if TYPE_CHECKING:
    from taskcore.backend import EnqueueResult, Message
    from taskcore.envelope import Envelope
    from taskcore.task import Task

__all__ = ["MAX_BULK", "EnqueueApi", "EnqueueCall", "EnqueueOptions"]

MAX_BULK = 1000


class EnqueueOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Per-call options, as for ``task.with_options(...)``."""

    priority: int | str | None = None
    queue: str | None = None
    delay: float | None = None
    eta: float | datetime | None = None
    deadline: float | datetime | None = None
    unique_key: str | None = None
    fairness_key: str | None = None
    task_id: str | None = None


class EnqueueCall(msgspec.Struct, forbid_unknown_fields=True):
    """One call: the task's registered name, its arguments and options."""

    task: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    options: EnqueueOptions = msgspec.field(default_factory=EnqueueOptions)


_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "priority": {
            "description": "0-4, P0-P4 or critical/high/medium/low/batch",
            "type": ["integer", "string"],
        },
        "queue": {"type": "string"},
        "delay": {"type": "number", "description": "seconds from now"},
        "eta": {
            "type": ["number", "string"],
            "description": "epoch seconds or ISO 8601",
        },
        "deadline": {
            "type": ["number", "string"],
            "description": "epoch seconds or ISO 8601",
        },
        "unique_key": {"type": "string"},
        "fairness_key": {"type": "string"},
        "task_id": {"type": "string"},
    },
}
CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["task"],
    "properties": {
        "task": {"type": "string", "description": "the task's registered name"},
        "args": {"type": "array", "description": "positional arguments"},
        "kwargs": {"type": "object", "description": "keyword arguments"},
        "options": _OPTIONS_SCHEMA,
    },
}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EnqueueApi:
    """The enqueue handlers over one :class:`WebContext`."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.app = ctx.app

    def _task(self, name: str) -> Task[Any, Any]:
        try:
            return self.app.get_task(name)
        except UnknownTask:
            known = sorted(self.app.tasks)
            if not known:
                raise _Refused(
                    404,
                    f"no task named {name!r}: this web process registers no tasks; serve "
                    "the module:app whose module declares them (its @app.task functions "
                    "are registered when it is imported)",
                ) from None
            shown = ", ".join(known[:50]) + (f" (and {len(known) - 50} more)" * (len(known) > 50))
            raise _Refused(
                404,
                f"no task named {name!r} is registered; registered tasks: {shown}",
            ) from None

    def _build(self, call: EnqueueCall) -> tuple[Task[Any, Any], Envelope, Message]:
        task = self._task(call.task)
        options = msgspec.structs.asdict(call.options)
        options = {k: v for k, v in options.items() if v is not None}
        try:
            env, msg = self.app.build_message(task, tuple(call.args), call.kwargs, **options)
        except TaskcoreError as exc:
            raise _Refused(422, str(exc)) from None
        return task, env, msg

    @staticmethod
    def _decode(body: bytes, type: Any) -> Any:
        try:
            return msgspec.json.decode(body, type=type)
        except msgspec.ValidationError as exc:
            raise ApiError(400, f"invalid request body: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"the request body is not JSON ({exc})") from None

    @staticmethod
    def _created(msg: Message, res: EnqueueResult) -> dict[str, Any]:
        return {
            "id": res.id,
            "task": msg.task,
            "queue": msg.queue,
            "priority": msg.priority,
            "created": res.created,
            "state": str(res.state),
        }

    async def enqueue(self, request: Request) -> Response:
        call: EnqueueCall = self._decode(await request.body(), EnqueueCall)
        try:
            built = self._build(call)
        except _Refused as exc:
            await self.ctx.audited(
                request, "task.enqueue", [call.task], f"refused ({exc.status}): {exc}", ok=False
            )
            raise ApiError(exc.status, exc.message) from None
        [res] = await self.app.enqueue_built([built])
        msg = built[2]
        result = (
            f"enqueued into {msg.queue} at P{msg.priority}"
            if res.created
            else "a waiting task has the same unique key: not enqueued again"
        )
        await self.ctx.audited(request, "task.enqueue", [call.task, res.id], result, ok=True)
        return json_response(self._created(msg, res), 201 if res.created else 200)

    async def enqueue_bulk(self, request: Request) -> Response:
        body = await request.body()
        calls: list[EnqueueCall] = self._decode(body, list[EnqueueCall])
        if not calls:
            raise ApiError(400, "send a JSON array of calls: [{'task': ..., 'args': [...]}]")
        if len(calls) > MAX_BULK:
            raise ApiError(
                400, f"{len(calls)} calls: send at most {MAX_BULK} per request (split them)"
            )
        built = []
        errors = []
        for index, call in enumerate(calls):
            try:
                built.append(self._build(call))
            except _Refused as exc:
                errors.append(
                    {"index": index, "task": call.task, "status": exc.status, "error": exc.message}
                )
        names = sorted({c.task for c in calls})
        if errors:
            message = (
                f"{len(errors)} of {len(calls)} calls are invalid, so none was enqueued; "
                "fix them (see errors[]) and send the array again"
            )
            await self.ctx.audited(
                request, "task.enqueue_bulk", names, f"refused (422): {message}", ok=False
            )
            return json_response({"error": message, "status": 422, "errors": errors}, 422)
        results = await self.app.enqueue_built(built)
        created = sum(1 for r in results if r.created)
        await self.ctx.audited(
            request,
            "task.enqueue_bulk",
            names,
            f"enqueued {created}, {len(results) - created} duplicate(s); ids "
            f"{results[0].id}..{results[-1].id}",
            ok=True,
        )
        return json_response(
            {
                "enqueued": created,
                "duplicates": len(results) - created,
                "tasks": [self._created(b[2], r) for b, r in zip(built, results, strict=True)],
            },
            201,
        )

    def endpoints(self) -> list[Endpoint]:
        refusals = (
            ("400", "the body is not a call (not JSON, unknown fields, wrong shapes)"),
            ("404", "no task of that name; the message lists the registered ones"),
            ("422", "the arguments or options do not fit the task; the message says which"),
        )
        return [
            Endpoint(
                "POST",
                "/api/tasks",
                self.enqueue,
                Role.OPERATOR,
                "Enqueue one call of a registered task.\n\nThe arguments are validated "
                "against the task's signature and type hints, as `enqueue` validates "
                "them. 201 with the new task's id; 200 when a waiting task has the same "
                "unique key (`created` false, its id).",
                body=CALL_SCHEMA,
                audit="task.enqueue",
                responses=(("201", "enqueued"), *refusals),
            ),
            Endpoint(
                "POST",
                "/api/tasks/bulk",
                self.enqueue_bulk,
                Role.OPERATOR,
                f"Enqueue up to {MAX_BULK} calls, all or nothing.\n\nEvery call is "
                "validated first; if any is invalid, nothing is enqueued and 422 lists "
                "each invalid call (`errors[]`: index, task, status, error). Otherwise "
                "all are stored in one backend call.",
                body={"type": "array", "items": CALL_SCHEMA, "maxItems": MAX_BULK},
                audit="task.enqueue_bulk",
                responses=(("201", "enqueued"), *refusals),
            ),
        ]
