"""Retry policies: how many attempts a task gets and how long to wait between them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

from .errors import ConfigurationError

__all__ = ["RetryPolicy"]

Backoff = Literal["fixed", "linear", "exponential", "explicit"]
ExcTypes = tuple[type[BaseException], ...]


def as_exc_tuple(value: type[BaseException] | Sequence[type[BaseException]] | None) -> ExcTypes:
    if value is None:
        return ()
    if isinstance(value, type):
        return (value,)
    return tuple(value)


@attrs.frozen
class RetryPolicy:
    """When and how often a failed task is tried again.

    ``retries`` counts the runs after the first one, each preceded by one delay: the
    specification's "max 5 attempts, delays 1, 2, 3, 4, 5 s" is ``retries=5`` with those
    five delays, so a task runs at most ``retries + 1`` times. ``delay(n)`` gives the
    wait after the n-th failed run (n starts at 1).

    Args:
        retries: runs allowed after the first, 0-1000.
        backoff: ``fixed``, ``linear``, ``exponential`` or ``explicit``.
        base: the first delay in seconds.
        cap: the largest delay in seconds (exponential).
        jitter: fraction (0-1) of the delay that may be added at random (exponential).
        delays: the explicit list of delays, one per retry.
        retry_on: retry only these exception types (empty: every exception).
        give_up_on: never retry these exception types.
    """

    retries: int = 3
    backoff: Backoff = "fixed"
    base: float = 1.0
    cap: float = 64.0
    jitter: float = 0.0
    delays: tuple[float, ...] = ()
    retry_on: ExcTypes = attrs.field(default=(), converter=as_exc_tuple)
    give_up_on: ExcTypes = attrs.field(default=(), converter=as_exc_tuple)

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.retries <= 1000:
            raise ConfigurationError(
                f"RetryPolicy(retries={self.retries}): must be between 0 and 1000"
            )
        if self.base < 0 or self.cap < 0 or any(d < 0 for d in self.delays):
            raise ConfigurationError(
                f"RetryPolicy(base={self.base}, cap={self.cap}, delays={self.delays}): "
                "delays must be >= 0 seconds"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(
                f"RetryPolicy(jitter={self.jitter}): jitter is a fraction between 0 and 1"
            )
        if self.backoff == "explicit" and not self.delays:
            raise ConfigurationError("RetryPolicy.explicit needs at least one delay")

    @classmethod
    def fixed(cls, retries: int = 3, delay: float = 1.0, **kw: object) -> RetryPolicy:
        """``retries`` retries, ``delay`` seconds apart (the *simple* default: 3 x 1 s)."""
        return cls(retries=retries, backoff="fixed", base=delay, **kw)  # type: ignore[arg-type]

    @classmethod
    def linear(cls, retries: int = 5, step: float = 1.0, **kw: object) -> RetryPolicy:
        """Delays step, 2*step, 3*step ... (the *moderate* default: 1, 2, 3, 4, 5 s)."""
        return cls(retries=retries, backoff="linear", base=step, **kw)  # type: ignore[arg-type]

    @classmethod
    def exponential(
        cls,
        retries: int = 7,
        base: float = 1.0,
        cap: float = 64.0,
        jitter: float = 0.1,
        **kw: object,
    ) -> RetryPolicy:
        """Delays base, 2*base, 4*base ... capped at ``cap``, plus up to ``jitter`` x delay
        (the *complex* default: 1, 2, 4, 8, 16, 32, 64 s)."""
        return cls(
            retries=retries,
            backoff="exponential",
            base=base,
            cap=cap,
            jitter=jitter,
            **kw,  # type: ignore[arg-type]
        )

    @classmethod
    def explicit(cls, delays: Sequence[float], **kw: object) -> RetryPolicy:
        """One retry per listed delay: ``explicit([5, 30, 300])`` makes 4 attempts."""
        return cls(
            retries=len(delays),
            backoff="explicit",
            delays=tuple(float(d) for d in delays),
            **kw,  # type: ignore[arg-type]
        )

    def nominal_delay(self, failed_attempt: int) -> float:
        """The delay before the next attempt, without jitter."""
        n = max(1, failed_attempt)
        if self.backoff == "fixed":
            return self.base
        if self.backoff == "linear":
            return self.base * n
        if self.backoff == "exponential":
            return float(min(self.cap, self.base * 2 ** (n - 1)))
        return self.delays[min(n, len(self.delays)) - 1]

    def delay(self, failed_attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before the next attempt; jitter adds at most ``jitter`` x delay."""
        nominal = self.nominal_delay(failed_attempt)
        if self.jitter:
            return nominal + nominal * self.jitter * rand()
        return nominal

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether a failure of run number ``attempt`` (1-based) with ``exc`` earns a retry."""
        if attempt > self.retries:
            return False
        if self.give_up_on and isinstance(exc, self.give_up_on):
            return False
        return not self.retry_on or isinstance(exc, self.retry_on)

    def with_filters(
        self,
        retry_on: type[BaseException] | Sequence[type[BaseException]] | None,
        give_up_on: type[BaseException] | Sequence[type[BaseException]] | None,
    ) -> RetryPolicy:
        return attrs.evolve(
            self,
            retry_on=as_exc_tuple(retry_on) or self.retry_on,
            give_up_on=as_exc_tuple(give_up_on) or self.give_up_on,
        )
