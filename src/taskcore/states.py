"""Task states and the one table of legal transitions.

::

    scheduled ─┐                 ┌─> succeeded
    waiting  ──┼─> queued ─> running ─┼─> failed ──> (manual retry) queued
    retrying ──┘     ^         │ │     ├─> retrying (eligible later)
                     │         │ │     ├─> dead ───> (retry from DLQ) queued
                     └─────────┘ │     └─> cancelled
            lease lost / hand-back

Every backend checks transitions against :data:`TRANSITIONS`; an illegal one is
refused (``IllegalTransition`` or a ``False`` result for batch calls).
"""

from __future__ import annotations

import enum

from .errors import IllegalTransition

__all__ = ["TERMINAL", "TRANSITIONS", "State", "check_transition"]


class State(enum.StrEnum):
    SCHEDULED = "scheduled"
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED})
"""States a task does not leave on its own (dead and failed can be retried by hand)."""

TRANSITIONS: dict[State, frozenset[State]] = {
    State.SCHEDULED: frozenset({State.QUEUED, State.CANCELLED}),
    State.WAITING: frozenset({State.QUEUED, State.CANCELLED}),
    State.RETRYING: frozenset({State.QUEUED, State.CANCELLED}),
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.DEAD}),
    State.RUNNING: frozenset(
        {
            State.SUCCEEDED,
            State.FAILED,
            State.RETRYING,
            State.DEAD,
            State.CANCELLED,
            State.QUEUED,  # lease expired (re-run) or handed back at shutdown
        }
    ),
    State.SUCCEEDED: frozenset(),
    State.CANCELLED: frozenset(),
    State.FAILED: frozenset({State.QUEUED}),
    State.DEAD: frozenset({State.QUEUED}),
}


def can_transition(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: State, target: State, task_id: str | None = None) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is allowed."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal)"
        raise IllegalTransition(
            f"task {task_id or '?'}: cannot go from {current} to {target}; "
            f"allowed from {current}: {allowed}",
            task_id=task_id,
        )
