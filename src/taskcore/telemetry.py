"""OpenTelemetry metrics and traces through opentelemetry-api (no-op without an SDK).

Attributes are low-cardinality: task, queue, priority, complexity, outcome — never
the task id. Trace context travels in the envelope's ``trace`` field.

The instruments are made on first use (the first enqueue or run, or a worker's start or
maintenance once OpenTelemetry is set up), so an idle worker of an app that never set up
OpenTelemetry does not import it. Instruments made later behave the same: the API's
global providers are proxies that follow an SDK installed at any time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["Telemetry"]

# (attribute, kind, name, unit, description)
_INSTRUMENTS = (
    ("enqueued", "counter", "taskcore.tasks.enqueued", "{task}", "Tasks enqueued"),
    ("started", "counter", "taskcore.tasks.started", "{task}", "Task runs started"),
    ("succeeded", "counter", "taskcore.tasks.succeeded", "{task}", "Runs that succeeded"),
    ("failed", "counter", "taskcore.tasks.failed", "{task}", "Runs that raised"),
    ("retried", "counter", "taskcore.tasks.retried", "{task}", "Retries scheduled"),
    ("dead", "counter", "taskcore.tasks.dead_lettered", "{task}", "Tasks dead-lettered"),
    ("late", "counter", "taskcore.tasks.late", "{task}", "Runs that started past their SLA"),
    ("run_time", "histogram", "taskcore.task.run_time", "s", "Run time per attempt"),
    ("wait_time", "histogram", "taskcore.task.wait_time", "s", "Ready-to-start wait"),
    (
        "circuit_changes",
        "counter",
        "taskcore.circuit.transitions",
        "{transition}",
        "Circuit breakers opened (state=open) or closed (state=closed)",
    ),
)
_LAZY = frozenset({"tracer", *(spec[0] for spec in _INSTRUMENTS)})
# Set, these make the API build an SDK provider from the environment on first use.
_PROVIDER_ENV = ("OTEL_PYTHON_METER_PROVIDER", "OTEL_PYTHON_TRACER_PROVIDER")
_UNKNOWN = object()


def _configured() -> bool:
    """Whether OpenTelemetry may be set up in this process: a provider is named in the
    environment, the tracing API is imported, or a global meter provider is installed
    (redis-py imports the metrics API by itself; until an SDK is installed, the API's
    provider is its proxy)."""
    if any(os.environ.get(v) for v in _PROVIDER_ENV) or "opentelemetry.trace" in sys.modules:
        return True
    api = sys.modules.get("opentelemetry.metrics")
    return api is not None and type(api.get_meter_provider()).__name__ != "_ProxyMeterProvider"


class Telemetry:
    """The instruments taskcore records; one per app."""

    tracer: trace.Tracer
    enqueued: metrics.Counter
    started: metrics.Counter
    succeeded: metrics.Counter
    failed: metrics.Counter
    retried: metrics.Counter
    dead: metrics.Counter
    late: metrics.Counter
    run_time: metrics.Histogram
    wait_time: metrics.Histogram
    circuit_changes: metrics.Counter

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._meter_provider = meter_provider
        self._tracer_provider = tracer_provider
        self._global_tracing = False  # a real global tracer provider was seen
        self._env_tracing = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
        self._bound = False
        self.depth: dict[tuple[str, str], int] = {}
        self.busy: dict[str, int] = {}
        self.circuits: dict[str, int] = {}
        if meter_provider is not None or tracer_provider is not None or _configured():
            self.bind()

    @property
    def tracing(self) -> bool:
        """Whether a real tracer provider is installed (given, or set globally by now).
        Spans cost time even when no-op (~10 us each), so they are skipped unless one
        is; without the tracing API imported, none can be. A real global provider,
        once seen, is remembered: the API sets the global provider only once."""
        if self._global_tracing:
            return True
        trace: Any = sys.modules.get("opentelemetry.trace")  # cheaper than an import (~2 us)
        if trace is None:
            if self._tracer_provider is None:
                return False
            import opentelemetry.trace as trace
        if (
            self._tracer_provider is None
            and getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None
            and not self._env_tracing
        ):
            # No global provider set and none named in the environment (as it was when
            # this app was made): no, without get_tracer_provider(), whose environment
            # lookup fails with a KeyError (~1 us, 5-10x that with cold caches, on
            # every enqueue). The API module's global is read directly; an API without
            # it takes the public path below.
            return False
        provider = self._tracer_provider or trace.get_tracer_provider()
        real = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        self._global_tracing = real and self._tracer_provider is None
        return real

    @staticmethod
    def inject(carrier: dict[str, str]) -> None:
        """Put the current trace context (and baggage) into ``carrier``, without a span
        of our own: a context from elsewhere (an incoming request) still travels. With
        no OpenTelemetry context API imported, or an empty current context (no span,
        no baggage), there is nothing to propagate, and the propagators are skipped."""
        context = sys.modules.get("opentelemetry.context")
        if context is None or not context.get_current():
            return
        from opentelemetry import propagate

        propagate.inject(carrier)

    def bind(self) -> None:
        """Make the instruments now (idempotent)."""
        if self._bound:
            return
        from opentelemetry import metrics, trace

        self._bound = True
        self.tracer = (self._tracer_provider or trace.get_tracer_provider()).get_tracer("taskcore")
        meter = (self._meter_provider or metrics.get_meter_provider()).get_meter("taskcore")
        for attr, kind, name, unit, description in _INSTRUMENTS:
            make = meter.create_counter if kind == "counter" else meter.create_histogram
            setattr(self, attr, make(name, unit, description))
        meter.create_observable_gauge(
            "taskcore.queue.depth",
            [self._observe_depth],
            "{task}",
            "Ready tasks per queue and priority",
        )
        meter.create_observable_gauge(
            "taskcore.worker.busy_slots", [self._observe_busy], "{slot}", "Busy slots per pool"
        )
        meter.create_observable_gauge(
            "taskcore.circuit.state",
            [self._observe_circuits],
            "{state}",
            "Circuit state as this worker last saw it: 0 closed, 1 half-open, 2 open",
        )

    def bind_if_configured(self) -> None:
        """Make the instruments if OpenTelemetry may be set up by now (a worker's start
        and maintenance: its gauges are then observed while it idles)."""
        if not self._bound and _configured():
            self.bind()

    if not TYPE_CHECKING:  # (mypy keeps checking attribute names)

        def __getattr__(self, name: str) -> Any:
            # called only for attributes not set: the instruments before bind()
            if name in _LAZY and not self.__dict__.get("_bound", True):
                self.bind()
                return getattr(self, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(v, {"queue": q, "priority": p}) for (q, p), v in list(self.depth.items())
        ]

    def _observe_busy(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(v, {"pool": pool}) for pool, v in list(self.busy.items())]

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [Observation(v, {"circuit": name}) for name, v in list(self.circuits.items())]

    @contextlib.contextmanager
    def enqueue_span(self, task: str, queue: str, carrier: dict[str, str]) -> Iterator[None]:
        """A PRODUCER span around an enqueue; injects its context into ``carrier``."""
        from opentelemetry import propagate, trace

        with self.tracer.start_as_current_span(
            f"enqueue {task}",
            kind=trace.SpanKind.PRODUCER,
            attributes={"taskcore.task": task, "taskcore.queue": queue},
        ):
            propagate.inject(carrier)
            yield

    @contextlib.contextmanager
    def run_span(
        self, task: str, queue: str, carrier: dict[str, str], attempt: int
    ) -> Iterator[Any]:
        """A CONSUMER span around a run, child of the enqueue span's context."""
        from opentelemetry import propagate, trace

        ctx = propagate.extract(carrier) if carrier else None
        with self.tracer.start_as_current_span(
            f"run {task}",
            context=ctx,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "taskcore.task": task,
                "taskcore.queue": queue,
                "taskcore.attempt": attempt,
            },
        ) as span:
            yield span
