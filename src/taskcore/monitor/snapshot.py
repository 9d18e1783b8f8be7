"""What the monitor sees at one instant: the values the dashboard, the alert rules and
the Prometheus exposition all read.

Plain msgspec Structs, so a snapshot encodes to JSON as it is (``msgspec.json.encode``)
for the web API and the dashboard's live stream. Times are epoch seconds from the
app's clock; rates are per second.
"""

from __future__ import annotations

import msgspec

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


class QueueSnapshot(msgspec.Struct, frozen=True):
    """One queue: its counts by state and its waiting tasks by priority (0-4)."""

    name: str
    paused: bool
    depth: int
    """Tasks ready to run (queued), all priorities."""
    running: int
    scheduled: int
    retrying: int
    dead: int
    failed: int
    succeeded: int
    late: int
    """Tasks that started past their priority's wait SLA: the backend's running count
    (it only grows), so alerts read its increase. A task still waiting is not in it."""
    depth_by_priority: dict[int, int] = {}
    late_by_priority: dict[int, int] = {}
    """``late`` by priority (0-4)."""
    policy: str = ""


class WorkerSnapshot(msgspec.Struct, frozen=True):
    """A live worker, from its last heartbeat."""

    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    busy: int
    started_at: float
    heartbeat_at: float


class ResourceSample(msgspec.Struct, frozen=True):
    """The monitoring host's resource use (psutil), percentages 0-100."""

    cpu_percent: float
    memory_percent: float
    disk_percent: float
    net_sent_per_s: float
    net_recv_per_s: float
    process_rss: int
    """Resident memory of the monitoring process, bytes."""


class CheckResult(msgspec.Struct, frozen=True):
    """One health check's latest result."""

    name: str
    kind: str
    """``backend``, ``http`` or ``tcp``."""
    ok: bool
    latency: float
    """Seconds the check took (to failure, if it failed)."""
    at: float
    error: str | None = None


class Rates(msgspec.Struct, frozen=True):
    """Tasks finishing per second since the previous snapshot, all queues."""

    succeeded: float = 0.0
    failed: float = 0.0
    dead: float = 0.0


class AlertState:
    PENDING = "pending"
    """The condition holds, but not yet for the rule's ``for_seconds``."""
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(msgspec.Struct, frozen=True):
    """An alert rule's condition for one subject (a queue, a check, the host)."""

    rule: str
    severity: str
    """``info``, ``warning`` or ``critical``."""
    state: str
    """An :class:`AlertState` value."""
    subject: str
    summary: str
    value: float
    threshold: float
    since: float
    """When the condition started to hold."""
    fired_at: float | None = None
    resolved_at: float | None = None


class Snapshot(msgspec.Struct, frozen=True):
    at: float
    queues: list[QueueSnapshot]
    workers: list[WorkerSnapshot]
    checks: list[CheckResult]
    rates: Rates
    alerts: list[Alert]
    """Pending and firing alerts (resolved ones are in the monitor's alert log)."""
    resources: ResourceSample | None = None
