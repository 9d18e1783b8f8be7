from __future__ import annotations

import pytest

from taskcore import ConfigurationError, SchedulingPolicy
from taskcore.scheduling import PRIORITY_STRIDE, FairState, fair_class, static_score


def test_static_scores() -> None:
    fifo = SchedulingPolicy.fifo()
    assert static_score(fifo, 4, 100.0, None) == 100.0
    prio = SchedulingPolicy.strict_priority()
    assert static_score(prio, 1, 100.0, None) == PRIORITY_STRIDE + 100.0
    dl = SchedulingPolicy.deadline_aware(batch_horizon=7200)
    assert static_score(dl, 0, 100.0, None) == 100.0
    assert static_score(dl, 3, 100.0, None) == 1900.0
    assert static_score(dl, 4, 100.0, None) == 7300.0
    assert static_score(dl, 3, 100.0, 150.0) == 150.0  # explicit deadline wins when sooner


def test_fair_state_shares() -> None:
    policy = SchedulingPolicy.weighted_fair()
    state = FairState()
    tags = sorted((state.tag(policy, f"P{p}"), p) for p in range(5) for _ in range(31))
    first = [p for _, p in tags[:31]]
    assert [first.count(p) for p in range(5)] == [16, 8, 4, 2, 1]
    state.claimed(5.0)
    state.claimed(1.0)
    assert state.virtual_time == 5.0


def test_fair_class_by_key() -> None:
    policy = SchedulingPolicy.weighted_fair({"a": 2}, by="key")
    assert fair_class(policy, 3, "a") == "a" and fair_class(policy, 3, None) == ""
    assert policy.weight("a") == 2 and policy.weight("zzz") == 1.0
    assert fair_class(SchedulingPolicy.weighted_fair(), 3, "a") == "P3"


def test_policy_round_trip_and_validation() -> None:
    policy = SchedulingPolicy.weighted_fair({"P0": 10, "P4": 1})
    again = SchedulingPolicy.from_dict(policy.to_dict())
    assert again == policy
    assert policy.to_dict()["horizons"] == [0.0, 60.0, 300.0, 1800.0, 7200.0]
    with pytest.raises(ConfigurationError, match="unknown scheduling policy"):
        SchedulingPolicy("lottery")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="positive"):
        SchedulingPolicy.weighted_fair({"P0": 0})
