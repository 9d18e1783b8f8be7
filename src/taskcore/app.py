"""The application object: task registry, enqueueing, and entry to workers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

import anyio
import attrs
import msgspec

from .backend import (
    Backend,
    EnqueueResult,
    Message,
    QueueSpec,
    QueueStats,
    TaskFilter,
    TaskRecord,
)
from .circuit import DEFAULT_CIRCUIT, Circuit
from .clock import Clock, SystemClock
from .complexity import Complexity, Pool
from .cron import Periodic
from .discovery import backend_from_url, redact_url
from .envelope import DEFAULT_MAX_PAYLOAD, Codec, Envelope, Step, new_task_id, new_task_ids
from .errors import ConfigurationError, TaskValidationError, UnknownTask
from .handle import TaskHandle
from .middleware import Middleware
from .priority import Priority
from .retry import RetryPolicy
from .scheduling import SchedulingPolicy
from .states import State
from .task import RateLimit, Task, TaskOptions
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .blocking import BlockingApp
    from .config import Resolved, Settings
    from .ingest import Reject
    from .tasklogs import LogLine
    from .worker import Worker

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_RESULT_TTL = 90 * 86400.0  # processing results: 90 days (spec: 30-365)
DEFAULT_DEAD_TTL = 60 * 86400.0  # error logs / dead letters: 60 days (spec: 30-180)
DEFAULT_LOG_TTL = 30 * 86400.0  # task logs: 30 days (spec: 7-90)
DEFAULT_METRICS_TTL = 365 * 86400.0  # performance metrics: 365 days (spec: 90-730)
DEFAULT_AUDIT_TTL = 730 * 86400.0  # audit trail: 730 days (spec: 365-2555)


# each data class's retention setting -> the days the specification allows
RETENTION_BOUNDS: dict[str, tuple[int, int]] = {
    "result_ttl": (30, 365),
    "dead_ttl": (30, 180),
    "log_ttl": (7, 90),
    "metrics_ttl": (90, 730),
    "audit_ttl": (365, 2555),
}


def _check_retention(name: str, value: float) -> float:
    low_days, high_days = RETENTION_BOUNDS[name]
    if not low_days * 86400 <= value <= high_days * 86400:
        raise ConfigurationError(
            f"{name}={value} s is outside the documented bounds of {low_days}-{high_days} days "
            f"({low_days * 86400}-{high_days * 86400} s)"
        )
    return value


class App:
    """A taskcore application: register tasks, enqueue them, run workers.

    Args:
        url: backend URL: ``memory://`` (default), ``redis://...``, ``postgresql://...``.
        backend: an already built backend (overrides ``url``).
        clock: time source (a FakeClock in tests).
        serializer: ``json`` (default) or ``msgpack``.
        max_payload_bytes: envelopes above this are refused at enqueue and dead-lettered
            at the worker (default 1 MiB).
        result_ttl: seconds a finished task's record and result are kept (90 days by
            default; the specification bounds it to 30-365 days).
        dead_ttl: seconds dead letters are kept (60 days; bounds 30-180 days).
        log_ttl: seconds task logs are kept (30 days; bounds 7-90 days).
        metrics_ttl: seconds the monitor's per-minute performance metrics are kept
            (365 days; bounds 90-730 days).
        audit_ttl: seconds the web's audit trail is kept (730 days; bounds 365-2555
            days).
        queues: scheduling policy per queue; unlisted queues are deadline-aware.
        circuits: circuit-breaker settings per named dependency, for tasks declared with
            ``circuit="name"``; unlisted names get ``Circuit()``'s defaults.
        middleware: hooks around enqueue and execution.

    Build one from :class:`taskcore.config.Settings` (a file, the environment) with
    :meth:`from_settings`. ``app.flags`` answers feature flags; ``app.config`` reads
    and writes the remote configuration (see :mod:`taskcore.config`).
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        serializer: Literal["json", "msgpack"] = "json",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        result_ttl: float = DEFAULT_RESULT_TTL,
        dead_ttl: float = DEFAULT_DEAD_TTL,
        log_ttl: float = DEFAULT_LOG_TTL,
        metrics_ttl: float = DEFAULT_METRICS_TTL,
        audit_ttl: float = DEFAULT_AUDIT_TTL,
        queues: Mapping[str, SchedulingPolicy] | None = None,
        circuits: Mapping[str, Circuit] | None = None,
        middleware: Sequence[Middleware] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        self.url = url
        self.clock: Clock = clock or getattr(backend, "clock", None) or SystemClock()
        self.codec = Codec(serializer, max_payload_bytes)
        self.result_ttl = _check_retention("result_ttl", result_ttl)
        self.dead_ttl = _check_retention("dead_ttl", dead_ttl)
        self.log_ttl = _check_retention("log_ttl", log_ttl)
        self.metrics_ttl = _check_retention("metrics_ttl", metrics_ttl)
        self.audit_ttl = _check_retention("audit_ttl", audit_ttl)
        self.tasks: dict[str, Task[Any, Any]] = {}
        # per task, for calls without options: (the options it was made from, the plan)
        self._plans: dict[Task[Any, Any], tuple[TaskOptions, _Plan]] = {}
        self.periodics: list[Periodic] = []
        self.subscriptions: dict[str, list[Task[Any, Any]]] = {}
        self.queue_specs: dict[str, QueueSpec] = {
            name: QueueSpec(name, policy) for name, policy in (queues or {}).items()
        }
        self.circuits: dict[str, Circuit] = {}
        for name, settings in (circuits or {}).items():
            self.circuit(name, settings)
        self.middleware = list(middleware)
        self.telemetry = telemetry or Telemetry()
        self._backend = backend
        self._opened = False
        self._open_lock: anyio.Lock | None = None
        from .config import Flags, RemoteConfig

        self.settings: Settings | None = None
        """The settings the app was built from (:meth:`from_settings`), else None."""
        self.flags = Flags()
        self.config = RemoteConfig(self, self.flags)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> App:
        """An app built from settings; its workers take the settings' ``worker``
        section and ``app.flags`` its ``flags``.

        Args:
            settings: from :func:`taskcore.config.load`.
            options: :class:`App` arguments; they win over the settings
                (``backend=``, ``clock=``, ``middleware=``, ``telemetry=``...).
        """
        app = cls(**{**settings.app_options(), **options})
        app.settings = settings
        app.flags.local = dict(settings.flags)
        return app

    def configure(self, resolved: Resolved) -> None:
        """Apply the settings a file, the environment or an argument set (not the
        defaults) over the app's own, before it is opened: what ``taskcore worker``
        does with ``--config`` and ``TASKCORE_...`` variables.

        Raises:
            ConfigurationError: the app is open already, or ``url`` is set for an app
                whose backend is built.
        """
        from .config.settings import invalid

        s = resolved.settings
        if self._opened:
            raise ConfigurationError("configure the app before it is opened")
        if resolved.set_here("url") and s.url != self.url:
            if self._backend is not None:
                raise invalid(
                    "url",
                    redact_url(s.url),
                    resolved.source("url"),
                    "the app was given a backend of its own, which a URL cannot replace",
                )
            self.url = s.url
        if resolved.set_here("serializer") or resolved.set_here("max_payload_bytes"):
            self.codec = Codec(
                s.serializer if resolved.set_here("serializer") else self.codec.format,
                s.max_payload_bytes
                if resolved.set_here("max_payload_bytes")
                else self.codec.max_payload_bytes,
            )
        if resolved.set_here("result_ttl"):
            self.result_ttl = s.result_ttl
        if resolved.set_here("dead_ttl"):
            self.dead_ttl = s.dead_ttl
        for name, policy in s.queues.items():
            if resolved.set_here(f"queues.{name}"):
                self.queue(name, policy.policy())
        for name, circuit in s.circuits.items():
            if resolved.set_here(f"circuits.{name}"):
                self.circuit(name, circuit.circuit())
        self.flags.local.update(
            {k: v for k, v in s.flags.items() if resolved.set_here(f"flags.{k}")}
        )

    def __repr__(self) -> str:
        return f"<App {redact_url(self.url)} tasks={len(self.tasks)}>"

    # -- lifecycle ------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = backend_from_url(self.url, clock=self.clock)
        return self._backend

    async def open(self) -> App:
        """Connect the backend and declare the queues (idempotent)."""
        if self._opened:
            return self
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.backend.__aenter__()
                if self.queue_specs:
                    await self.backend.declare(list(self.queue_specs.values()))
                self._opened = True
        return self

    async def aclose(self) -> None:
        if self._opened and self._backend is not None:
            self._opened = False
            await self._backend.aclose()

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- registration ---------------------------------------------------------
    def queue(self, name: str, policy: SchedulingPolicy) -> None:
        """Set the scheduling policy of a queue (before the app is opened)."""
        self.queue_specs[name] = QueueSpec(name, policy)

    def circuit(self, name: str, settings: Circuit) -> None:
        """Set the circuit-breaker settings of a named dependency (``circuit="name"``)."""
        _check_name(name, "circuit name")
        if not isinstance(settings, Circuit):
            raise ConfigurationError(
                f"circuit {name!r}: settings must be a taskcore.Circuit, not {settings!r}"
            )
        self.circuits[name] = settings

    def circuit_settings(self, name: str) -> Circuit:
        """The settings of circuit ``name`` (the defaults unless set)."""
        return self.circuits.get(name, DEFAULT_CIRCUIT)

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: Priority | int | str = Priority.MEDIUM,
        complexity: Complexity | str = Complexity.SIMPLE,
        retry: RetryPolicy | Sequence[float] | None = None,
        retry_on: type[BaseException] | Sequence[type[BaseException]] | None = None,
        give_up_on: type[BaseException] | Sequence[type[BaseException]] | None = None,
        timeout: float | None = None,
        unique: bool = False,
        result_ttl: float | None = None,
        pool: Pool | None = None,
        rate_limit: str | RateLimit | None = None,
        rate_key: str | None = None,
        circuit: str | Circuit | None = None,
        dead_letter: bool = True,
        on: str | Sequence[str] | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a function (``async def`` or plain ``def``) as a task.

        Args:
            name: defaults to ``module.qualname``.
            queue: queue name (default ``"default"``).
            priority: P0-P4 (default MEDIUM).
            complexity: ``simple`` | ``moderate`` | ``complex`` | ``auto``: picks the default
                retry policy, timeout and pool.
            retry: a :class:`RetryPolicy` overriding the complexity's default, or a
                list of delays in seconds (``[1, 5, 30]``: three retries).
            retry_on / give_up_on: exception filters for retries.
            timeout: seconds per attempt (hard in the process pool).
            unique: dedupe on the arguments (a duplicate returns the existing handle).
            result_ttl: seconds to keep the result.
            pool: force ``async`` / ``thread`` / ``process``.
            rate_limit: ``"10/s"`` token bucket, cluster-wide through the backend.
            rate_key: name of an argument whose value picks the bucket: one
                ``rate_limit`` bucket per value (per customer, per API key...).
            circuit: a circuit breaker: a dependency name shared by several tasks
                (settings from ``App(circuits=...)``), or a :class:`Circuit` of the
                task's own.
            dead_letter: exhausted tasks go to the dead-letter queue (else end ``failed``).
            on: event name(s) the task subscribes to: :meth:`emit` of one enqueues it
                with the event's arguments.
        """
        if fn is not None:
            return self._register(fn, {})

        def decorator(f: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(f, options)

        return decorator

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        name = options.pop("name", None) or f"{fn.__module__}.{fn.__qualname__}"
        retry_on = options.pop("retry_on", None)
        give_up_on = options.pop("give_up_on", None)
        try:
            complexity = Complexity(options.pop("complexity", Complexity.SIMPLE))
        except ValueError:
            raise ConfigurationError(
                f"task {name!r}: complexity must be simple, moderate, complex or auto"
            ) from None
        try:
            priority = Priority.parse(options.pop("priority", Priority.MEDIUM))
        except ValueError as exc:
            raise ConfigurationError(f"task {name!r}: {exc}") from None
        retry = _retry_policy(name, options.pop("retry", None))
        if retry_on is not None or give_up_on is not None:
            retry = (retry or complexity.retry_policy).with_filters(retry_on, give_up_on)
        rate = options.pop("rate_limit", None)
        circuit = options.pop("circuit", None)
        on = options.pop("on", None)
        events = [on] if isinstance(on, str) else list(on or ())
        for event in events:
            _check_name(event, "event name")
        if isinstance(circuit, Circuit):
            known = self.circuits.get(name)
            if known is not None and known != circuit:
                raise ConfigurationError(
                    f"task {name!r}: a circuit named {name!r} already has settings {known}"
                )
            self.circuit(name, circuit)
            circuit = name
        elif circuit is not None:
            if not isinstance(circuit, str):
                raise ConfigurationError(
                    f"task {name!r}: circuit={circuit!r} must be a dependency name or a "
                    "taskcore.Circuit"
                )
            _check_name(circuit, "circuit name")
        result_ttl = options.get("result_ttl")
        if result_ttl is not None and result_ttl <= 0:
            raise ConfigurationError(f"task {name!r}: result_ttl must be > 0 seconds")
        if options.get("timeout") is not None and options["timeout"] <= 0:
            raise ConfigurationError(f"task {name!r}: timeout must be > 0 seconds")
        _check_name(name, "task name")
        _check_name(options.get("queue", "default"), "queue name")
        if name in self.tasks:
            raise ConfigurationError(
                f"a task named {name!r} is already registered; pass name=... to tell them apart"
            )
        try:
            opts = TaskOptions(
                name=name,
                priority=priority,
                complexity=complexity,
                retry=retry,
                rate_limit=None if rate is None else RateLimit.parse(rate),
                circuit=circuit,
                **options,
            )
        except TypeError as exc:
            raise ConfigurationError(f"task {name!r}: {exc}") from None
        task: Task[Any, Any] = Task(self, fn, opts)
        task.check_rate_key()
        self.tasks[name] = task
        for event in dict.fromkeys(events):
            self.subscriptions.setdefault(event, []).append(task)
        return task

    def periodic(
        self,
        cron: str,
        *,
        tz: str = "UTC",
        name: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Register a task that runs on a cron schedule (croniter syntax) in time zone ``tz``.

        With several workers, each tick is enqueued once (dedupe key per tick).
        """

        def decorator(fn: Callable[..., Any]) -> Task[Any, Any]:
            task = self._register(fn, {"name": name, **options})
            self.periodics.append(Periodic(task.name, cron, tz))
            return task

        return decorator

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(
                f"no task named {name!r} is registered; import the module that defines it"
            ) from None

    # -- enqueueing -----------------------------------------------------------
    def build_message(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        **options: Any,
    ) -> tuple[Envelope, Message]:
        """Validate a call and build its envelope and message (no I/O). ``options``:
        ``delay``, ``eta``, ``priority``, ``deadline``, ``queue``, ``unique_key``,
        ``fairness_key``, ``rate_key``, ``task_id``, ``headers``."""
        args_body = task.encode_args(args, kwargs)
        plan = self._plan_of(task, options)
        return plan.build(args_body, self.clock.now(), plan.task_id)

    def _plan_of(self, task: Task[Any, Any], options: Mapping[str, Any]) -> _Plan:
        """``_plan(task, **options)``; a task's plan without options is made once (again
        if its options were replaced)."""
        if options:
            return self._plan(task, **options)
        made = self._plans.get(task)
        if made is None or made[0] is not task.options:
            made = self._plans[task] = (task.options, self._plan(task))
        return made[1]

    def _plan(
        self,
        task: Task[Any, Any],
        *,
        delay: float | None = None,
        eta: datetime | float | None = None,
        priority: Priority | int | str | None = None,
        deadline: datetime | float | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        fairness_key: str | None = None,
        rate_key: str | None = None,
        task_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Plan:
        """Validate the options of a call (the same for every call of an enqueue_many)."""
        opts = task.options
        if delay is not None and eta is not None:
            raise TaskValidationError("give either delay or eta, not both")
        if delay is not None and delay < 0:
            raise TaskValidationError(f"delay={delay!r}: must be >= 0 seconds")
        eta_s = None
        if eta is not None:
            eta_s = eta.timestamp() if isinstance(eta, datetime) else float(eta)
        dl = deadline.timestamp() if isinstance(deadline, datetime) else deadline
        try:
            prio = opts.priority if priority is None else Priority.parse(priority)
        except ValueError as exc:
            raise TaskValidationError(str(exc)) from None
        if rate_key is not None:
            if opts.rate_limit is None:
                raise TaskValidationError(
                    f"task {task.name!r} has no rate_limit, so rate_key={rate_key!r} would "
                    "limit nothing; declare the task with rate_limit='<count>/s'"
                )
            _check_key(rate_key, "rate_key")
        q = queue or opts.queue
        if queue is not None:
            _check_name(q, "queue name", TaskValidationError)
        if task_id is not None:
            _check_name(task_id, "task_id", TaskValidationError)
        for key, what in ((unique_key, "unique_key"), (fairness_key, "fairness_key")):
            if key is not None:
                _check_key(key, what)
        return _Plan(
            task=task.name,
            queue=q,
            priority=int(prio),
            delay=delay or 0.0,
            eta=eta_s,
            deadline=dl,
            timeout=opts.timeout,
            result_ttl=opts.result_ttl,
            unique_key=unique_key,
            hash_unique=unique_key is None and opts.unique,
            fairness_key=fairness_key,
            rate_key=rate_key,
            task_id=task_id,
            headers=dict(headers or {}),
        )

    async def enqueue_call(
        self, task: Task[Any, R], args: tuple[Any, ...], kwargs: Mapping[str, Any], **options: Any
    ) -> TaskHandle[R]:
        args_body = task.encode_args(args, kwargs)
        plan = self._plan_of(task, options)
        trace: dict[str, str] = {}  # the caller's context, or our PRODUCER span's
        if self.telemetry.tracing:
            with self.telemetry.enqueue_span(task.name, plan.queue, trace):
                res, msg = await self._enqueue_one(task, plan, args_body, trace)
        else:
            self.telemetry.inject(trace)
            res, msg = await self._enqueue_one(task, plan, args_body, trace)
        self.telemetry.enqueued.add(1, plan.metric_attributes)
        for mw in self.middleware:
            await mw.after_enqueue(task, msg, res.created)
        return TaskHandle(self, res.id, created=res.created, return_type=task.return_type)

    async def _enqueue_one(
        self, task: Task[Any, Any], plan: _Plan, args_body: bytes, trace: dict[str, str]
    ) -> tuple[EnqueueResult, Message]:
        middleware, encode = self.middleware, self.codec.encode_envelope
        # without middleware the body is encoded as the message is built (no copy)
        env, msg = plan.build(
            args_body, self.clock.now(), plan.task_id, None if middleware else encode, trace
        )
        if middleware:
            for mw in middleware:
                await mw.before_enqueue(task, env)
            msg = _with_body(msg, encode(env))
        if not self._opened:
            await self.open()
        [res] = await self.backend.enqueue([msg])
        return res, msg

    async def enqueue_many(
        self,
        task: Task[Any, R],
        calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]] | Sequence[Any]],
        **options: Any,
    ) -> list[TaskHandle[R]]:
        """Bulk enqueue: validate every call, then store them in one backend call.

        ``calls`` holds ``(args, kwargs)`` pairs or plain argument tuples. If any call is
        invalid, nothing is enqueued.
        """
        bodies = []  # every call validated before anything is built or stored
        for call in calls:
            if (
                isinstance(call, tuple)
                and len(call) == 2
                and isinstance(call[1], Mapping)
                and isinstance(call[0], (list, tuple))
            ):
                bodies.append(task.encode_args(tuple(call[0]), call[1]))
            else:
                bodies.append(task.encode_args(tuple(call), {}))
        if not bodies:
            return []
        plan = self._plan_of(task, options)
        if not self._opened:
            await self.open()
        # one PRODUCER span for the batch (with tracing), or the caller's context: every
        # envelope carries it
        carrier: dict[str, str] = {}
        if self.telemetry.tracing:
            with self.telemetry.enqueue_span(task.name, plan.queue, carrier):
                messages, results = await self._enqueue_batch(task, plan, bodies, carrier)
        else:
            self.telemetry.inject(carrier)
            messages, results = await self._enqueue_batch(task, plan, bodies, carrier)
        self.telemetry.enqueued.add(len(messages), plan.metric_attributes)
        return [
            TaskHandle(self, r.id, created=r.created, return_type=task.return_type) for r in results
        ]

    async def _enqueue_batch(
        self, task: Task[Any, Any], plan: _Plan, bodies: list[bytes], trace: dict[str, str]
    ) -> tuple[list[Message], list[EnqueueResult]]:
        """Build and store one batch; middleware sees every call, as with ``enqueue``
        (a ``before_enqueue`` that raises refuses the whole batch: nothing is stored)."""
        ids = [plan.task_id] * len(bodies) if plan.task_id else new_task_ids(len(bodies))
        clock, encode, middleware = self.clock, self.codec.encode_envelope, self.middleware
        if not middleware:  # each body encoded as it is built (no copy of each message)
            messages = [
                plan.build(body, clock.now(), tid, encode, trace)[1]
                for body, tid in zip(bodies, ids, strict=True)
            ]
            return messages, await self.backend.enqueue(messages)
        built = [
            plan.build(body, clock.now(), tid, None, trace)
            for body, tid in zip(bodies, ids, strict=True)
        ]
        for env, _ in built:
            for mw in middleware:
                await mw.before_enqueue(task, env)
        messages = [_with_body(msg, encode(env)) for env, msg in built]
        results = await self.backend.enqueue(messages)
        for msg, res in zip(messages, results, strict=True):
            for mw in middleware:
                await mw.after_enqueue(task, msg, res.created)
        return messages, results

    async def emit(self, event: str, *args: Any, **kwargs: Any) -> list[TaskHandle[Any]]:
        """Enqueue every task subscribed to ``event`` (``@app.task(on=event)``) with
        these arguments, in one backend call; returns their handles in subscription
        order (none if nothing subscribes).

        Raises:
            TaskValidationError: the arguments do not fit a subscriber; nothing is
                enqueued.
        """
        tasks = self.subscriptions.get(event, [])
        built = [(task, *self.build_message(task, args, kwargs)) for task in tasks]
        results = await self._enqueue_built(built)
        return [
            TaskHandle(self, r.id, created=r.created, return_type=task.return_type)
            for task, r in zip(tasks, results, strict=True)
        ]

    async def enqueue_built(
        self, built: Sequence[tuple[Task[Any, Any], Envelope, Message]]
    ) -> list[EnqueueResult]:
        """Store calls made by :meth:`build_message` (of any tasks, with any options) in
        one backend call, with middleware and telemetry as for ``enqueue``: what
        ingestion and the web API's bulk enqueue use. Returns one result per call
        (``created`` False: a unique key matched a waiting task, whose id is given)."""
        return await self._enqueue_built(built)

    async def enqueue_steps(self, steps: Sequence[Step]) -> list[EnqueueResult]:
        """Enqueue the first steps of a workflow (see :mod:`taskcore.workflow`)."""
        from .workflow import step_message

        now = self.clock.now()
        built = []
        for step in steps:
            env, msg = step_message(step, now, self.codec)
            built.append((self.get_task(step.task), env, msgspec.structs.replace(msg, body=b"")))
        return await self._enqueue_built(built)

    async def _enqueue_built(
        self, built: Sequence[tuple[Task[Any, Any], Envelope, Message]]
    ) -> list[EnqueueResult]:
        """Store calls of different tasks in one backend call, with middleware and
        telemetry as for :meth:`enqueue_call` (one trace context for the batch)."""
        if not built:
            return []
        if not self._opened:
            await self.open()
        carrier: dict[str, str] = {}
        if self.telemetry.tracing:
            with self.telemetry.enqueue_span(built[0][0].name, built[0][2].queue, carrier):
                messages, results = await self._store_built(built, carrier)
        else:
            self.telemetry.inject(carrier)
            messages, results = await self._store_built(built, carrier)
        for (task, _, _), msg, res in zip(built, messages, results, strict=True):
            self.telemetry.enqueued.add(
                1, {"task": task.name, "queue": msg.queue, "priority": f"P{msg.priority}"}
            )
            for mw in self.middleware:
                await mw.after_enqueue(task, msg, res.created)
        return results

    async def _store_built(
        self, built: Sequence[tuple[Task[Any, Any], Envelope, Message]], trace: dict[str, str]
    ) -> tuple[list[Message], list[EnqueueResult]]:
        messages = []
        for task, env, msg in built:
            env.trace.update(trace)
            for mw in self.middleware:
                await mw.before_enqueue(task, env)
            messages.append(_with_body(msg, self.codec.encode_envelope(env)))
        return messages, await self.backend.enqueue(messages)

    def handle(self, task_id: str) -> TaskHandle[Any]:
        """A handle on an existing task by id."""
        return TaskHandle(self, task_id)

    # -- admin ----------------------------------------------------------------
    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        await self.open()
        return await self.backend.stats(queues)

    async def list_tasks(self, **filter: Any) -> list[TaskRecord]:
        await self.open()
        return await self.backend.list_tasks(TaskFilter(**filter))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[TaskRecord]:
        return await self.list_tasks(queue=queue, state=State.DEAD, limit=limit)

    async def retry_dead(self, task_ids: Sequence[str]) -> list[bool]:
        await self.open()
        return await self.backend.retry(task_ids)

    async def purge(self, queue: str, states: Sequence[State] = (State.DEAD,)) -> int:
        await self.open()
        return await self.backend.purge(queue, states)

    async def cancel(self, task_ids: Sequence[str]) -> list[bool]:
        await self.open()
        return await self.backend.cancel(task_ids)

    async def pause(self, queue: str) -> None:
        await self.open()
        await self.backend.pause(queue)

    # -- journal: task logs, metrics, audit trail -------------------------------
    @property
    def journal_retention(self) -> dict[str, float]:
        """Seconds each journal stream keeps its records: ``logs`` (task logs),
        ``metrics`` (the monitor's per-minute points), ``audit`` (the web's audit trail),
        ``rejects`` (records ingestion refused: error records, kept as dead letters)."""
        return {
            "logs": self.log_ttl,
            "metrics": self.metrics_ttl,
            "audit": self.audit_ttl,
            "rejects": self.dead_ttl,
        }

    async def trim_journal(self) -> int:
        """Remove the journal records past their stream's retention (workers call it
        from their maintenance); returns how many were removed."""
        await self.open()
        now = self.clock.now()
        return await self.backend.journal_trim(
            {stream: now - ttl for stream, ttl in self.journal_retention.items()}
        )

    async def task_logs(self, task_id: str, *, runs: int = 100) -> list[LogLine]:
        """What a task logged through :mod:`logging` while it ran (every attempt, oldest
        line first), as captured by the worker (see :mod:`taskcore.tasklogs`); the
        last ``runs`` runs (process-pool runs included, unless their child was killed).
        Empty if it logged nothing or its logs are past ``log_ttl``."""
        from .tasklogs import LOGS_STREAM, decode_runs

        await self.open()
        entries = await self.backend.journal_read(
            LOGS_STREAM, key=task_id, limit=runs, newest_first=True
        )
        return decode_runs(entries[::-1])

    async def resume(self, queue: str) -> None:
        await self.open()
        await self.backend.resume(queue)

    async def rejects(
        self,
        run: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Reject]:
        """The records ingestion refused (:mod:`taskcore.ingest`), oldest first: the
        latest ``limit`` with ``since <= at < until``, only those of ingestion ``run``
        (:attr:`~taskcore.ingest.IngestReport.run`) if given. Kept ``dead_ttl``."""
        from .ingest import rejects

        await self.open()
        return await rejects(self.backend, run=run, since=since, until=until, limit=limit)

    # -- workers and facades --------------------------------------------------
    def worker(self, **options: Any) -> Worker:
        """A :class:`~taskcore.worker.Worker` for this app (see its options); an app
        built from settings gives their ``worker`` section, under ``options``."""
        from .worker import Worker

        if self.settings is not None:
            options = {**self.settings.worker.options(), **options}
        return Worker(self, **options)

    def blocking(self) -> BlockingApp:
        """A blocking facade for sync code: ``with app.blocking() as sync_app: ...``."""
        from .blocking import BlockingApp

        return BlockingApp(self)


@attrs.frozen
class _Plan:
    """The validated options of a call; :meth:`build` makes its envelope and message."""

    task: str
    queue: str
    priority: int
    delay: float
    eta: float | None
    deadline: float | None
    timeout: float | None
    result_ttl: float | None
    unique_key: str | None
    hash_unique: bool  # the task is unique: the key is a hash of the arguments
    fairness_key: str | None
    rate_key: str | None
    task_id: str | None
    headers: dict[str, str]
    # the enqueued counter's attributes (the OpenTelemetry API does not change them)
    metric_attributes: dict[str, str] = attrs.field(init=False, eq=False, repr=False)

    @metric_attributes.default
    def _metric_attributes(self) -> dict[str, str]:
        return {"task": self.task, "queue": self.queue, "priority": f"P{self.priority}"}

    def build(
        self,
        args_body: bytes,
        now: float,
        task_id: str | None,
        encode: Callable[[Envelope], bytes] | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> tuple[Envelope, Message]:
        """The envelope and message of a call; the message's body is ``encode(envelope)``
        (empty without ``encode``: the caller encodes it later); ``trace``: the trace
        context the envelope carries (else the caller injects it later)."""
        unique_key = self.unique_key
        if self.hash_unique:
            import hashlib  # not at start-up: hashlib loads OpenSSL's digests (~3 MB)

            unique_key = hashlib.blake2b(args_body, digest_size=16).hexdigest()
        tid = task_id or new_task_id()
        env = Envelope(
            id=tid,
            task=self.task,
            args=_raw(args_body),
            queue=self.queue,
            priority=self.priority,
            enqueued_at=now,
            deadline=self.deadline,
            timeout=self.timeout,
            result_ttl=self.result_ttl,
            trace=dict(trace) if trace else {},
            headers=dict(self.headers),
            rate_key=self.rate_key,
        )
        msg = Message(
            id=tid,
            task=self.task,
            queue=self.queue,
            priority=self.priority,
            enqueued_at=now,
            eligible_at=now + self.delay if self.eta is None else self.eta,
            body=b"" if encode is None else encode(env),
            deadline=self.deadline,
            unique_key=unique_key,
            fairness_key=self.fairness_key,
            result_ttl=self.result_ttl,
        )
        return env, msg


def _raw(body: bytes) -> Any:
    return msgspec.Raw(body)


def _with_body(msg: Message, body: bytes) -> Message:
    return msgspec.structs.replace(msg, body=body)


def _retry_policy(task: str, value: object) -> RetryPolicy | None:
    """A task's ``retry`` option: a policy, or a list of delays (seconds) to retry after."""
    if value is None or isinstance(value, RetryPolicy):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        try:
            return RetryPolicy.explicit([float(d) for d in value])
        except (TypeError, ValueError, ConfigurationError) as exc:
            raise ConfigurationError(
                f"task {task!r}: retry={value!r}: {exc}; give delays in seconds, "
                "e.g. retry=[1, 5, 30]"
            ) from None
    raise ConfigurationError(
        f"task {task!r}: retry={value!r} is not a retry policy; pass a RetryPolicy "
        "(e.g. RetryPolicy.fixed(3, 1.0)) or a list of delays in seconds, e.g. retry=[1, 5, 30]"
    )


def _check_key(value: str, what: str) -> None:
    """A key given at enqueue: any text, but not empty and without NUL (PostgreSQL's
    text cannot hold one)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise TaskValidationError(
            f"invalid {what} {value!r}: give a non-empty string without NUL characters"
        )


def _check_name(value: str, what: str, error: type[Exception] = ConfigurationError) -> None:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 200
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise error(f"invalid {what} {value!r}: use 1-200 printable characters without whitespace")
