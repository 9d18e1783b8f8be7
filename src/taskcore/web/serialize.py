"""JSON-ready views of taskcore's values (tasks, queues, workers, schedules)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from taskcore.app import App
from taskcore.backend import QueueStats, TaskRecord, WorkerInfo
from taskcore.cron import Periodic
from taskcore.errors import TaskcoreError
from taskcore.states import State

__all__ = ["json_response", "queue_json", "schedule_json", "task_json", "worker_json"]


def json_response(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def queue_json(s: QueueStats) -> dict[str, Any]:
    return {
        "queue": s.queue,
        "paused": s.paused,
        "policy": s.policy.kind,
        "depth": s.depth,
        "late": s.late,
        "depth_by_priority": {f"P{p}": s.depth_by_priority.get(p, 0) for p in range(5)},
        "late_by_priority": {f"P{p}": s.late_by_priority.get(p, 0) for p in range(5)},
        "states": {str(state): s.states.get(state, 0) for state in State},
    }


def worker_json(w: WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "hostname": w.hostname,
        "pid": w.pid,
        "queues": list(w.queues),
        "concurrency": w.concurrency,
        "busy": w.busy,
        "started_at": w.started_at,
        "heartbeat_at": w.heartbeat_at,
    }


def decoded(app: App, rec: TaskRecord) -> tuple[Any, Any]:
    """The task's arguments and result as values (None where they cannot be decoded)."""
    args = result = None
    try:
        env = app.codec.decode_envelope(rec.body)
        args = app.codec.decode(bytes(env.args))
    except (TaskcoreError, TypeError, ValueError):
        pass
    if rec.result is not None:
        try:
            result = app.codec.decode(rec.result)
        except TaskcoreError:
            pass
    return args, result


def task_json(app: App, rec: TaskRecord, *, detail: bool = False) -> dict[str, Any]:
    last = rec.errors[-1] if rec.errors else None
    out: dict[str, Any] = {
        "id": rec.id,
        "task": rec.task,
        "queue": rec.queue,
        "priority": rec.priority,
        "state": str(rec.state),
        "attempt": rec.attempt,
        "enqueued_at": rec.enqueued_at,
        "eligible_at": rec.eligible_at,
        "updated_at": rec.updated_at,
        "started_at": rec.started_at,
        "finished_at": rec.finished_at,
        "deadline": rec.deadline,
        "worker": rec.worker,
        "cancel_requested": rec.cancel_requested,
        "last_error": None if last is None else f"{last.type}: {last.message}",
    }
    if detail:
        args, result = decoded(app, rec)
        out |= {
            "unique_key": rec.unique_key,
            "fairness_key": rec.fairness_key,
            "args": args,
            "result": result,
            "errors": [
                {
                    "attempt": e.attempt,
                    "type": e.type,
                    "message": e.message,
                    "traceback": e.traceback,
                    "at": e.at,
                }
                for e in rec.errors
            ],
        }
    return out


def schedule_json(app: App, p: Periodic, now: float) -> dict[str, Any]:
    task = app.tasks.get(p.task)
    return {
        "task": p.task,
        "cron": p.cron,
        "tz": p.tz,
        "queue": task.options.queue if task is not None else None,
        "next_run": p.next_after(now),
    }
