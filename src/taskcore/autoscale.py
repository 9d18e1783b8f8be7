"""Concurrency scaling between a minimum and a maximum by queue depth and CPU load."""

from __future__ import annotations

import attrs

from .errors import ConfigurationError

__all__ = ["Autoscaler"]


@attrs.frozen
class Autoscaler:
    """Decides a worker's slot count from what it observes.

    Grow by ``step`` while work is waiting, nearly every slot is busy and the CPU has
    headroom; shrink by ``step`` when the CPU is saturated, or when the queue is empty
    and fewer than half the slots are busy.
    """

    minimum: int
    maximum: int
    step: int = 0
    cpu_high: float = 85.0

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ConfigurationError(
                f"concurrency bounds min={self.minimum} max={self.maximum}: need 1 <= min <= max"
            )

    @property
    def increment(self) -> int:
        return self.step or max(1, (self.maximum - self.minimum) // 8)

    def decide(self, current: int, busy: int, depth: int, cpu_percent: float) -> int:
        if cpu_percent >= self.cpu_high:
            return max(self.minimum, current - self.increment)
        if depth > 0 and busy >= 0.9 * current:
            return min(self.maximum, current + self.increment)
        if depth == 0 and busy < 0.5 * current:
            return max(self.minimum, current - self.increment)
        return current
