"""Monitoring: snapshots of queues, workers, health checks and host resources, with
alert rules evaluated over them.

Importing this package loads neither psutil nor httpx: the host sampler imports psutil
at its first sample, HTTP checks and webhooks import httpx when built.
"""

from __future__ import annotations

from .checks import BackendCheck, Check, HttpCheck, TcpCheck
from .metrics import MetricsPoint, read_metrics
from .monitor import Monitor
from .notifiers import CallableNotifier, LogNotifier, Notifier, WebhookNotifier
from .rules import Evaluator, Rule, default_rules
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
    "BackendCheck",
    "CallableNotifier",
    "Check",
    "CheckResult",
    "Evaluator",
    "HttpCheck",
    "LogNotifier",
    "MetricsPoint",
    "Monitor",
    "Notifier",
    "QueueSnapshot",
    "Rates",
    "ResourceSample",
    "Rule",
    "Snapshot",
    "TcpCheck",
    "WebhookNotifier",
    "WorkerSnapshot",
    "default_rules",
    "read_metrics",
]
