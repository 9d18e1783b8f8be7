"""Complexity classes: they pick a task's default retry policy, timeout and pool."""

from __future__ import annotations

import enum
from typing import Literal

from .retry import RetryPolicy

__all__ = ["Complexity", "Pool", "classify"]

Pool = Literal["async", "thread", "process"]

SIMPLE_LIMIT = 0.1  # seconds: below this a task is simple
COMPLEX_LIMIT = 5.0  # seconds: above this a task is complex


class Complexity(enum.StrEnum):
    """How heavy a task is: simple (<100 ms), moderate (100 ms-5 s), complex (>5 s).

    ``AUTO`` lets the workers measure the run time and classify the task.
    """

    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"
    AUTO = "auto"

    @property
    def retry_policy(self) -> RetryPolicy:
        return _RETRY[self]

    @property
    def timeout(self) -> float:
        """Default per-attempt timeout in seconds (from the specification's completion
        targets: simple < 1 s -> 10 s headroom, moderate < 30 s, complex < 10 min)."""
        return _TIMEOUT[self]

    def pool(self, is_async: bool) -> Pool:
        """Execution pool: async tasks run on the event loop, sync ones in threads,
        complex sync ones in the process pool."""
        if is_async:
            return "async"
        return "process" if self is Complexity.COMPLEX else "thread"


_RETRY: dict[Complexity, RetryPolicy] = {
    Complexity.SIMPLE: RetryPolicy.fixed(3, 1.0),
    Complexity.MODERATE: RetryPolicy.linear(5, 1.0),
    Complexity.COMPLEX: RetryPolicy.exponential(7, 1.0, 64.0, jitter=0.1),
}
# Until an auto task has been measured it is treated as moderate.
_RETRY[Complexity.AUTO] = _RETRY[Complexity.MODERATE]

_TIMEOUT: dict[Complexity, float] = {
    Complexity.SIMPLE: 10.0,
    Complexity.MODERATE: 30.0,
    Complexity.COMPLEX: 600.0,
    Complexity.AUTO: 30.0,
}


def classify(mean_seconds: float) -> Complexity:
    """The class a measured mean run time falls in."""
    if mean_seconds < SIMPLE_LIMIT:
        return Complexity.SIMPLE
    if mean_seconds <= COMPLEX_LIMIT:
        return Complexity.MODERATE
    return Complexity.COMPLEX
