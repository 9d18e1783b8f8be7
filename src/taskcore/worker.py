"""The worker: claims tasks into free slots, runs them, settles the outcomes.

One claim loop fills free slots (no hidden prefetch: by default never more; with
``prefetch`` set, also a buffer of tasks claimed ahead, ``"auto"`` sizing it to what
the slots finish during one claim round trip). Each run goes to
its pool: ``async`` on the event loop, ``thread`` in a bounded thread pool, ``process``
in a bounded process pool with hard timeouts. Background loops renew leases, batch the
acknowledgements, reap expired leases, heartbeat, fire cron ticks and scale
concurrency. ``stop()`` stops claiming, waits ``grace_period`` for running tasks and
hands the rest back to the queue (prefetched tasks at once, keeping their place).

Before a task runs, the worker admits it: a task whose leases keep expiring is
dead-lettered as a poison task, a rate limit or an open circuit defers it (see
:mod:`taskcore.admission`). A worker with ``max_tasks`` or ``max_rss`` retires once it
reaches them (see :mod:`taskcore.recycle`).

At start and at every maintenance tick the worker reads the remote configuration (one
key of the backend, see :mod:`taskcore.config.remote`) and applies a new version: its
``concurrency`` (within the autoscaling bounds) and ``paused`` (stop claiming).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import msgspec

from . import tasklogs
from .admission import Admission
from .autoscale import Autoscaler
from .backend import (
    AttemptError,
    Backend,
    ExtendStatus,
    JournalEntry,
    Lease,
    Outcome,
    OutcomeKind,
    WorkerInfo,
)
from .circuit import Ticket
from .complexity import Complexity, Pool, classify
from .envelope import Envelope
from .errors import (
    BackendError,
    RateLimited,
    Retry,
    SerializationError,
    TaskTimeout,
    TaskValidationError,
    UnknownTask,
)
from .middleware import ExecutionContext
from .priority import is_late
from .recycle import RSS_CHECK_INTERVAL, Recycle
from .retry import RetryPolicy
from .states import State
from .tasklogs import CURRENT_RUN, RunLog

if TYPE_CHECKING:
    from .app import App
    from .backend import FollowUp
    from .config.remote import RemoteDocument
    from .envelope import Codec
    from .task import Task

__all__ = ["Worker"]

log = logging.getLogger("taskcore.worker")


class _PartialCall(msgspec.Struct, frozen=True):
    """A workflow step's own arguments (the results passed in come before them)."""

    a: list[Any] = []
    k: dict[str, Any] = {}


StopReason = Literal["cancel", "lost", "shutdown", "timeout"]
RESERVED_POLL = 0.1  # seconds: P0 look-ups while only reserved slots are free
# backpressure: while this many outcomes per slot wait for a settle (the backend is slow
# to record them, or unreachable), the worker claims nothing more
SETTLE_BACKLOG_PER_SLOT = 10
# automatic prefetch: twice the tasks the slots finished during the last claim round
# trip, at most this many per slot (and at least PREFETCH_FLOOR in all)
PREFETCH_PER_SLOT = 4
PREFETCH_FLOOR = 100
# after a failed lease renewal or settle, the next try comes within this fraction of the
# lease (renewals otherwise every third of it): leases lapse one lease after their last
# renewal, so a backend back after an outage gets them renewed and settled in time
RETRY_FRACTION = 12
# journal retention (App.trim_journal) runs at most this often per worker (seconds)
TRIM_INTERVAL = 60.0
# finished runs whose logs wait to be written (the backend failing): older ones dropped
MAX_PENDING_LOGS = 1000


_heap_frozen = False


def _follow_ups(env: Envelope, now: float, codec: Codec) -> tuple[FollowUp, ...]:
    """A workflow step's follow-ups (workflow is imported by the first one: an idle
    worker, or one that runs no workflow, does not load it)."""
    from .workflow import follow_ups

    return follow_ups(env, now, codec)


def _freeze_heap() -> None:
    """Once per process: collect everything, then freeze what survived (start-up)."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.collect()
        gc.freeze()


@attrs.frozen
class _Plan:
    """What a worker derives once per (task, queue, priority)."""

    policy: RetryPolicy
    timeout: float
    pool: Pool
    labels: dict[str, str]
    by_outcome: dict[OutcomeKind, dict[str, str]]
    result_ttl: float
    auto: bool


@attrs.define(eq=False)
class _Run:
    lease: Lease
    scope: anyio.CancelScope | None = None  # the slot's scope, set when the run starts
    stop_reason: StopReason | None = None
    # set once the task function is about to run, for the timeout path
    task: Task[Any, Any] | None = None
    policy: RetryPolicy | None = None
    timeout: float = 0.0
    deadline: float = math.inf
    late: bool = False
    ticket: Ticket | None = None  # leave to run under a circuit breaker
    log: RunLog | None = None  # what the task body logged (made at its first line)


class _Failure(Exception):
    """Internal: a run ended with a recorded error and a decided outcome."""


class Worker:
    """Runs tasks of an :class:`~taskcore.app.App`.

    Args:
        queues: queues to consume, in order of preference (default: every queue the
            app's tasks use).
        concurrency: slots (tasks running at once); with ``min_concurrency`` /
            ``max_concurrency`` this is the starting point for autoscaling.
        min_concurrency / max_concurrency: autoscaling bounds (by queue depth and CPU).
        threads: thread-pool bulkhead for sync tasks.
        processes: process-pool bulkhead for complex tasks (default: CPU count).
        reserved_critical: slots only P0 tasks may take.
        lease_seconds: lease length; renewed every third of it while a task runs.
        grace_period: seconds running tasks get to finish at shutdown.
        poll_interval: longest idle wait before claiming again (wake-ups are pushed).
        maintenance_interval: seconds between reaping, heartbeats and autoscaling.
        max_tasks: retire after claiming this many tasks (recycling; None: never).
        max_rss: retire once the worker or one of its process-pool children holds this
            much resident memory: bytes, or a size such as ``"512MB"``.
        lost_lease_allowance: runs granted beyond the retry policy's attempts to make up
            for workers lost while running a task; a task claimed more often than
            ``retries + 1 + lost_lease_allowance`` times is dead-lettered as poison.
        freeze_heap: when the first worker of the process starts, run one full garbage
            collection and move every object that survives it out of the collector's
            reach (``gc.freeze()``): the imports and set-up objects are then never
            traversed again. Without it, the first full collection comes during the
            first seconds of work and stalls the event loop for tens of milliseconds;
            each later one walks the whole heap. An object alive at that moment that
            later becomes part of unreachable cycles is not reclaimed (see
            ``gc.freeze``); pass False to keep the collector's defaults.
        prefetch: tasks claimed beyond the free slots, held (their leases renewed)
            until a slot frees up, so that short tasks do not wait for a claim round
            trip. ``0`` (default): claim only into free slots. ``"auto"``: twice the
            tasks the slots finished during the last claim round trip, at most
            ``max(4 * concurrency, 100)``, none while tasks run long. ``N``: up to N.
            Ignored (0) with ``reserved_critical``. Prefetched tasks are handed back,
            keeping their place, when the worker stops.
        capture_logs: keep what each task logs through :mod:`logging` while it runs
            (async and thread-pool tasks; not process-pool ones), written to the
            backend with the next settle and read with ``handle.logs()``; see
            :mod:`taskcore.tasklogs`. A task that logs nothing costs nothing more.
        carry: at most this many finished tasks ride on the next claim
            (``Backend.claim(settle=)``) when it goes out while a settle is still in
            flight. ``0`` (default): settles always go beside the claims, in parallel.
            Carrying saves a round trip of client CPU per claim but adds the settles'
            server time to the claim's; it pays when the worker's CPU is the limit,
            not the round trip (docs/benchmarks.md, "Carried settles").
    """

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        min_concurrency: int | None = None,
        max_concurrency: int | None = None,
        threads: int = 16,
        processes: int | None = None,
        reserved_critical: int = 0,
        lease_seconds: float = 30.0,
        grace_period: float = 30.0,
        poll_interval: float = 1.0,
        maintenance_interval: float = 5.0,
        worker_id: str | None = None,
        max_tasks: int | None = None,
        max_rss: int | str | None = None,
        lost_lease_allowance: int = 3,
        freeze_heap: bool = True,
        prefetch: int | Literal["auto"] = 0,
        carry: int = 0,
        capture_logs: bool = True,
    ) -> None:
        from .errors import ConfigurationError

        if concurrency < 1 or threads < 1 or (processes is not None and processes < 1):
            raise ConfigurationError(
                f"concurrency={concurrency}, threads={threads}, processes={processes}: "
                "each must be >= 1"
            )
        if not 0 <= reserved_critical < concurrency:
            raise ConfigurationError(
                f"reserved_critical={reserved_critical} must be >= 0 and below concurrency="
                f"{concurrency}"
            )
        if lease_seconds <= 0 or grace_period < 0 or poll_interval <= 0:
            raise ConfigurationError(
                f"lease_seconds={lease_seconds}, poll_interval={poll_interval}, "
                f"grace_period={grace_period}: the lease and the poll interval must be > 0 "
                "seconds, the grace period >= 0"
            )
        if carry < 0:
            raise ConfigurationError(f"carry={carry}: use a number of outcomes >= 0")
        if prefetch != "auto" and not (isinstance(prefetch, int) and prefetch >= 0):
            raise ConfigurationError(
                f"prefetch={prefetch!r}: use a number of tasks >= 0, or 'auto'"
            )
        self.recycle = Recycle.from_options(max_tasks, max_rss)
        self.admission = Admission(app, lost_lease_allowance)
        self.recycled: str | None = None
        """Why the worker retired (max_tasks or max_rss reached), else None."""
        self.app = app
        self.clock = app.clock
        self.queues = (
            list(queues)
            if queues
            else sorted({t.options.queue for t in app.tasks.values()} | {"default"})
        )
        self.target = concurrency
        self.autoscaler: Autoscaler | None = None
        if min_concurrency is not None or max_concurrency is not None:
            self.autoscaler = Autoscaler(
                min_concurrency or 1, max_concurrency or max(concurrency, min_concurrency or 1)
            )
            self.target = min(max(concurrency, self.autoscaler.minimum), self.autoscaler.maximum)
        self.reserved_critical = reserved_critical
        self.lease_seconds = lease_seconds
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.maintenance_interval = maintenance_interval
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.thread_limiter = anyio.CapacityLimiter(threads)
        self.process_limiter = anyio.CapacityLimiter(processes or os.cpu_count() or 2)
        self.busy: dict[Pool, int] = {"async": 0, "thread": 0, "process": 0}
        self.processed = 0
        self._running: dict[str, _Run] = {}
        self._outcomes: list[Outcome] = []
        self._outcome_event = anyio.Event()
        self._slot_event = anyio.Event()
        # the watchdog sleeps until the earliest deadline it knows (none: until a run
        # starts); a run starting with an earlier one wakes it
        self._watch_until = math.inf
        self._watch_event = anyio.Event()
        # the running event loop's Event class: made directly, an event skips anyio's
        # look-up of the async library (a few µs, paid about once per task)
        self._new_event: Callable[[], anyio.Event] = type(self._slot_event)
        self._stopping = False
        self._stopped = anyio.Event()
        self._wait_scope: anyio.CancelScope | None = None
        self._samples: list[tuple[str, float]] = []
        self._classes: dict[str, Complexity] = {}
        self._plans: dict[tuple[str, str, int], _Plan] = {}
        self._started_at = self.clock.now()
        self._tg: anyio.abc.TaskGroup | None = None
        self._depth = 0
        self._slots = 0
        self._pending: deque[_Run] = deque()
        self._idle: deque[anyio.Event] = deque()
        self._closed = False
        self._waking = False
        self._settle_lock = anyio.Lock()
        self._settling = 0  # outcomes in the settle in flight
        self._in_settle: list[Outcome] = []  # those outcomes (their leases are renewed)
        self._backlogged = False  # the claim loop waits for settles to catch up
        self._tracing = app.telemetry.tracing
        self._claimed = 0
        self._stop_requested = False
        self._drain_scope: anyio.CancelScope | None = None
        self.freeze_heap = freeze_heap
        self.carry = carry
        self.prefetch_auto = prefetch == "auto"
        self.prefetch = 0 if prefetch == "auto" else prefetch
        """Tasks claimed beyond the free slots (adapted as it goes with ``"auto"``)."""
        self._claim_mark: tuple[float, int] | None = None  # last claim: (sent, processed)
        self.capture_logs = capture_logs
        self._logs: list[JournalEntry] = []  # finished runs' logs, for the next settle
        self._trim_due = -math.inf  # next journal retention pass (maintenance)
        self.paused = False
        """The remote configuration paused claiming (running tasks go on)."""
        self._configured_target = self.target
        self._remote_applied = False  # the remote configuration was read once
        self._remote_doc: RemoteDocument | None = None  # and was this document
        self._remote_concurrency: int | None = None

    # -- lifecycle ------------------------------------------------------------
    def stop(self) -> None:
        """Stop claiming; running tasks get ``grace_period`` to finish."""
        self._stopping = True
        self._stop_requested = True
        self._release_pending()  # prefetched tasks go back at once, not after the grace
        self._slot_event.set()
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        if self._drain_scope is not None:  # retiring: the grace period applies from now
            self._drain_scope.deadline = min(
                self._drain_scope.deadline, anyio.current_time() + self.grace_period
            )

    def _retire(self, reason: str) -> None:
        """Stop claiming and let every running task finish (recycling)."""
        if self.recycled is None:
            self.recycled = reason
            log.info(
                "worker %s retiring: %s; finishing %d running task(s)",
                self.id,
                reason,
                self.running,
            )
        self._stopping = True
        self._slot_event.set()
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    @property
    def running(self) -> int:
        """Tasks in the slots (claimed ones waiting for a slot, prefetched, excluded)."""
        return len(self._running) - len(self._pending)

    @property
    def held(self) -> int:
        """Tasks this worker holds a lease on: running plus prefetched."""
        return len(self._running)

    async def __aenter__(self) -> Worker:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self._tg.start(self.run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until :meth:`stop` (or SIGINT/SIGTERM through the CLI)."""
        self.app.telemetry.bind_if_configured()  # the gauges, observed while idle
        await self.app.open()
        await self._heartbeat()
        await self._refresh_config()
        if self.capture_logs:
            tasklogs.install()
        try:
            await self._run(task_status)
        finally:
            if self.capture_logs:
                tasklogs.uninstall()

    async def _run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as background:
            background.start_soon(self._settle_loop)
            background.start_soon(self._extend_loop)
            background.start_soon(self._maintenance_loop)
            background.start_soon(self._watchdog_loop)
            if self.app.periodics:
                background.start_soon(self._cron_loop)
            if self.recycle.max_rss is not None:
                background.start_soon(self._memory_loop)
            async with anyio.create_task_group() as runs:
                if self.freeze_heap:
                    _freeze_heap()
                log.info(
                    "worker %s started: queues %s, concurrency %d",
                    self.id,
                    ",".join(self.queues),
                    self.target,
                )
                task_status.started()
                await self._claim_loop(runs)
                await self._drain()
                self._close_slots()
            # settle what finished; if the backend stays unreachable, the leases expire
            # and the tasks run again elsewhere (never lost)
            with anyio.move_on_after(max(5.0, self.grace_period)):
                await self._flush()
            background.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await self.app.backend.remove_worker(self.id)
            except BackendError:
                log.warning("could not deregister worker %s", self.id)
        self._stopped.set()

    async def _drain(self) -> None:
        # a retiring worker runs the tasks it holds, prefetched ones too (they count
        # towards max_tasks), unless a signal stops it meanwhile; a stopped one hands
        # the prefetched ones back (stop() did already, unless a claim was in flight)
        if self.recycled is None or self._stop_requested:
            self._release_pending()
        if self._running:
            # a retiring worker waits for its tasks (their timeouts bound the wait) unless
            # a signal stops it meanwhile; a stopped one gives them the grace period
            retiring = self.recycled is not None and not self._stop_requested
            log.info(
                "stopping: waiting %s for %d task(s)",
                "until they finish" if retiring else f"up to {self.grace_period}s",
                len(self._running),
            )
            with anyio.CancelScope() as self._drain_scope:
                if not retiring:
                    self._drain_scope.deadline = anyio.current_time() + self.grace_period
                while self._running:
                    await self._slot_event.wait()
                    self._slot_event = self._new_event()
        for run in list(self._running.values()):
            self._stop_run(run, "shutdown")

    # -- claiming ---------------------------------------------------------------
    def _spawn_slots(self, runs: anyio.abc.TaskGroup) -> None:
        """Long-lived slot coroutines take runs from a deque (no spawn per task). They
        start when work first needs them (an idle worker holds none, a worker of
        concurrency 100 that never ran more than 10 at once holds 10) and then stay."""
        while self._slots < min(len(self._running), self.target):  # prefetched: no slot
            self._slots += 1
            runs.start_soon(self._slot_loop)

    def _hand_out(self, new_runs: list[_Run]) -> None:
        self._pending.extend(new_runs)
        self._wake_slot()

    def _wake_slot(self) -> None:
        # at most one slot on its way up at a time: a slot whose task never awaits drains
        # the batch alone; one whose task awaits lets the next slot take the rest
        if self._idle and not self._waking:
            self._waking = True
            self._idle.popleft().set()

    def _close_slots(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.popleft().set()

    async def _next_run(self) -> _Run | None:
        while True:
            if self._slots > self.target:
                # autoscaling shrank the worker: this slot ends (it would otherwise start
                # prefetched tasks beyond the concurrency)
                self._slots -= 1
                if self._pending:
                    self._wake_slot()
                return None
            if self._pending:
                break
            if self._closed:
                return None
            wake = self._new_event()
            self._idle.append(wake)
            await wake.wait()
            self._waking = False
        run = self._pending.popleft()
        if self._pending:
            self._wake_slot()
        return run

    async def _slot_loop(self) -> None:
        """Run one task at a time. The runs of a slot share one cancel scope until one of
        them is cancelled (a scope per run would cost more than a no-op task)."""
        while True:
            run: _Run | None = None
            with anyio.CancelScope() as scope:
                while not scope.cancel_called:
                    run = await self._next_run()
                    if run is None:
                        return
                    if run.stop_reason is not None:
                        self._finish(run, self._stopped_outcome(run))
                        run = None
                        continue
                    run.scope = scope
                    outcome = await self._process(run)
                    self._finish(run, outcome)
                    run = None
            if run is not None:  # cancelled while it ran: lost, cancel, shutdown, timeout
                self._finish(run, self._stopped_outcome(run))
                if run.ticket is not None and run.stop_reason == "timeout":
                    await self.admission.verdict(
                        run.ticket, TaskTimeout(f"ran past its timeout of {run.timeout}s")
                    )

    def _release_pending(self) -> None:
        """Hand back the claimed tasks no slot has started (prefetched): a released task
        keeps its place in the queue and does not spend an attempt."""
        while self._pending:
            run = self._pending.popleft()
            if run.stop_reason is None:
                run.stop_reason = "shutdown"
            del self._running[run.lease.message.id]  # not counted as processed
            outcome = self._stopped_outcome(run)
            if outcome is not None:  # None: the lease was lost meanwhile
                self._outcomes.append(outcome)
                self._outcome_event.set()
        self._slot_event.set()

    def _stop_run(self, run: _Run, reason: StopReason) -> None:
        run.stop_reason = reason
        if run.scope is not None:
            run.scope.cancel()  # not started yet: the slot sees stop_reason when it takes it

    def _finish(self, run: _Run, outcome: Outcome | None) -> None:
        if run.log is not None:
            self._keep_logs(run)
        del self._running[run.lease.message.id]
        self._slot_event.set()
        self.processed += 1
        if outcome is not None:
            self._outcomes.append(outcome)
            self._outcome_event.set()

    async def _claim_loop(self, runs: anyio.abc.TaskGroup) -> None:
        backend = self.app.backend
        # a backend whose wait() claims in the round trip that blocks, once a claim
        # found the queues drained (Redis): a claim right after one that came back
        # short would only come back empty, so the worker waits instead
        wait_claims = bool(getattr(backend, "wait_claims", False))
        short = False  # the last claim came back with fewer tasks than it asked for
        failures = 0
        while not self._stopping:
            if self.paused:  # woken by the resume, or stop()
                self._slot_event = self._new_event()
                await self._slot_event.wait()
                continue
            # reserved slots: claim only into free slots, or P1-P4 tasks prefetched now
            # could take them later
            capacity = self.target + (0 if self.reserved_critical else self.prefetch)
            free = capacity - len(self._running)
            if len(self._outcomes) + self._settling >= SETTLE_BACKLOG_PER_SLOT * self.target:
                # finished tasks wait for their settle: claiming more would only pile up
                # outcomes (memory) whose leases may lapse before they are recorded;
                # woken by the next settle, a finished task or stop()
                self._backlogged = True
                self._slot_event = self._new_event()
                await self._slot_event.wait()
                self._backlogged = False
                continue
            # batch claims: while tasks run, wait until a quarter of the room is free
            if free < (max(1, capacity // 4) if self._running else 1):
                self._slot_event = self._new_event()
                await self._slot_event.wait()
                continue
            if free > self.reserved_critical:
                limit, max_priority = free - self.reserved_critical, 4
            else:
                limit, max_priority = free, 0
            if self.recycle.max_tasks is not None:
                left = self.recycle.max_tasks - self._claimed
                if left <= 0:
                    self._retire(f"claimed max_tasks={self.recycle.max_tasks} tasks")
                    break
                limit = min(limit, left)
            # finished tasks are settled beside the claim, in parallel, where their
            # server time does not delay it; with ``carry``, while a settle is still in
            # flight a few ride on the claim instead (one round trip, not two)
            carried: list[Outcome] = []
            if len(self._outcomes) <= self.carry and self._settle_lock.locked() and not self._logs:
                carried, self._outcomes = self._outcomes, []
            if short and wait_claims and not carried and max_priority >= 4:
                short = False
                await self._wait_for_work(backend)
                continue
            short = False
            try:
                sent = time.monotonic()
                leases = await backend.claim(
                    self.queues,
                    limit,
                    self.lease_seconds,
                    self.id,
                    max_priority=max_priority,
                    settle=carried,
                )
                if self.prefetch_auto:
                    self._adapt_prefetch(sent, time.monotonic())
                failures = 0
            except BaseException as exc:
                if carried:  # settled or not: the settle loop settles them (again)
                    self._outcomes[:0] = carried
                    self._outcome_event.set()
                if not isinstance(exc, BackendError):
                    raise
                failures += 1
                delay = min(30.0, 0.1 * 2**failures)
                log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                await anyio.sleep(delay)
                continue
            if leases and self.paused:
                # paused while the claim was out: hand the tasks back, keeping their place
                # and without spending an attempt
                now = self.clock.now()
                self._outcomes += (
                    Outcome(lease.message.id, lease.token, OutcomeKind.RELEASED, now)
                    for lease in leases
                )
                self._outcome_event.set()
                continue
            if not leases and free <= self.reserved_critical:
                # only reserved slots are free: other priorities may be waiting, so the
                # backend's wait would return at once; look for P0 work ten times a second
                # until a slot frees up
                self._slot_event = self._new_event()
                with anyio.move_on_after(min(self.poll_interval, RESERVED_POLL)):
                    await self._slot_event.wait()
                continue
            if not leases:
                await self._wait_for_work(backend)
                continue
            short = len(leases) < limit and max_priority >= 4
            self._claimed += len(leases)
            new_runs = [_Run(lease) for lease in leases]
            for run in new_runs:
                self._running[run.lease.message.id] = run
            if self._slots < min(len(self._running), self.target):
                self._spawn_slots(runs)
            self._hand_out(new_runs)
            # let the slots start these runs before the next claim is prepared and sent
            await anyio.lowlevel.checkpoint()

    async def _wait_for_work(self, backend: Backend) -> None:
        with anyio.CancelScope() as self._wait_scope:
            try:
                await backend.wait(self.queues, self.poll_interval)
            except BackendError as exc:
                log.warning("wait failed: %s", exc)
                await anyio.sleep(self.poll_interval)
        self._wait_scope = None

    def _adapt_prefetch(self, sent: float, back: float) -> None:
        """Prefetch twice the tasks the slots finish during one claim round trip (their
        completion rate since the previous claim times this claim's round trip), so a
        batch is at hand when slots free up; long tasks finish too slowly to prefetch
        any. Smoothed over claims, bounded by PREFETCH_PER_SLOT per slot."""
        mark, self._claim_mark = self._claim_mark, (sent, self.processed)
        if mark is None or sent <= mark[0]:
            return
        rate = (self.processed - mark[1]) / (sent - mark[0])
        wanted = 2 * rate * (back - sent)
        bound = max(PREFETCH_PER_SLOT * self.target, PREFETCH_FLOOR)
        self.prefetch = min(bound, int((self.prefetch + wanted) / 2))

    # -- running ------------------------------------------------------------------
    def _stopped_outcome(self, run: _Run) -> Outcome | None:
        lease, now = run.lease, self.clock.now()
        if run.stop_reason == "timeout" and run.task is not None and run.policy is not None:
            exc = TaskTimeout(
                f"task {run.task.name!r} ran past its timeout of {run.timeout}s",
                task_id=lease.message.id,
            )
            self.app.telemetry.failed.add(1, {"task": run.task.name})
            return self._failure(lease, run.task, run.policy, exc, run.late)
        if run.stop_reason == "cancel":
            return Outcome(
                lease.message.id,
                lease.token,
                OutcomeKind.CANCELLED,
                now,
                result_ttl=self.app.result_ttl,
            )
        if run.stop_reason == "shutdown":
            return Outcome(lease.message.id, lease.token, OutcomeKind.RELEASED, now)
        return None  # lease lost: another worker owns the task now

    def complexity_of(self, task: Task[Any, Any]) -> Complexity:
        """The class this worker applies to ``task`` (measured ones for ``auto``)."""
        return self._complexity(task)

    def _complexity(self, task: Task[Any, Any]) -> Complexity:
        declared = task.options.complexity
        if declared is Complexity.AUTO:
            return self._classes.get(task.name, Complexity.AUTO)
        return declared

    def _dead(self, lease: Lease, kind: str, message: str) -> Outcome:
        log.error("task %s dead-lettered: %s: %s", lease.message.id, kind, message)
        now = self.clock.now()
        self.app.telemetry.dead.add(1, {"task": lease.message.task, "queue": lease.message.queue})
        return Outcome(
            lease.message.id,
            lease.token,
            OutcomeKind.DEAD,
            now,
            error=AttemptError(lease.attempt, kind, message, "", now),
            result_ttl=self.app.dead_ttl,
        )

    def _plan(self, task: Task[Any, Any], queue: str, priority: int) -> _Plan:
        key = (task.name, queue, priority)
        plan = self._plans.get(key)
        if plan is None:
            complexity = self._complexity(task)
            labels = {
                "task": task.name,
                "queue": queue,
                "priority": f"P{priority}",
                "complexity": str(complexity),
            }
            plan = self._plans[key] = _Plan(
                policy=task.options.retry or complexity.retry_policy,
                timeout=task.options.timeout or complexity.timeout,
                pool=task.options.pool or complexity.pool(task.is_async),
                labels=labels,
                by_outcome={kind: {**labels, "outcome": str(kind)} for kind in OutcomeKind},
                result_ttl=task.options.result_ttl or self.app.result_ttl,
                auto=task.options.complexity is Complexity.AUTO,
            )
        return plan

    async def _process(self, run: _Run) -> Outcome | None:
        lease = run.lease
        app, msg, tel = self.app, lease.message, self.app.telemetry
        try:
            env = app.codec.decode_envelope(msg.body)
        except SerializationError as exc:
            return self._dead(lease, "MalformedEnvelope", str(exc))
        task = app.tasks.get(env.task)
        if task is None:
            err = UnknownTask(f"no task named {env.task!r} is registered in worker {self.id}")
            return self._dead(lease, "UnknownTask", f"{err}; import its module in the worker")
        raw_args = env.args
        try:
            if env.needs:  # a workflow step: the results of the steps before go first
                raw_args = await self._with_results(task, env)
            args, kwargs = task.decode_args(raw_args)
        except (SerializationError, TaskValidationError) as exc:
            return self._dead(lease, "InvalidArguments", f"task {task.name!r}: {exc}")
        plan = self._plan(task, msg.queue, msg.priority)
        if self.admission.is_poison(lease, plan.policy):
            reason = await self.admission.poison_reason(lease, plan.policy)
            return self._dead(lease, "PoisonTask", reason)
        labels, pool = plan.labels, plan.pool
        waited = lease.claimed_at - (lease.ready_at or msg.eligible_at)
        late = is_late(msg.priority, waited)
        tel.wait_time.record(waited if waited > 0 else 0.0, labels)
        if late:
            tel.late.add(1, labels)
        if task.options.rate_limit is not None or task.options.circuit is not None:
            admitted = await self.admission.admit(lease, task, env.rate_key, kwargs)
            if admitted.retry_at is not None:
                now = self.clock.now()
                return Outcome(
                    msg.id, lease.token, OutcomeKind.DEFER, now, retry_at=admitted.retry_at
                )
            run.ticket = admitted.ticket
        middleware = app.middleware
        ctx = None
        if middleware:
            ctx = ExecutionContext(task, env, lease, args, kwargs, lease.attempt)
            for mw in middleware:
                await mw.before_run(ctx)
        tel.started.add(1, labels)
        timeout = env.timeout or plan.timeout
        # one cancel scope per run serves cancellation, lease loss, shutdown and the
        # timeout (enforced by the watchdog loop)
        run.task, run.policy, run.timeout, run.late = task, plan.policy, timeout, late
        run.deadline = time.monotonic() + timeout
        if run.deadline < self._watch_until:
            self._watch_until = -math.inf  # woken once
            self._watch_event.set()
        self.busy[pool] += 1
        error: BaseException | None = None
        result: Any = None
        outcome: Outcome | None = None
        failure: Exception | None = None  # what the circuit breaker counts
        # task logs: the capture handler finds the run through the context (which
        # anyio copies into the thread of a thread-pool task)
        captured = CURRENT_RUN.set(run) if self.capture_logs else None
        t0 = time.perf_counter()
        try:
            if self._tracing:
                with tel.run_span(task.name, msg.queue, env.trace, lease.attempt):
                    result = await self._call(task, pool, args, kwargs, raw_args)
            elif pool == "async" and task.is_async:
                result = await task.fn(*args, **kwargs)
            else:
                result = await self._call(task, pool, args, kwargs, raw_args)
            body = result if pool == "process" else app.codec.encode(result)
            now = self.clock.now()
            outcome = Outcome(
                msg.id,
                lease.token,
                OutcomeKind.SUCCEEDED,
                now,
                result=body,
                result_ttl=plan.result_ttl,
                late=late,
                # a workflow step: what follows is stored with this outcome, atomically
                then=_follow_ups(env, now, app.codec) if env.then else (),
            )
            tel.succeeded.add(1, labels)
        except SerializationError as exc:
            # an unserialisable result will not get better on retry
            error = exc
            tel.failed.add(1, labels)
            outcome = self._dead(lease, "ResultNotSerializable", f"task {task.name!r}: {exc}")
        except RateLimited as exc:
            error = exc
            now = self.clock.now()
            outcome = Outcome(
                msg.id,
                lease.token,
                OutcomeKind.DEFER,
                now,
                retry_at=now + exc.retry_after,
                late=late,
            )
        except Exception as exc:
            error = exc
            tel.failed.add(1, labels)
            outcome = self._failure(lease, task, plan.policy, exc, late)
            failure = exc
        finally:
            duration = time.perf_counter() - t0
            if captured is not None:
                CURRENT_RUN.reset(captured)
            self.busy[pool] -= 1
            # cancelled runs (timeout, lost, shutdown) are recorded without an outcome
            tel.run_time.record(
                duration, labels if outcome is None else plan.by_outcome[outcome.kind]
            )
            if plan.auto:
                self._samples.append((task.name, duration))
        if run.ticket is not None and (
            failure is not None or outcome.kind is OutcomeKind.SUCCEEDED
        ):
            await self.admission.verdict(run.ticket, failure)
        if ctx is not None:
            ctx.outcome, ctx.result, ctx.error, ctx.duration = outcome.kind, result, error, duration
            for mw in middleware:
                await mw.after_run(ctx)
        return outcome

    async def _with_results(self, task: Task[Any, Any], env: Envelope) -> Any:
        """A workflow step's arguments: the results of ``env.needs`` (one value, or a
        list with ``gather``) first, then the step's own; validated as a call."""
        backend, codec = self.app.backend, self.app.codec
        values = []
        for dep in env.needs:
            rec = await backend.get(dep)
            if rec is None or rec.state is not State.SUCCEEDED:
                raise TaskValidationError(
                    f"the result of workflow step {dep} is not available "
                    f"({'record expired' if rec is None else rec.state}); keep results "
                    "(result_ttl) for as long as the steps after them may wait"
                )
            values.append(None if rec.result is None else codec.decode(rec.result))
        call: _PartialCall = codec.decode(env.args, _PartialCall)  # type: ignore[assignment]
        value = values if env.gather else values[0]
        return msgspec.Raw(task.encode_args((value, *call.a), call.k))

    def _failure(
        self,
        lease: Lease,
        task: Task[Any, Any],
        policy: RetryPolicy,
        exc: BaseException,
        late: bool,
    ) -> Outcome:
        msg, now, tel = lease.message, self.clock.now(), self.app.telemetry
        is_retry_request = isinstance(exc, Retry)
        error = AttemptError(
            lease.attempt,
            type(exc).__qualname__,
            str(exc),
            "" if is_retry_request else "".join(traceback.format_exception(exc)),
            now,
        )
        if is_retry_request:
            retry = lease.attempt <= policy.retries
        else:
            retry = policy.should_retry(exc, lease.attempt)
        if retry:
            delay = (
                exc.delay
                if isinstance(exc, Retry) and exc.delay is not None
                else policy.delay(lease.attempt)
            )
            tel.retried.add(1, {"task": task.name, "queue": msg.queue})
            if not is_retry_request:
                log.warning(
                    "task %s (%s) attempt %d failed: %r; retry in %.1fs",
                    msg.id,
                    task.name,
                    lease.attempt,
                    exc,
                    delay,
                )
            return Outcome(
                msg.id,
                lease.token,
                OutcomeKind.RETRY,
                now,
                error=error,
                retry_at=now + delay,
                late=late,
            )
        log.error(
            "task %s (%s) failed after %d attempt(s): %r", msg.id, task.name, lease.attempt, exc
        )
        if task.options.dead_letter:
            tel.dead.add(1, {"task": task.name, "queue": msg.queue})
            return Outcome(
                msg.id,
                lease.token,
                OutcomeKind.DEAD,
                now,
                error=error,
                result_ttl=self.app.dead_ttl,
                late=late,
            )
        return Outcome(
            msg.id,
            lease.token,
            OutcomeKind.FAILED,
            now,
            error=error,
            result_ttl=self.app.result_ttl,
            late=late,
        )

    async def _call(
        self, task: Task[Any, Any], pool: Pool, args: list[Any], kwargs: dict[str, Any], raw: Any
    ) -> Any:
        if pool == "async":
            if task.is_async:
                return await task.fn(*args, **kwargs)
            return task.fn(*args, **kwargs)
        if pool == "thread":
            return await anyio.to_thread.run_sync(
                lambda: task.fn(*args, **kwargs),
                limiter=self.thread_limiter,
                abandon_on_cancel=True,
            )
        from . import _child

        # the run whose logs are captured (set around the call when capture_logs): the
        # child captures its lines and sends them back with the result
        run = CURRENT_RUN.get()
        try:
            if run is None:
                return await anyio.to_process.run_sync(
                    _child.run_in_child,
                    task.fn.__module__,
                    task.fn.__qualname__,
                    bytes(raw),
                    cancellable=True,
                    limiter=self.process_limiter,
                )
            outcome, logs = await anyio.to_process.run_sync(
                _child.run_captured,
                task.fn.__module__,
                task.fn.__qualname__,
                bytes(raw),
                run.lease.attempt,
                cancellable=True,
                limiter=self.process_limiter,
            )
        except anyio.BrokenWorkerProcess as exc:
            # anyio's own error has no message: say what happened in the task's history
            raise anyio.BrokenWorkerProcess(
                f"the process-pool child running task {task.name!r} died before returning "
                "(os._exit, a crash such as a segfault, or the OOM killer); the pool starts "
                "a new child for the next task"
            ) from exc
        if logs is not None:
            tasklogs.merge_child_logs(run, logs)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    # -- background loops -----------------------------------------------------------
    async def _settle_loop(self) -> None:
        while True:
            await self._outcome_event.wait()
            self._outcome_event = self._new_event()
            if self.carry:  # a claim loop woken by the same finished tasks may take them
                await anyio.lowlevel.checkpoint()
            await self._flush()

    async def _flush(self) -> None:
        # one settle at a time: the final flush at shutdown waits for the one in flight
        # instead of cancelling it (that would lose its outcomes)
        async with self._settle_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        failures = 0
        if self._logs:  # before the outcomes: a task's logs are there once its result is
            await self.write_logs()
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            self._settling, self._in_settle = len(batch), batch
            try:
                await self.app.backend.settle(batch)
                failures = 0
            except BackendError as exc:
                # keep the batch: a lease that lapses meanwhile ends in a re-run, never a loss
                self._outcomes[:0] = batch
                self._settling, self._in_settle = 0, []
                failures += 1
                delay = min(10.0, self.lease_seconds / RETRY_FRACTION, 0.05 * 2**failures)
                log.warning(
                    "settle of %d outcome(s) failed (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await anyio.sleep(delay)
            finally:
                self._settling, self._in_settle = 0, []
                if self._backlogged:  # the claim loop waits for this settle: look again
                    self._slot_event.set()

    def _keep_logs(self, run: _Run) -> None:
        assert run.log is not None
        self._logs.append(run.log.entry(run.lease.message.id, self.clock.now()))
        run.log = None
        if len(self._logs) > MAX_PENDING_LOGS:  # the backend has been failing for long
            del self._logs[: len(self._logs) - MAX_PENDING_LOGS]
        self._outcome_event.set()  # (a run stopped without an outcome: written anyway)

    async def write_logs(self) -> None:
        """Write the logs of the runs that finished since the last call (one call)."""
        entries, self._logs = self._logs, []
        try:
            await self.app.backend.journal_append(entries)
        except BackendError as exc:
            self._logs[:0] = entries  # kept for the next settle (bounded)
            log.warning("task logs of %d run(s) not written yet: %s", len(entries), exc)

    async def _extend_loop(self) -> None:
        renewed = True
        while True:
            # every third of the lease; after a failure (an outage) much sooner, so the
            # leases are renewed soon after the backend is back, before they lapse
            await self.clock.sleep(self.lease_seconds / (3 if renewed else RETRY_FRACTION))
            renewed = await self.extend_leases()

    async def extend_leases(self) -> bool:
        """Renew every lease this worker holds now: its running tasks' and those of
        finished tasks whose outcome waits for its settle (a slow settle must not let
        them lapse and the task run again). Act on cancellations and lost leases of the
        running ones. False if the backend could not be reached."""
        items = [(tid, run.lease.token) for tid, run in self._running.items()]
        running = len(items)
        items += [(o.task_id, o.token) for o in (*self._in_settle, *self._outcomes)]
        if not items:
            return True
        try:
            statuses = await self.app.backend.extend(items, self.lease_seconds)
        except BackendError as exc:
            log.warning("lease renewal failed: %s", exc)
            return False
        for (tid, _), status in zip(items[:running], statuses[:running], strict=True):
            run = self._running.get(tid)
            if run is None or status is ExtendStatus.OK:
                continue
            self._stop_run(run, "lost" if status is ExtendStatus.LOST else "cancel")
        return True

    async def _watchdog_loop(self) -> None:
        """Cancel runs past their timeout. One timer for all runs, far cheaper than a
        deadline per run: it sleeps until the earliest deadline of the running tasks,
        and while none runs until one starts, so an idle worker is not woken by it."""
        while True:
            now = time.monotonic()
            first = math.inf
            for run in list(self._running.values()):
                if run.stop_reason is not None:
                    continue
                if run.deadline <= now:
                    self._stop_run(run, "timeout")
                elif run.deadline < first:
                    first = run.deadline
            self._watch_event = self._new_event()
            self._watch_until = first
            with anyio.move_on_after(first - now):
                await self._watch_event.wait()

    async def _memory_loop(self) -> None:
        while True:
            await anyio.sleep(RSS_CHECK_INTERVAL)
            reason = self.recycle.over_memory()
            if reason is not None:
                self._retire(reason)
                return

    async def _maintenance_loop(self) -> None:
        while True:
            await self.clock.sleep(self.maintenance_interval)
            await self.maintain()

    async def maintain(self) -> None:
        """One round of reaping, heartbeat, shared statistics, autoscaling and the remote
        configuration."""
        backend = self.app.backend
        try:
            await backend.reap()
            await self._heartbeat()
            if self._samples:
                samples, self._samples = self._samples, []
                await backend.record_runtimes(samples)
            auto = [
                t.name for t in self.app.tasks.values() if t.options.complexity is Complexity.AUTO
            ]
            if auto:
                for name, st in (await backend.runtime_stats(auto)).items():
                    if self._classes.get(name) is not classify(st.mean):
                        self._classes[name] = classify(st.mean)
                        self._plans.clear()
            if self.clock.now() >= self._trim_due:
                self._trim_due = self.clock.now() + TRIM_INTERVAL
                await self.app.trim_journal()
            stats = await backend.stats(self.queues, finished=False)
        except BackendError as exc:
            log.warning("maintenance failed: %s", exc)
            return
        self._depth = sum(s.depth for s in stats)
        self.app.telemetry.bind_if_configured()  # an SDK installed since the start
        for s in stats:
            for p, n in s.depth_by_priority.items():
                self.app.telemetry.depth[(s.queue, f"P{p}")] = n
        self.app.telemetry.busy.update({str(k): v for k, v in self.busy.items()})
        if self.autoscaler is not None:
            import psutil  # only autoscaling workers need it

            cpu = psutil.cpu_percent(interval=None)
            new = self.autoscaler.decide(self.target, self.running, self._depth, cpu)
            if new != self.target:
                log.info(
                    "concurrency %d -> %d (depth %d, cpu %.0f%%)",
                    self.target,
                    new,
                    self._depth,
                    cpu,
                )
                self.target = new
                self._slot_event.set()
        await self._refresh_config()

    async def _refresh_config(self) -> None:
        try:
            doc = await self.app.config.refresh()
        except BackendError as exc:
            log.warning("remote configuration not read: %s", exc)
            return
        self.apply_remote(doc)

    def apply_remote(self, doc: RemoteDocument | None) -> None:
        """Apply a remote configuration document (once per document; None: there is
        none, each setting goes back to the worker's own)."""
        if self._remote_applied and doc == self._remote_doc:
            return
        self._remote_applied, self._remote_doc = True, doc
        version = 0 if doc is None else doc.version
        concurrency = None if doc is None else doc.concurrency
        if concurrency != self._remote_concurrency:
            self._remote_concurrency = concurrency
            target = self._configured_target
            if concurrency is not None:
                target = self._within_bounds(concurrency)
            if target != self.target:
                log.info(
                    "concurrency %d -> %d (remote configuration version %d)",
                    self.target,
                    target,
                    version,
                )
                self.target = target
                self._slot_event.set()
        paused = doc is not None and doc.paused
        if paused != self.paused:
            log.info(
                "%s claiming (remote configuration version %d)",
                "paused" if paused else "resumed",
                version,
            )
            self.paused = paused
            self._slot_event.set()
            if paused and self._wait_scope is not None:
                self._wait_scope.cancel()

    def _within_bounds(self, concurrency: int) -> int:
        if self.autoscaler is not None:
            low, high = self.autoscaler.minimum, self.autoscaler.maximum
        else:
            low, high = self.reserved_critical + 1, concurrency
        bounded = min(max(concurrency, low), high)
        if bounded != concurrency:
            log.warning(
                "remote concurrency %d is outside this worker's bounds %d-%d: using %d",
                concurrency,
                low,
                high,
                bounded,
            )
        return bounded

    async def _heartbeat(self) -> None:
        now = self.clock.now()
        info = WorkerInfo(
            self.id,
            socket.gethostname(),
            os.getpid(),
            tuple(self.queues),
            self.target,
            self.running,
            self._started_at,
            now,
        )
        await self.app.backend.heartbeat(info, self.maintenance_interval * 3)

    async def _cron_loop(self) -> None:
        periodics = self.app.periodics
        while True:
            now = self.clock.now()
            due = [(p.next_after(now), p) for p in periodics]
            tick = min(t for t, _ in due)
            await self.clock.sleep(tick - now)
            for t, p in due:
                if t != tick:
                    continue
                key = p.dedupe_key(t)
                try:
                    if await self.app.backend.once(key, ttl=86400.0):
                        task = self.app.tasks[p.task]
                        await self.app.enqueue_call(task, (), {}, unique_key=key)
                except BackendError as exc:
                    log.warning("cron tick %s not enqueued: %s", key, exc)
