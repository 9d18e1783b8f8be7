"""Performance metrics kept for ``App(metrics_ttl=...)``: the monitor folds its snapshots
of each minute (of the app's clock) into one :class:`MetricsPoint` and appends it to the
journal's ``metrics`` stream, so the history outlives the process and every web process
reads the same one. Rates and host resources are the minute's means; counts (depth,
running, late, dead, workers) are the minute's last snapshot.
"""

from __future__ import annotations

import math

import msgspec

from taskcore.backend import Backend, JournalEntry

from .snapshot import Snapshot

__all__ = ["METRICS_STREAM", "MINUTE", "MetricsPoint", "MinuteFold", "entry", "read_metrics"]

METRICS_STREAM = "metrics"
MINUTE = 60.0


class MetricsPoint(msgspec.Struct, frozen=True):
    """One minute of an app's performance."""

    at: float
    """Start of the minute (epoch seconds)."""
    samples: int
    """Snapshots folded into it."""
    succeeded_per_s: float
    failed_per_s: float
    dead_per_s: float
    depth: int
    """Ready tasks, all queues (at the minute's last snapshot)."""
    running: int
    late: int
    dead: int
    workers: int
    busy: int
    concurrency: int
    alerts: int
    """Firing alerts at the minute's last snapshot."""
    depth_by_queue: dict[str, int] = {}
    cpu_percent: float | None = None
    memory_percent: float | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(MetricsPoint).decode


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class MinuteFold:
    """The snapshots of the current minute; :meth:`add` returns the previous minute's
    point when a snapshot of a later minute arrives."""

    def __init__(self) -> None:
        self.minute: float | None = None
        self._snapshots: list[Snapshot] = []

    def add(self, snapshot: Snapshot) -> MetricsPoint | None:
        minute = math.floor(snapshot.at / MINUTE) * MINUTE
        done = None
        if self.minute is not None and minute != self.minute and self._snapshots:
            done = self.point()
            self._snapshots = []
        self.minute = minute
        self._snapshots.append(snapshot)
        return done

    def point(self) -> MetricsPoint:
        snaps = self._snapshots
        last = snaps[-1]
        n = len(snaps)
        resources = [s.resources for s in snaps if s.resources is not None]
        return MetricsPoint(
            at=self.minute if self.minute is not None else last.at,
            samples=n,
            succeeded_per_s=sum(s.rates.succeeded for s in snaps) / n,
            failed_per_s=sum(s.rates.failed for s in snaps) / n,
            dead_per_s=sum(s.rates.dead for s in snaps) / n,
            depth=sum(q.depth for q in last.queues),
            running=sum(q.running for q in last.queues),
            late=sum(q.late for q in last.queues),
            dead=sum(q.dead for q in last.queues),
            workers=len(last.workers),
            busy=sum(w.busy for w in last.workers),
            concurrency=sum(w.concurrency for w in last.workers),
            alerts=sum(1 for a in last.alerts if a.state == "firing"),
            depth_by_queue={q.name: q.depth for q in last.queues},
            cpu_percent=_mean([r.cpu_percent for r in resources]),
            memory_percent=_mean([r.memory_percent for r in resources]),
        )


def entry(point: MetricsPoint) -> JournalEntry:
    return JournalEntry(METRICS_STREAM, point.at, _encode(point))


async def read_metrics(
    backend: Backend,
    since: float | None = None,
    until: float | None = None,
    limit: int = 1440,
) -> list[MetricsPoint]:
    """The newest ``limit`` points with ``since <= at < until``, oldest first."""
    entries = await backend.journal_read(METRICS_STREAM, since=since, until=until, limit=limit)
    return [_decode(e.payload) for e in reversed(entries)]
