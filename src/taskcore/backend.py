"""The backend seam: what a backend implements, and the values that cross it.

A backend stores and moves tasks; the core owns policy (retries, scheduling formulas,
state rules, statistics, telemetry). Every method is batch-shaped and async. A backend
is an async context manager; it reads time from the :class:`~taskcore.clock.Clock`
given to its constructor, so the conformance suite can drive it with a fake clock.

Backends are found by URL scheme through the entry-point group ``taskcore.backends``;
the entry point names a class constructed as ``cls.from_url(url, clock=clock)``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs
import msgspec

from .scheduling import DEFAULT_POLICY, SchedulingPolicy
from .states import State

__all__ = [
    "AttemptError",
    "Backend",
    "EnqueueResult",
    "ExtendStatus",
    "FollowUp",
    "JournalEntry",
    "Lease",
    "Message",
    "Outcome",
    "OutcomeKind",
    "QueueSpec",
    "QueueStats",
    "RuntimeStats",
    "TaskFilter",
    "TaskRecord",
    "WorkerInfo",
]


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """A task as a backend stores it: scheduling metadata plus the opaque body.

    ``body`` is the encoded :class:`~taskcore.envelope.Envelope`; backends never decode it.
    Times are epoch seconds. ``eligible_at`` later than now makes the task *scheduled*.
    Encoded, it leaves out the optional fields that are None (smaller records; a
    decoder fills them in, so both forms decode the same).
    """

    id: str
    task: str
    queue: str
    priority: int
    enqueued_at: float
    eligible_at: float
    body: bytes
    deadline: float | None = None
    unique_key: str | None = None
    fairness_key: str | None = None
    result_ttl: float | None = None


@attrs.frozen
class QueueSpec:
    """A queue's settings, shared through the backend."""

    name: str
    policy: SchedulingPolicy = DEFAULT_POLICY


class EnqueueResult(msgspec.Struct, frozen=True):
    """``created`` is False when a unique key matched an existing task, whose id is given.

    (A Struct, not an attrs class: one per enqueued task, and a Struct is built in a
    fraction of the time.)"""

    id: str
    created: bool
    state: State


class Lease(msgspec.Struct, frozen=True):
    """A claimed task. ``token`` fences this claim: a settle or extend carrying an
    older token than the task's current one is refused."""

    message: Message
    token: int
    attempt: int
    worker: str
    expires_at: float
    claimed_at: float
    ready_at: float | None = None
    """When the task last became ready (enqueue, promotion, retry); wait time and
    lateness are measured from it. ``None`` means ``message.eligible_at``."""


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"  # -> retrying, eligible at retry_at
    DEFER = "defer"  # -> retrying without spending an attempt (rate limit, open circuit)
    FAILED = "failed"  # terminal failure, not dead-lettered
    DEAD = "dead"  # -> dead-letter queue
    CANCELLED = "cancelled"
    RELEASED = "released"  # handed back to the queue without spending an attempt


@attrs.frozen
class AttemptError:
    """One failed attempt, kept in the task's history."""

    attempt: int
    type: str
    message: str
    traceback: str
    at: float


class FollowUp(msgspec.Struct, frozen=True):
    """A task that a successful outcome releases (the next step of a workflow).

    The backend stores it in the same atomic step as the outcome it rides on, and
    only when that outcome is accepted and ``succeeded``: a worker that dies between
    the two cannot lose it, and a refused (stale) outcome releases nothing.

    ``after`` 1: ``message`` is enqueued (as :meth:`Backend.enqueue` would: an id
    that exists already is not stored again). ``after`` n > 1 is a join: the backend
    notes the outcome's task as one parent of ``message.id``, and enqueues the message
    when ``n`` distinct parents have done so (a chord's callback: exactly once, however
    concurrently the parents settle).
    """

    message: Message
    after: int = 1


class Outcome(msgspec.Struct, frozen=True):
    """What became of one run; ``token`` must match the task's current lease.

    ``then``: follow-up tasks to release with an accepted ``succeeded`` outcome (see
    :class:`FollowUp`); empty for every task that is not a workflow step."""

    task_id: str
    token: int
    kind: OutcomeKind
    at: float
    result: bytes | None = None
    error: AttemptError | None = None
    retry_at: float | None = None
    result_ttl: float | None = None
    late: bool = False
    then: tuple[FollowUp, ...] = ()


class ExtendStatus(enum.StrEnum):
    OK = "ok"
    LOST = "lost"  # the lease is gone (expired and re-claimed, or settled): stop, don't settle
    CANCEL = "cancel"  # cancellation was requested: stop and settle as cancelled


@attrs.frozen
class TaskRecord:
    """A task as admin and result calls see it."""

    id: str
    task: str
    queue: str
    priority: int
    state: State
    attempt: int
    enqueued_at: float
    eligible_at: float
    updated_at: float
    body: bytes
    deadline: float | None = None
    unique_key: str | None = None
    fairness_key: str | None = None
    worker: str | None = None
    result: bytes | None = None
    errors: tuple[AttemptError, ...] = ()
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None


@attrs.frozen
class TaskFilter:
    queue: str | None = None
    state: State | None = None
    task: str | None = None
    text: str | None = None  # substring of id, unique key or last error
    limit: int = 100
    offset: int = 0


@attrs.frozen
class QueueStats:
    queue: str
    paused: bool
    states: Mapping[State, int]
    depth_by_priority: Mapping[int, int]
    late_by_priority: Mapping[int, int]
    policy: SchedulingPolicy = DEFAULT_POLICY

    @property
    def depth(self) -> int:
        return sum(self.depth_by_priority.values())

    @property
    def late(self) -> int:
        return sum(self.late_by_priority.values())


@attrs.frozen
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    busy: int
    started_at: float
    heartbeat_at: float


class JournalEntry(msgspec.Struct, frozen=True):
    """One record of an append-only journal (:meth:`Backend.journal_append`).

    ``stream`` names the journal (``audit``, ``metrics``, ``logs``: one per data class,
    each with its own retention); ``at`` is epoch seconds from the writer's clock;
    ``payload`` is opaque to the backend (small: a few KiB); ``key`` optionally ties
    the record to a subject (a task id) so that :meth:`Backend.journal_read` can find
    a subject's records without scanning the stream.
    """

    stream: str
    at: float
    payload: bytes
    key: str | None = None


@attrs.frozen
class RuntimeStats:
    count: int
    mean: float


@runtime_checkable
class Backend(Protocol):
    """Everything a backend implements: broker, results, admin and coordination.

    Optional attribute ``wait_claims`` (default False): True when, after a claim that
    came back with fewer tasks than it asked for, :meth:`wait` claims in the round
    trip that blocks, so that the worker's next claim comes from the wait; the worker
    then waits at once instead of sending a claim that would come back empty.
    """

    # -- lifecycle ------------------------------------------------------------
    async def __aenter__(self) -> Backend: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def aclose(self) -> None: ...

    # -- broker ---------------------------------------------------------------
    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        """Store queue settings (policy); undeclared queues use the default policy."""

    async def enqueue(self, messages: Sequence[Message]) -> list[EnqueueResult]:
        """Store tasks, atomically per task. A task whose ``unique_key`` matches a
        non-terminal task of the same queue is not stored; its result names the
        existing task."""

    async def claim(
        self,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        worker: str,
        max_priority: int = 4,
        settle: Sequence[Outcome] = (),
    ) -> list[Lease]:
        """Atomically lease up to ``limit`` ready tasks in policy order, after promoting
        due scheduled/retrying tasks. Skips paused queues and tasks whose priority
        number exceeds ``max_priority``.

        ``settle``: outcomes recorded first, exactly as :meth:`settle` records them
        (refusals are not reported), in the same round trip where the backend can: a
        worker hands in what its slots finished with its next claim. If the call
        raises, the outcomes may or may not be recorded; settling them again is safe
        (a recorded one is refused as stale)."""

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record outcomes; one whose token is stale, or whose transition is illegal,
        is refused (False). An accepted ``succeeded`` outcome's follow-ups
        (``Outcome.then``) are stored atomically with it (:class:`FollowUp`); when
        ``settle`` returns, they are visible (enqueued, or counted in their join)."""

    async def extend(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float
    ) -> list[ExtendStatus]:
        """Push back the expiry of the given ``(task_id, token)`` leases."""

    async def reap(self) -> list[str]:
        """Return tasks whose lease expired to the queue (a new token fences the old
        holder out) and expire finished records past their TTL. Returns requeued ids."""

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until work may be ready in ``queues`` or ``timeout`` seconds pass."""

    # -- results --------------------------------------------------------------
    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def wait_done(self, task_id: str, timeout: float) -> TaskRecord | None:
        """Block until the task is terminal (or timeout); returns the latest record."""

    # -- admin ----------------------------------------------------------------
    async def stats(
        self, queues: Sequence[str] | None = None, *, finished: bool = True
    ) -> list[QueueStats]:
        """Counts per queue. ``finished=False``: the caller needs only the waiting and
        running counts and the depth (a worker's autoscaler), so a backend may skip
        counting finished tasks, which it then reports as 0."""

    async def list_tasks(self, filter: TaskFilter) -> list[TaskRecord]: ...
    async def cancel(self, task_ids: Sequence[str]) -> list[bool]:
        """Cancel waiting tasks at once; flag running ones (their worker learns on its
        next extend). False for unknown or terminal tasks."""

    async def retry(self, task_ids: Sequence[str]) -> list[bool]:
        """Re-queue dead or failed tasks (attempt history kept)."""

    async def purge(self, queue: str, states: Sequence[State]) -> int: ...
    async def pause(self, queue: str) -> None: ...
    async def resume(self, queue: str) -> None: ...

    # -- coordination ---------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None: ...
    async def remove_worker(self, worker_id: str) -> None: ...
    async def workers(self) -> list[WorkerInfo]: ...
    async def take_tokens(self, bucket: str, rate: float, capacity: float, n: float = 1) -> float:
        """Token bucket: take ``n`` tokens; returns 0 if granted, else seconds to wait.

        A bucket is always taken with the same ``rate`` and ``capacity``. Once it has
        refilled it answers like an absent one, so a backend may forget it then (and
        should: per-key buckets would otherwise pile up)."""

    async def once(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` (cron-tick dedupe)."""

    async def kv_get(self, key: str) -> bytes | None: ...
    async def kv_set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...
    async def kv_replace(
        self, key: str, old: bytes | None, new: bytes, ttl: float | None = None
    ) -> bool:
        """Compare-and-set: store ``new`` under ``key`` only if the value stored now is
        ``old`` (``None``: only if none is; an expired value counts as none, as for
        :meth:`kv_get`), atomically with every other write of the key. True if stored.

        The expiry is set from ``ttl`` as :meth:`kv_set` sets it (None: never expires);
        the replaced value's expiry is not kept. A call that raises may or may not have
        stored ``new``: read the key to know."""

    async def record_runtimes(self, samples: Sequence[tuple[str, float]]) -> None:
        """Add run-time samples (task name, seconds) to the shared statistics."""

    async def runtime_stats(self, tasks: Sequence[str]) -> dict[str, RuntimeStats]: ...

    # -- journal --------------------------------------------------------------
    async def journal_append(self, entries: Sequence[JournalEntry]) -> None:
        """Store records, each in its entry's stream (several streams in one call).

        Not deduplicated: appending the same entry twice stores it twice."""

    async def journal_read(
        self,
        stream: str,
        *,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[JournalEntry]:
        """Up to ``limit`` records of ``stream`` with ``since <= at < until`` (either
        bound may be None), only those of ``key`` if given, ordered by ``at`` (records
        with the same ``at`` in the order they were appended), newest first unless
        ``newest_first`` is False. Records removed by :meth:`journal_trim` are never
        returned."""

    async def journal_trim(self, before: Mapping[str, float]) -> int:
        """Retention: remove the records of each named stream whose ``at`` is earlier
        than the time given for it (a record at exactly that time stays). Returns how
        many records were removed. The core calls it from maintenance with one cutoff
        per data class (``App.trim_journal``)."""
