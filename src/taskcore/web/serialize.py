"""JSON-ready views of taskcore's values (tasks, queues, workers, schedules)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from taskcore.app import App
from taskcore.backend import QueueStats, TaskRecord, WorkerInfo
from taskcore.cron import Periodic
from taskcore.formats import task_row
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


def task_json(app: App, rec: TaskRecord, *, detail: bool = False) -> dict[str, Any]:
    """A task for the API: a summary in lists; with ``detail``, its export row (the
    decoded arguments and result included) and every attempt's error."""
    row = task_row(app, rec, values=detail)
    if not detail:
        del row["unique_key"], row["fairness_key"]
        return row
    row["errors"] = [
        {
            "attempt": e.attempt,
            "type": e.type,
            "message": e.message,
            "traceback": e.traceback,
            "at": e.at,
        }
        for e in rec.errors
    ]
    return row


def schedule_json(app: App, p: Periodic, now: float) -> dict[str, Any]:
    task = app.tasks.get(p.task)
    return {
        "task": p.task,
        "cron": p.cron,
        "tz": p.tz,
        "queue": task.options.queue if task is not None else None,
        "next_run": p.next_after(now),
    }
