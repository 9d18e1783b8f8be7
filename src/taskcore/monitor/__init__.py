"""Monitoring: snapshots of queues, workers, health checks and host resources, with
alert rules evaluated over them."""

from __future__ import annotations

from .snapshot import (
    Alert,
    AlertState,
    CheckResult,
    QueueSnapshot,
    Rates,
    ResourceSample,
    Snapshot,
    WorkerSnapshot,
)

__all__ = [
    "Alert",
    "AlertState",
    "CheckResult",
    "QueueSnapshot",
    "Rates",
    "ResourceSample",
    "Snapshot",
    "WorkerSnapshot",
]
