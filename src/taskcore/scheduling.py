"""Scheduling policies: the claim order inside a queue.

A policy turns a task into a *score* when it becomes ready (enqueued, promoted from
scheduled, or due for a retry); backends claim the lowest score first, ties broken
by arrival order. The score formulas live here, once; the memory backend calls them,
the Redis and Postgres backends evaluate the same formulas server-side (their tests
run the shared conformance suite to prove it).

- ``fifo``: score = ready time.
- ``priority``: score = priority x 2**33 + ready time (strict priority, FIFO inside).
- ``deadline`` (default): score = min(explicit deadline, ready time + aging horizon of
  the priority). The horizons are the wait SLAs (P0 0 s, P1 60 s, P2 300 s,
  P3 1800 s) and ``batch_horizon`` for P4, so priority order holds for fresh tasks
  and an old low-priority task eventually outranks a fresh urgent one.
- ``fair``: weighted fair queueing by virtual finish time. Each class (the priority,
  or the task's fairness key) keeps a finish tag F; a ready task gets
  ``max(V, F) + 1/weight`` and the queue's virtual time V moves to the score of each
  claimed task. Under saturation every class gets its weight's share of claims and
  no class starves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from .errors import ConfigurationError
from .priority import Priority

__all__ = [
    "DEFAULT_FAIR_WEIGHTS",
    "FairState",
    "SchedulingPolicy",
    "fair_class",
    "static_score",
]

PolicyKind = Literal["fifo", "priority", "fair", "deadline"]

PRIORITY_STRIDE = float(2**33)
DEFAULT_FAIR_WEIGHTS: Mapping[str, float] = {"P0": 16.0, "P1": 8.0, "P2": 4.0, "P3": 2.0, "P4": 1.0}
DEFAULT_BATCH_HORIZON = 7200.0
_SLAS: tuple[float | None, ...] = tuple(p.sla for p in Priority)


def _freeze_weights(value: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    items = dict(DEFAULT_FAIR_WEIGHTS if value is None else value)
    for key, weight in items.items():
        if not weight > 0:
            raise ConfigurationError(
                f"fair weight for {key!r} is {weight!r}: weights must be positive numbers"
            )
    return tuple(sorted(items.items()))


@attrs.frozen
class SchedulingPolicy:
    """How a queue orders its ready tasks.

    Build one with :meth:`fifo`, :meth:`strict_priority`, :meth:`weighted_fair` or
    :meth:`deadline_aware` (the default).
    """

    kind: PolicyKind = "deadline"
    weights: tuple[tuple[str, float], ...] = attrs.field(default=None, converter=_freeze_weights)
    by: Literal["priority", "key"] = "priority"
    default_weight: float = 1.0
    batch_horizon: float = DEFAULT_BATCH_HORIZON

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("fifo", "priority", "fair", "deadline"):
            raise ConfigurationError(
                f"unknown scheduling policy {self.kind!r}: use fifo, priority, fair or deadline"
            )
        if self.batch_horizon < 0 or self.default_weight <= 0:
            raise ConfigurationError("batch_horizon must be >= 0 and default_weight > 0")

    @classmethod
    def fifo(cls) -> SchedulingPolicy:
        return cls("fifo")

    @classmethod
    def strict_priority(cls) -> SchedulingPolicy:
        return cls("priority")

    @classmethod
    def weighted_fair(
        cls,
        weights: Mapping[str, float] | None = None,
        *,
        by: Literal["priority", "key"] = "priority",
        default_weight: float = 1.0,
    ) -> SchedulingPolicy:
        """Weights by priority label (``"P0"``...``"P4"``, default 16:8:4:2:1) or, with
        ``by="key"``, by the tasks' fairness keys (unlisted keys get ``default_weight``)."""
        if weights is None and by == "key":
            weights = {}
        return cls("fair", weights, by, default_weight)

    @classmethod
    def deadline_aware(cls, batch_horizon: float = DEFAULT_BATCH_HORIZON) -> SchedulingPolicy:
        return cls("deadline", batch_horizon=batch_horizon)

    def horizon(self, priority: int) -> float:
        sla = _SLAS[priority]
        return self.batch_horizon if sla is None else sla

    def weight(self, cls_name: str) -> float:
        for key, value in self.weights:
            if key == cls_name:
                return value
        return self.default_weight

    def to_dict(self) -> dict[str, object]:
        """Plain form for backends that evaluate the policy server-side."""
        return {
            "kind": self.kind,
            "weights": dict(self.weights),
            "by": self.by,
            "default_weight": self.default_weight,
            "batch_horizon": self.batch_horizon,
            "horizons": [self.horizon(p) for p in range(5)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SchedulingPolicy:
        return cls(
            kind=data["kind"],  # type: ignore[arg-type]
            weights=data.get("weights"),  # type: ignore[arg-type]
            by=data.get("by", "priority"),  # type: ignore[arg-type]
            default_weight=float(data.get("default_weight", 1.0)),  # type: ignore[arg-type]
            batch_horizon=float(data.get("batch_horizon", DEFAULT_BATCH_HORIZON)),  # type: ignore[arg-type]
        )


DEFAULT_POLICY = SchedulingPolicy()


def static_score(
    policy: SchedulingPolicy, priority: int, ready_at: float, deadline: float | None
) -> float:
    """Score for the stateless policies (fifo, priority, deadline)."""
    if policy.kind == "fifo":
        return ready_at
    if policy.kind == "priority":
        return priority * PRIORITY_STRIDE + ready_at
    aged = ready_at + policy.horizon(priority)
    return aged if deadline is None else min(deadline, aged)


def fair_class(policy: SchedulingPolicy, priority: int, fairness_key: str | None) -> str:
    """The fairness class of a task: its priority label or its fairness key."""
    if policy.by == "key":
        return fairness_key or ""
    return f"P{priority}"


@attrs.define
class FairState:
    """Per-queue state of the weighted fair policy (virtual time and finish tags)."""

    virtual_time: float = 0.0
    finish: dict[str, float] = attrs.field(factory=dict)

    def tag(self, policy: SchedulingPolicy, cls_name: str) -> float:
        """Give a newly ready task of class ``cls_name`` its virtual finish time."""
        start = max(self.virtual_time, self.finish.get(cls_name, 0.0))
        finish = start + 1.0 / policy.weight(cls_name)
        self.finish[cls_name] = finish
        return finish

    def claimed(self, score: float) -> None:
        """Advance virtual time past a claimed task's score."""
        if score > self.virtual_time:
            self.virtual_time = score
