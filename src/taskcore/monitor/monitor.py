"""The monitor: samples an app's backend, health checks and host on a schedule, keeps a
bounded history, evaluates alert rules, notifies their transitions and streams every
snapshot to subscribers (the dashboard, the CLI's live view).

It uses only the app's public backend calls (``stats()``, ``workers()``), so it runs
the same on every backend, and reads time from the app's clock (a FakeClock in tests).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from taskcore.errors import ConfigurationError
from taskcore.states import State

from .checks import BackendCheck, Check
from .metrics import MINUTE, MetricsPoint, MinuteFold, entry, read_metrics
from .notifiers import LogNotifier, Notifier, deliver
from .rules import Evaluator, Rule, default_rules
from .snapshot import (
    Alert,
    CheckResult,
    QueueSnapshot,
    Rates,
    ResourceSample,
    Snapshot,
    WorkerSnapshot,
)

if TYPE_CHECKING:
    from taskcore.app import App
    from taskcore.backend import QueueStats, WorkerInfo

    from .resources import ResourceSampler

__all__ = ["Monitor"]

log = logging.getLogger("taskcore.monitor")

COLLECT_TIMEOUT = 5.0
"""Real seconds the backend's ``stats()`` and ``workers()`` may take before a sample
goes on without them (an unreachable server must not stall the live view)."""

ALERT_LOG = 1000
"""Alert transitions the monitor remembers."""


class Monitor:
    """Samples an app every ``interval`` seconds into :class:`Snapshot` values.

    Args:
        app: the app to watch (opened by the caller).
        interval: seconds between samples in :meth:`run` (default 1: real-time
            collection with under a second of latency).
        checks: health checks run at every sample, concurrently. A
            :class:`~taskcore.monitor.BackendCheck` named ``backend`` is added unless
            one is given.
        rules: alert rules; ``None`` means :func:`~taskcore.monitor.default_rules`.
        notifiers: where alert transitions go; ``None`` means a
            :class:`~taskcore.monitor.LogNotifier`.
        history: snapshots kept in memory (default 600: ten minutes at one per
            second). Besides, each minute's snapshots are folded into one
            :class:`~taskcore.monitor.MetricsPoint` stored in the backend for
            ``App(metrics_ttl=...)`` (:meth:`metrics` reads them).
        persist: store the per-minute points (default True).
        resources: sample the host's CPU, memory, disk and network (psutil).
        disk_path: the path whose filesystem usage is reported.

    Raises:
        ConfigurationError: a setting is out of range, two checks or two rules share
            a name, or ``disk_path`` does not exist.
    """

    def __init__(
        self,
        app: App,
        *,
        interval: float = 1.0,
        checks: Sequence[Check] = (),
        rules: Sequence[Rule] | None = None,
        notifiers: Sequence[Notifier] | None = None,
        history: int = 600,
        resources: bool = True,
        disk_path: str = "/",
        persist: bool = True,
    ) -> None:
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not 0 < interval < math.inf
        ):
            raise ConfigurationError(f"Monitor(interval={interval!r}): give seconds > 0")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ConfigurationError(f"Monitor(history={history!r}): give a count >= 1")
        bad = [c for c in checks if not isinstance(c, Check)]
        if bad:
            raise ConfigurationError(
                f"Monitor(checks=...): {bad!r} are not health checks (taskcore.monitor.Check)"
            )
        if not any(isinstance(c, BackendCheck) for c in checks):
            checks = (BackendCheck(), *checks)
        names = [c.name for c in checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(f"Monitor(checks=...): check names must be unique: {dupes}")
        bad_notifiers = [n for n in notifiers or () if not isinstance(n, Notifier)]
        if bad_notifiers:
            raise ConfigurationError(
                f"Monitor(notifiers=...): {bad_notifiers!r} are not notifiers "
                "(taskcore.monitor.Notifier; wrap a function in CallableNotifier)"
            )
        self.app = app
        self.interval = float(interval)
        self.checks: tuple[Check, ...] = tuple(checks)
        self.evaluator = Evaluator(default_rules() if rules is None else rules)
        self.notifiers: tuple[Notifier, ...] = (
            (LogNotifier(),) if notifiers is None else tuple(notifiers)
        )
        self._sampler: ResourceSampler | None = None
        if resources:
            from .resources import ResourceSampler

            self._sampler = ResourceSampler(disk_path)
        self.latest: Snapshot | None = None
        self._history: deque[Snapshot] = deque(maxlen=history)
        self._alert_log: deque[Alert] = deque(maxlen=ALERT_LOG)
        self._subscribers: set[MemoryObjectSendStream[Snapshot]] = set()
        # per-queue (succeeded, failed, dead) at the last sample that reached the backend
        self._counts: tuple[float, dict[str, tuple[int, int, int]]] | None = None
        self._lock: anyio.Lock | None = None
        self.persist = persist
        self._minutes = MinuteFold()

    def __repr__(self) -> str:
        return f"<Monitor {self.app!r} interval={self.interval}s>"

    @property
    def history(self) -> Sequence[Snapshot]:
        """The latest snapshots, oldest first (at most ``history`` of them)."""
        return self._history

    @property
    def alert_log(self) -> Sequence[Alert]:
        """Alert transitions (firing, resolved), newest last (at most 1000)."""
        return self._alert_log

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.evaluator.rules

    # -- sampling ---------------------------------------------------------------------
    async def sample(self) -> Snapshot:
        """Take one snapshot now: backend counts and workers, every health check and
        the host's resources (concurrently), rates since the previous snapshot, alert
        rules evaluated and their transitions notified.

        The backend failing does not raise: the snapshot then has no queues or workers,
        its ``backend`` check fails, and alerts about queues keep their state.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # one sample at a time: rates and rules need an order
            return await self._sample()

    async def _sample(self) -> Snapshot:
        app = self.app
        at = app.clock.now()
        stats: list[QueueStats] | None = None
        workers: list[WorkerInfo] | None = None
        failure: str | None = None
        results: list[CheckResult | None] = [None] * len(self.checks)

        async def collect() -> None:
            nonlocal stats, workers, failure
            try:
                with anyio.fail_after(COLLECT_TIMEOUT):
                    stats = await app.backend.stats()
                    workers = await app.backend.workers()
            except TimeoutError:
                failure = f"stats()/workers() gave no answer within {COLLECT_TIMEOUT:g} s"
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if failure is not None:
                log.warning("monitor: the backend could not be read: %s", failure)

        async def check(i: int, c: Check) -> None:
            results[i] = await c.run(app)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            for i, c in enumerate(self.checks):
                tg.start_soon(check, i, c)
            resources = self._resources()
        checks = [r for r in results if r is not None]
        if failure is not None:
            # the collection's own error says more than the backend check's (which may
            # even have passed, had the outage begun in between)
            checks = [
                _failed(r, failure) if c.kind == "backend" else r
                for r, c in zip(checks, self.checks, strict=True)
            ]
        queues = [_queue(s) for s in stats or ()]
        snapshot = Snapshot(
            at=at,
            queues=queues,
            workers=[_worker(w) for w in workers or ()],
            checks=checks,
            rates=self._rates(at, stats),
            alerts=[],
            resources=resources,
        )
        active, transitions = self.evaluator.evaluate(snapshot, partial=stats is None)
        snapshot = msgspec.structs.replace(snapshot, alerts=active)
        self._alert_log.extend(transitions)
        await deliver(self.notifiers, transitions)
        self.latest = snapshot
        self._history.append(snapshot)
        self._publish(snapshot)
        if self.persist:
            point = self._minutes.add(snapshot)
            if point is not None:
                await self._store(point)
        return snapshot

    async def flush(self) -> None:
        """Store the minute in progress now, as a partial point (its ``seconds`` say how
        much of the minute it covers). :meth:`run` does it when it stops; call it when
        you drive :meth:`sample` yourself and stop."""
        if self.persist:
            point = self._minutes.flush()
            if point is not None:
                await self._store(point)

    async def _store(self, point: MetricsPoint) -> None:
        """Append a minute's point to the journal and apply the retention (once a
        minute, so a deployment without workers trims too). Not cut short by the
        monitor stopping (it is bounded by ``COLLECT_TIMEOUT``)."""
        backend = self.app.backend
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(COLLECT_TIMEOUT):
                # several monitors on one backend (one per web process): the first to
                # finish a whole minute stores it; partial points (a monitor started or
                # stopped in the minute) are all kept, and read_metrics merges them
                if point.partial or await backend.once(
                    f"taskcore:metrics:{point.at!r}", 3 * MINUTE
                ):
                    await backend.journal_append([entry(point)])
                    await self.app.trim_journal()
        except Exception as exc:
            log.warning("monitor: the metrics of minute %s were not stored: %r", point.at, exc)

    async def metrics(
        self, since: float | None = None, until: float | None = None, limit: int = 1440
    ) -> list[MetricsPoint]:
        """The stored per-minute points with ``since <= at < until`` (epoch seconds;
        the newest ``limit`` of them, default one day), oldest first. Every monitor
        of the same backend stores into, and reads, the same history."""
        return await read_metrics(self.app.backend, since, until, limit)

    def _resources(self) -> ResourceSample | None:
        if self._sampler is None:
            return None
        try:
            return self._sampler.sample()
        except Exception as exc:
            log.warning("monitor: host resources could not be read: %r", exc)
            return None

    def _rates(self, at: float, stats: list[QueueStats] | None) -> Rates:
        if stats is None:
            return Rates()  # nothing measured; the counts of the last good sample stay
        counts = {
            s.queue: (
                s.states.get(State.SUCCEEDED, 0),
                s.states.get(State.FAILED, 0),
                s.states.get(State.DEAD, 0),
            )
            for s in stats
        }
        previous, self._counts = self._counts, (at, counts)
        if previous is None or at <= previous[0]:
            return Rates()
        elapsed = at - previous[0]
        totals = [0.0, 0.0, 0.0]
        for queue, now in counts.items():
            before = previous[1].get(queue, (0, 0, 0))
            for i in range(3):
                # finished counts drop when records expire or dead letters are retried:
                # a drop is no progress, and must not hide another queue's
                totals[i] += max(0, now[i] - before[i])
        return Rates(
            succeeded=totals[0] / elapsed, failed=totals[1] / elapsed, dead=totals[2] / elapsed
        )

    # -- running ----------------------------------------------------------------------
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Sample every ``interval`` seconds of the app's clock until cancelled.

        ``task_status.started()`` is called once the first snapshot is in
        :attr:`latest` (``await task_group.start(monitor.run)``). When cancelled, it
        stores the minute in progress (:meth:`flush`) before it returns.
        """
        clock = self.app.clock
        try:
            due = taken = clock.now()
            await self._sample_logged()
            task_status.started()
            while True:
                due += self.interval
                if due <= taken:  # woken late: that sample stood for the slots up to it
                    due += (math.floor((taken - due) / self.interval) + 1) * self.interval
                now = clock.now()
                if due < now:  # a sample overran: skip the slots it missed, keep the cadence
                    due += math.ceil((now - due) / self.interval) * self.interval
                await clock.sleep(due - now)
                taken = clock.now()
                await self._sample_logged()
        finally:
            await self.flush()  # shielded: the monitor stops by being cancelled

    async def _sample_logged(self) -> None:
        try:
            await self.sample()
        except Exception:
            # sample() handles the backend's failures itself; this is a bug (a custom
            # check's or notifier's BaseException subclass aside): keep monitoring
            log.exception("monitor: sampling failed")

    # -- streaming --------------------------------------------------------------------
    @contextlib.contextmanager
    def subscribe(self, buffer: int = 16) -> Iterator[anyio.abc.ObjectReceiveStream[Snapshot]]:
        """Receive every new snapshot while the ``with`` block lasts.

        A subscriber that falls ``buffer`` snapshots behind misses the newer ones until
        it catches up: the monitor never waits for a subscriber.
        """
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ConfigurationError(f"subscribe(buffer={buffer!r}): give a count >= 1")
        send, receive = anyio.create_memory_object_stream[Snapshot](buffer)
        self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def _publish(self, snapshot: Snapshot) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(snapshot)
            except anyio.WouldBlock:
                pass  # a slow subscriber misses this one
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)


def _failed(result: CheckResult, error: str) -> CheckResult:
    """``result`` marked failed with ``error`` (kept as it is if it failed already)."""
    return result if not result.ok else msgspec.structs.replace(result, ok=False, error=error)


def _queue(s: QueueStats) -> QueueSnapshot:
    states = s.states
    return QueueSnapshot(
        name=s.queue,
        paused=s.paused,
        depth=s.depth,
        running=states.get(State.RUNNING, 0),
        scheduled=states.get(State.SCHEDULED, 0),
        retrying=states.get(State.RETRYING, 0),
        dead=states.get(State.DEAD, 0),
        failed=states.get(State.FAILED, 0),
        succeeded=states.get(State.SUCCEEDED, 0),
        late=s.late,
        depth_by_priority=dict(s.depth_by_priority),
        late_by_priority=dict(s.late_by_priority),
        policy=s.policy.kind,
    )


def _worker(w: WorkerInfo) -> WorkerSnapshot:
    return WorkerSnapshot(
        id=w.id,
        hostname=w.hostname,
        pid=w.pid,
        queues=list(w.queues),
        concurrency=w.concurrency,
        busy=w.busy,
        started_at=w.started_at,
        heartbeat_at=w.heartbeat_at,
    )
