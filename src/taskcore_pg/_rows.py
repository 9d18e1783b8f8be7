"""Conversions between the seam's value types and rows / statement parameters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from taskcore.backend import AttemptError, Lease, Message, Outcome, TaskRecord, WorkerInfo
from taskcore.scheduling import SchedulingPolicy
from taskcore.states import State

from ._arrays import (
    bool_array,
    bytea_array,
    float8_array,
    int2_array,
    int8_array,
    jsonb_array,
    text_array,
)

__all__ = [
    "enqueue_params",
    "error_json",
    "lease_from_row",
    "policy_params",
    "record_from_row",
    "settle_params",
    "worker_from_row",
]


def enqueue_params(messages: Sequence[Message], now: float) -> dict[str, Any]:
    # Ready-made binary arrays (see _arrays): psycopg's list dumper was a third of
    # the client's enqueue time.
    return {
        "now": now,
        "ids": text_array([m.id for m in messages]),
        "tasks": text_array([m.task for m in messages]),
        "queues": text_array([m.queue for m in messages]),
        "priorities": int2_array([m.priority for m in messages]),
        "enqueued_at": float8_array([m.enqueued_at for m in messages]),
        "eligible_at": float8_array([m.eligible_at for m in messages]),
        "bodies": bytea_array([m.body for m in messages]),
        "deadlines": float8_array([m.deadline for m in messages]),
        "unique_keys": text_array([m.unique_key for m in messages]),
        "fairness_keys": text_array([m.fairness_key for m in messages]),
        "result_ttls": float8_array([m.result_ttl for m in messages]),
    }


def error_json(error: AttemptError) -> str:
    return json.dumps(
        {
            "attempt": error.attempt,
            "type": error.type,
            "message": error.message,
            "traceback": error.traceback,
            "at": error.at,
        }
    )


def settle_params(outcomes: Sequence[Outcome], now: float) -> dict[str, Any]:
    return {
        "now": now,
        "ids": text_array([o.task_id for o in outcomes]),
        "tokens": int8_array([o.token for o in outcomes]),
        "kinds": text_array([str(o.kind) for o in outcomes]),
        "results": bytea_array([o.result for o in outcomes]),
        "errors": jsonb_array([None if o.error is None else error_json(o.error) for o in outcomes]),
        "retry_at": float8_array([o.retry_at for o in outcomes]),
        "ttls": float8_array([o.result_ttl for o in outcomes]),
        "late": bool_array([o.late for o in outcomes]),
    }


def policy_params(name: str, policy: SchedulingPolicy) -> dict[str, Any]:
    plain = policy.to_dict()
    return {
        "name": name,
        "kind": policy.kind,
        "horizons": [policy.horizon(p) for p in range(5)],
        "weights": json.dumps(dict(policy.weights)),
        "by_key": policy.by == "key",
        "default_weight": policy.default_weight,
        "policy": json.dumps(plain),
    }


def _errors(value: Any) -> tuple[AttemptError, ...]:
    items = json.loads(value) if isinstance(value, str | bytes) else value
    return tuple(
        AttemptError(int(e["attempt"]), e["type"], e["message"], e["traceback"], float(e["at"]))
        for e in items or ()
    )


def record_from_row(row: Sequence[Any]) -> TaskRecord:
    (tid, task, queue, priority, state, attempt, enqueued_at, eligible_at, updated_at, body,
     deadline, unique_key, fairness_key, worker, result, errors, cancel_requested,
     started_at, finished_at) = row  # fmt: skip
    return TaskRecord(
        id=tid,
        task=task,
        queue=queue,
        priority=priority,
        state=State(state),
        attempt=attempt,
        enqueued_at=enqueued_at,
        eligible_at=eligible_at,
        updated_at=updated_at,
        body=bytes(body),
        deadline=deadline,
        unique_key=unique_key,
        fairness_key=fairness_key,
        worker=worker,
        result=None if result is None else bytes(result),
        errors=_errors(errors),
        cancel_requested=cancel_requested,
        started_at=started_at,
        finished_at=finished_at,
    )


def lease_from_row(row: Sequence[Any], worker: str, now: float, expires_at: float) -> Lease:
    (tid, task, queue, priority, enqueued_at, eligible_at, body, deadline, unique_key,
     fairness_key, result_ttl, token, attempt, ready_at) = row  # fmt: skip
    message = Message(
        id=tid,
        task=task,
        queue=queue,
        priority=priority,
        enqueued_at=enqueued_at,
        eligible_at=eligible_at,
        body=bytes(body),
        deadline=deadline,
        unique_key=unique_key,
        fairness_key=fairness_key,
        result_ttl=result_ttl,
    )
    return Lease(message, token, attempt, worker, expires_at, now, ready_at)


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    wid, hostname, pid, queues, concurrency, busy, started_at, heartbeat_at = row
    return WorkerInfo(
        wid, hostname, pid, tuple(queues), concurrency, busy, started_at, heartbeat_at
    )
