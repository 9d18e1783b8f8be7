"""OpenTelemetry metrics and traces through opentelemetry-api (no-op without an SDK).

Attributes are low-cardinality: task, queue, priority, complexity, outcome — never
the task id. Trace context travels in the envelope's ``trace`` field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["Telemetry"]


class Telemetry:
    """The instruments taskcore records; one per app."""

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("taskcore")
        self._tracer_provider = tracer_provider
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("taskcore")
        self.enqueued = meter.create_counter("taskcore.tasks.enqueued", "{task}", "Tasks enqueued")
        self.started = meter.create_counter("taskcore.tasks.started", "{task}", "Task runs started")
        self.succeeded = meter.create_counter(
            "taskcore.tasks.succeeded", "{task}", "Runs that succeeded"
        )
        self.failed = meter.create_counter("taskcore.tasks.failed", "{task}", "Runs that raised")
        self.retried = meter.create_counter("taskcore.tasks.retried", "{task}", "Retries scheduled")
        self.dead = meter.create_counter(
            "taskcore.tasks.dead_lettered", "{task}", "Tasks dead-lettered"
        )
        self.late = meter.create_counter(
            "taskcore.tasks.late", "{task}", "Runs that started past their SLA"
        )
        self.run_time = meter.create_histogram(
            "taskcore.task.run_time", "s", "Run time per attempt"
        )
        self.wait_time = meter.create_histogram(
            "taskcore.task.wait_time", "s", "Ready-to-start wait"
        )
        self.circuit_changes = meter.create_counter(
            "taskcore.circuit.transitions",
            "{transition}",
            "Circuit breakers opened (state=open) or closed (state=closed)",
        )
        self.depth: dict[tuple[str, str], int] = {}
        self.busy: dict[str, int] = {}
        self.circuits: dict[str, int] = {}
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

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(v, {"queue": q, "priority": p}) for (q, p), v in list(self.depth.items())
        ]

    def _observe_busy(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, {"pool": pool}) for pool, v in list(self.busy.items())]

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, {"circuit": name}) for name, v in list(self.circuits.items())]

    @property
    def tracing(self) -> bool:
        """Whether a real tracer provider is installed (given, or set globally by now).
        Spans cost time even when no-op (~10 us each), so they are skipped unless one is."""
        provider = self._tracer_provider or trace.get_tracer_provider()
        return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))

    @staticmethod
    def inject(carrier: dict[str, str]) -> None:
        """Put the current trace context (and baggage) into ``carrier``, without a span
        of our own: a context from elsewhere (an incoming request) still travels."""
        propagate.inject(carrier)

    @contextlib.contextmanager
    def enqueue_span(self, task: str, queue: str, carrier: dict[str, str]) -> Iterator[None]:
        """A PRODUCER span around an enqueue; injects its context into ``carrier``."""
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
