"""Priorities P0-P4 and their wait SLAs."""

from __future__ import annotations

import enum

__all__ = ["Priority"]


class Priority(enum.IntEnum):
    """Task priority; a lower number is more urgent.

    Each priority has a wait SLA: the longest a task should wait between becoming
    eligible and starting. A task that starts later is *late*.
    """

    CRITICAL = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3
    BATCH = 4

    @property
    def sla(self) -> float | None:
        """Wait SLA in seconds (``None`` for BATCH: processed when resources allow)."""
        return _SLA[self]

    @property
    def label(self) -> str:
        return f"P{int(self)}"

    @classmethod
    def parse(cls, value: Priority | int | str) -> Priority:
        """Accept a Priority, 0-4, ``"P2"`` or ``"medium"``."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= 4:
                return cls(value)
        elif isinstance(value, str):
            text = value.strip().upper()
            if text in cls.__members__:
                return cls[text]
            if len(text) == 2 and text[0] == "P" and text[1] in "01234":
                return cls(int(text[1]))
        raise ValueError(
            f"invalid priority {value!r}: use Priority.CRITICAL..BATCH, 0-4, 'P0'-'P4' "
            "or a name such as 'high'"
        )


_SLA: dict[Priority, float | None] = {
    Priority.CRITICAL: 0.0,
    Priority.HIGH: 60.0,
    Priority.MEDIUM: 300.0,
    Priority.LOW: 1800.0,
    Priority.BATCH: None,
}


# P0's SLA of 0 s means "immediately": a start within one second counts as on time.
_LATE_AFTER: tuple[float, ...] = (1.0, 60.0, 300.0, 1800.0, float("inf"))


def is_late(priority: int, waited: float) -> bool:
    """Whether a task of ``priority`` that waited ``waited`` seconds missed its SLA."""
    return waited > _LATE_AFTER[priority]
