"""Admission: what a worker decides between claiming a task and running it.

- **Poison tasks.** Every claim counts as an attempt and a run whose worker dies keeps
  it, so a task claimed more often than its retry policy's attempts plus an allowance
  for lost workers keeps killing its workers: it is dead-lettered instead of run.
- **Rate limits.** A token from the task's bucket (per task, or per key), taken through
  the backend so the limit holds for the whole cluster.
- **Circuit breakers.** Leave from the task's circuit (:mod:`taskcore.circuit`).

A rate-limited task or one whose circuit is open is *deferred*: the worker settles it
as ``DEFER`` (back to ``retrying``, no attempt spent, no error recorded).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from .circuit import CircuitBreakers, Ticket
from .errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    from .app import App
    from .backend import Lease
    from .retry import RetryPolicy
    from .task import Task

__all__ = ["Admission", "Admitted"]

log = logging.getLogger("taskcore.worker")

RETRY_UNREADABLE = 1.0  # seconds: defer a task whose rate limit or circuit could not be read


@attrs.frozen
class Admitted:
    """Run now (``retry_at`` None, with a circuit ``ticket`` if the task has a circuit),
    or defer to ``retry_at``."""

    retry_at: float | None = None
    ticket: Ticket | None = None


RUN = Admitted()


class Admission:
    """A worker's admission checks.

    Args:
        app: the worker's app (backend, clock, circuits).
        lost_lease_allowance: runs beyond the retry policy's attempts granted to make up
            for workers lost while running a task (0-1000).
    """

    def __init__(self, app: App, lost_lease_allowance: int) -> None:
        if isinstance(lost_lease_allowance, bool) or not (
            isinstance(lost_lease_allowance, int) and 0 <= lost_lease_allowance <= 1000
        ):
            raise ConfigurationError(
                f"lost_lease_allowance={lost_lease_allowance!r}: give a whole number of extra "
                "runs between 0 and 1000"
            )
        self.app = app
        self.lost_lease_allowance = lost_lease_allowance
        self.breakers = CircuitBreakers(app.backend, app.clock, app.telemetry)

    # -- poison tasks -------------------------------------------------------------------
    def is_poison(self, lease: Lease, policy: RetryPolicy) -> bool:
        return lease.attempt > policy.retries + 1 + self.lost_lease_allowance

    async def poison_reason(self, lease: Lease, policy: RetryPolicy) -> str:
        """Why a poison task is dead-lettered, with how often its lease expired."""
        try:
            record = await self.app.backend.get(lease.message.id)
        except BackendError:
            record = None
        lost = (
            sum(e.type == "LeaseExpired" for e in record.errors)
            if record is not None
            else lease.attempt - 1
        )
        return (
            f"lease expired {lost} times: worker lost while running it - poison task? "
            f"(claim {lease.attempt} > {policy.retries + 1} attempts + lost_lease_allowance "
            f"{self.lost_lease_allowance}); fix the task, then retry it from the dead-letter "
            "queue"
        )

    # -- rate limits and circuits ---------------------------------------------------------
    async def admit(
        self, lease: Lease, task: Task[Any, Any], call_key: str | None, kwargs: dict[str, Any]
    ) -> Admitted:
        """Take a rate-limit token and pass the circuit breaker, or say when to come back."""
        opts, clock = task.options, self.app.clock
        try:
            if opts.rate_limit is not None:
                limit = opts.rate_limit
                bucket = task.rate_bucket(call_key, kwargs)
                wait = await self.app.backend.take_tokens(bucket, limit.rate, limit.burst)
                if wait > 0:
                    return Admitted(retry_at=clock.now() + wait)
            if opts.circuit is not None:
                admitted = await self.breakers.admit(
                    opts.circuit, self.app.circuit_settings(opts.circuit)
                )
                if isinstance(admitted, Ticket):
                    return Admitted(ticket=admitted)
                return Admitted(retry_at=admitted)
        except BackendError as exc:
            log.warning(
                "task %s deferred by %ss: its rate limit or circuit could not be read (%s)",
                lease.message.id,
                RETRY_UNREADABLE,
                exc,
            )
            return Admitted(retry_at=clock.now() + RETRY_UNREADABLE)
        return RUN

    async def verdict(self, ticket: Ticket, error: BaseException | None) -> None:
        """Tell the circuit how the admitted run ended (``error`` None: success)."""
        try:
            await self.breakers.record(ticket, error)
        except BackendError as exc:
            log.warning("circuit %s: could not record a run's outcome (%s)", ticket.name, exc)
