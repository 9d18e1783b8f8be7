"""Performance metrics kept for ``App(metrics_ttl=...)``: the monitor folds its snapshots
of each minute (of the app's clock) into one :class:`MetricsPoint` and appends it to the
journal's ``metrics`` stream, so the history outlives the process and every web process
reads the same one. Rates and host resources are the minute's means; counts (depth,
running, late, dead, workers) are the minute's last snapshot.

A point covers the seconds of its minute that the monitor watched (``seconds``): a whole
minute, or less in the minute a monitor started or stopped in. A whole minute is stored
once however many monitors share the backend; the partial points of a minute are all
stored, and :func:`read_metrics` folds a minute's points back into one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import msgspec

from taskcore.backend import Backend, JournalEntry

from .snapshot import Snapshot

__all__ = [
    "METRICS_STREAM",
    "MINUTE",
    "MetricsPoint",
    "MinuteFold",
    "entry",
    "merge",
    "read_metrics",
]

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
    seconds: float = MINUTE
    """Seconds of the minute the snapshots cover: 60, or fewer for a minute the monitor
    started in (from its first snapshot) or stopped in (to its last one)."""

    @property
    def partial(self) -> bool:
        """The point covers less than its whole minute."""
        return self.seconds < MINUTE


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(MetricsPoint).decode


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class MinuteFold:
    """The snapshots of the current minute. :meth:`add` returns the previous minute's
    point when a snapshot of a later minute arrives; :meth:`flush` the current one,
    partial, when the monitor stops.

    A snapshot's rates are measured since the previous snapshot, so a minute is covered
    from its start when the monitor sampled before it, else from its first snapshot.
    """

    def __init__(self) -> None:
        self._minute = 0.0
        self._start = 0.0
        self._snapshots: list[Snapshot] = []
        self._last: float | None = None  # time of the latest snapshot folded

    def add(self, snapshot: Snapshot) -> MetricsPoint | None:
        minute = math.floor(snapshot.at / MINUTE) * MINUTE
        done = None
        if self._snapshots and minute != self._minute:
            done = self._point(self._minute + MINUTE)
            self._snapshots = []
        if not self._snapshots:
            last = self._last
            self._minute = minute
            self._start = snapshot.at if last is None or last > snapshot.at else max(minute, last)
        self._snapshots.append(snapshot)
        self._last = snapshot.at
        return done

    def flush(self) -> MetricsPoint | None:
        """The minute in progress, covered up to its latest snapshot (None if no
        snapshot was folded since the last point)."""
        if not self._snapshots:
            return None
        point = self._point(self._snapshots[-1].at)
        self._snapshots = []
        return point

    def _point(self, end: float) -> MetricsPoint:
        snaps = self._snapshots
        last = snaps[-1]
        n = len(snaps)
        resources = [s.resources for s in snaps if s.resources is not None]
        return MetricsPoint(
            at=self._minute,
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
            seconds=min(MINUTE, max(0.0, end - self._start)),
        )


def _weighted(
    points: Sequence[MetricsPoint], value: Callable[[MetricsPoint], float | None]
) -> float | None:
    """The mean of ``value`` over the points' snapshots (points without one left out)."""
    known = [(v, p.samples) for p in points if (v := value(p)) is not None]
    weight = sum(w for _, w in known)
    return sum(v * w for v, w in known) / weight if weight else None


def merge(points: Sequence[MetricsPoint]) -> MetricsPoint:
    """One point for a minute stored as several (in the order they were stored): its
    first whole point if there is one, else the partial ones folded together: means
    weighted by snapshots, counts from the last one stored, seconds added up (at most
    60: two monitors stopping in the same minute may have covered some of it twice)."""
    whole = [p for p in points if not p.partial]
    if whole or len(points) == 1:
        return (whole or points)[0]
    return msgspec.structs.replace(
        points[-1],
        samples=sum(p.samples for p in points),
        succeeded_per_s=_weighted(points, lambda p: p.succeeded_per_s) or 0.0,
        failed_per_s=_weighted(points, lambda p: p.failed_per_s) or 0.0,
        dead_per_s=_weighted(points, lambda p: p.dead_per_s) or 0.0,
        cpu_percent=_weighted(points, lambda p: p.cpu_percent),
        memory_percent=_weighted(points, lambda p: p.memory_percent),
        seconds=min(MINUTE, sum(p.seconds for p in points)),
    )


def entry(point: MetricsPoint) -> JournalEntry:
    return JournalEntry(METRICS_STREAM, point.at, _encode(point))


async def read_metrics(
    backend: Backend,
    since: float | None = None,
    until: float | None = None,
    limit: int = 1440,
) -> list[MetricsPoint]:
    """The newest ``limit`` minutes with ``since <= at < until``, oldest first: one
    point per minute (several points stored for a minute are folded by :func:`merge`)."""
    minutes: dict[float, list[bytes]] = {}  # newest minute first, its points newest first
    size = limit
    while len(minutes) < limit:
        page = await backend.journal_read(METRICS_STREAM, since=since, until=until, limit=size)
        last_page = len(page) < size
        if not last_page:  # the oldest minute may have more points: read it with the next page
            oldest = page[-1].at
            page = [e for e in page if e.at != oldest]
            if not page:  # one minute filled the page: read it in a larger one
                size *= 2
                continue
            until = math.nextafter(oldest, math.inf)
        for e in page:
            minutes.setdefault(e.at, []).append(e.payload)
        if last_page:
            break
    newest = list(minutes.values())[:limit]
    return [merge([_decode(p) for p in reversed(stored)]) for stored in reversed(newest)]
