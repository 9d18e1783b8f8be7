"""Prometheus exposition at ``/metrics``: a collector that reads the monitor's latest
snapshot at scrape time. Labels are low-cardinality (queue, priority, state, check,
severity), never task ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from taskcore.monitor.snapshot import AlertState, Snapshot

__all__ = ["SnapshotCollector", "metrics_endpoint"]

_COUNTED = ("depth", "running", "scheduled", "retrying", "dead", "failed", "succeeded")


class SnapshotCollector(Collector):
    """Gauges from ``latest()``; with no snapshot yet, only ``taskcore_monitor_up 0``."""

    def __init__(self, latest: Callable[[], Snapshot | None]) -> None:
        self.latest = latest

    def describe(self) -> list[Metric]:
        return []  # names depend on the snapshot; collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        snap = self.latest()
        up = GaugeMetricFamily("taskcore_monitor_up", "1 once the monitor has a snapshot")
        up.add_metric([], 0.0 if snap is None else 1.0)
        yield up
        if snap is None:
            return
        yield GaugeMetricFamily(
            "taskcore_snapshot_timestamp_seconds", "When the snapshot was taken", snap.at
        )
        depth = GaugeMetricFamily(
            "taskcore_queue_depth", "Tasks ready to run, by priority", labels=["queue", "priority"]
        )
        tasks = GaugeMetricFamily(
            "taskcore_queue_tasks", "Tasks in a queue by state", labels=["queue", "state"]
        )
        late = GaugeMetricFamily(
            "taskcore_queue_late",
            "Tasks that started past their priority's SLA (only grows)",
            labels=["queue"],
        )
        paused = GaugeMetricFamily("taskcore_queue_paused", "1 if paused", labels=["queue"])
        for q in snap.queues:
            for p in range(5):
                depth.add_metric([q.name, f"P{p}"], q.depth_by_priority.get(p, 0))
            for state in _COUNTED:
                name = "queued" if state == "depth" else state
                tasks.add_metric([q.name, name], getattr(q, state))
            late.add_metric([q.name], q.late)
            paused.add_metric([q.name], 1.0 if q.paused else 0.0)
        yield from (depth, tasks, late, paused)

        yield GaugeMetricFamily("taskcore_workers_alive", "Live workers", len(snap.workers))
        yield GaugeMetricFamily(
            "taskcore_worker_slots_busy", "Busy slots, all workers",
            sum(w.busy for w in snap.workers),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "taskcore_worker_slots", "Concurrency slots, all workers",
            sum(w.concurrency for w in snap.workers),
        )  # fmt: skip
        rates = GaugeMetricFamily(
            "taskcore_task_rate", "Tasks finishing per second", labels=["outcome"]
        )
        for outcome in ("succeeded", "failed", "dead"):
            rates.add_metric([outcome], getattr(snap.rates, outcome))
        yield rates

        ok = GaugeMetricFamily(
            "taskcore_check_ok", "1 if the check passed", labels=["check", "kind"]
        )
        latency = GaugeMetricFamily(
            "taskcore_check_latency_seconds", "How long the check took", labels=["check", "kind"]
        )
        for c in snap.checks:
            ok.add_metric([c.name, c.kind], 1.0 if c.ok else 0.0)
            latency.add_metric([c.name, c.kind], c.latency)
        yield from (ok, latency)

        if snap.resources is not None:
            r = snap.resources
            for name, doc, value in (
                ("host_cpu_percent", "CPU use of the monitoring host", r.cpu_percent),
                ("host_memory_percent", "Memory use", r.memory_percent),
                ("host_disk_percent", "Disk use", r.disk_percent),
                ("host_network_sent_bytes_per_second", "Bytes sent", r.net_sent_per_s),
                ("host_network_received_bytes_per_second", "Bytes received", r.net_recv_per_s),
                ("monitor_resident_memory_bytes", "RSS of the monitoring process", r.process_rss),
            ):
                yield GaugeMetricFamily(f"taskcore_{name}", doc, value)

        firing = GaugeMetricFamily(
            "taskcore_alerts_firing", "Firing alerts by severity", labels=["severity"]
        )
        counts = dict.fromkeys(("info", "warning", "critical"), 0)
        for a in snap.alerts:
            if a.state == AlertState.FIRING:
                counts[a.severity] = counts.get(a.severity, 0) + 1
        for severity, n in counts.items():
            firing.add_metric([severity], n)
        yield firing


def metrics_endpoint(
    latest: Callable[[], Snapshot | None],
) -> Callable[[Request], Awaitable[Response]]:
    """A handler serving a registry of its own (no global state shared between apps)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(latest))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
