"""Unit tests of the value types: priorities, retry policies, complexity, states."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcore import Complexity, ConfigurationError, IllegalTransition, Priority, RetryPolicy, State
from taskcore.autoscale import Autoscaler
from taskcore.complexity import classify
from taskcore.priority import is_late
from taskcore.states import TERMINAL, check_transition


def test_priority_slas() -> None:
    assert [p.sla for p in Priority] == [0.0, 60.0, 300.0, 1800.0, None]
    assert [p.label for p in Priority] == ["P0", "P1", "P2", "P3", "P4"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Priority.CRITICAL),
        ("P3", Priority.LOW),
        ("high", Priority.HIGH),
        (Priority.BATCH, Priority.BATCH),
    ],
)
def test_priority_parse(value: object, expected: Priority) -> None:
    assert Priority.parse(value) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [5, -1, "P9", "urgent", True, 2.0])
def test_priority_parse_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid priority"):
        Priority.parse(bad)  # type: ignore[arg-type]


def test_lateness_against_sla() -> None:
    assert not is_late(1, 60.0) and is_late(1, 60.5)
    assert not is_late(0, 0.9) and is_late(0, 1.5)  # P0: "immediately" = within 1 s
    assert is_late(3, 1801) and not is_late(4, 10**9)


def test_default_retry_policies_exactly() -> None:
    simple = Complexity.SIMPLE.retry_policy
    assert simple.retries == 3 and [simple.delay(n) for n in (1, 2, 3)] == [1.0, 1.0, 1.0]
    moderate = Complexity.MODERATE.retry_policy
    assert moderate.retries == 5
    assert [moderate.delay(n) for n in range(1, 6)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    complex_ = Complexity.COMPLEX.retry_policy
    assert complex_.retries == 7
    nominal = [complex_.nominal_delay(n) for n in range(1, 8)]
    assert nominal == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert complex_.nominal_delay(12) == 64.0  # capped


@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0.0, max_value=0.999))
def test_exponential_jitter_is_bounded(attempt: int, r: float) -> None:
    policy = Complexity.COMPLEX.retry_policy
    nominal = policy.nominal_delay(attempt)
    got = policy.delay(attempt, rand=lambda: r)
    assert nominal <= got <= nominal * (1 + policy.jitter)
    assert got <= 64.0 * 1.1


def test_jitter_spreads_delays() -> None:
    policy = RetryPolicy.exponential(7, jitter=0.5)
    delays = {policy.delay(3) for _ in range(50)}
    assert len(delays) > 1 and all(4.0 <= d <= 6.0 for d in delays)


def test_explicit_policy_and_filters() -> None:
    policy = RetryPolicy.explicit([5, 30, 300], retry_on=OSError, give_up_on=PermissionError)
    assert policy.retries == 3
    assert [policy.delay(n) for n in (1, 2, 3)] == [5.0, 30.0, 300.0]
    assert policy.should_retry(ConnectionError(), 1)
    assert not policy.should_retry(PermissionError(), 1)  # give_up_on wins over retry_on
    assert not policy.should_retry(ValueError(), 1)  # not in retry_on
    assert not policy.should_retry(ConnectionError(), 4)  # exhausted


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"retries": 1001}, {"base": -1.0}, {"jitter": 2.0}, {"backoff": "explicit"}],
)
def test_retry_policy_bounds(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_complexity_classification_and_defaults() -> None:
    assert classify(0.05) is Complexity.SIMPLE
    assert classify(0.1) is Complexity.MODERATE
    assert classify(5.0) is Complexity.MODERATE
    assert classify(5.01) is Complexity.COMPLEX
    assert Complexity.COMPLEX.pool(is_async=False) == "process"
    assert Complexity.COMPLEX.pool(is_async=True) == "async"
    assert Complexity.SIMPLE.pool(is_async=False) == "thread"
    assert Complexity.SIMPLE.timeout < Complexity.MODERATE.timeout < Complexity.COMPLEX.timeout


def test_state_machine() -> None:
    assert TERMINAL == {State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED}
    check_transition(State.QUEUED, State.RUNNING)
    with pytest.raises(IllegalTransition, match="cannot go from succeeded to running"):
        check_transition(State.SUCCEEDED, State.RUNNING, "t1")
    with pytest.raises(IllegalTransition, match="allowed from queued"):
        check_transition(State.QUEUED, State.SUCCEEDED)


def test_autoscaler() -> None:
    scaler = Autoscaler(2, 20, step=4)
    assert scaler.decide(current=8, busy=8, depth=100, cpu_percent=30) == 12
    assert scaler.decide(current=20, busy=20, depth=100, cpu_percent=30) == 20
    assert scaler.decide(current=8, busy=8, depth=100, cpu_percent=95) == 4
    assert scaler.decide(current=8, busy=1, depth=0, cpu_percent=10) == 4
    assert scaler.decide(current=2, busy=0, depth=0, cpu_percent=10) == 2
    assert scaler.decide(current=8, busy=6, depth=0, cpu_percent=10) == 8
    assert Autoscaler(1, 100).increment == 12
    with pytest.raises(ConfigurationError):
        Autoscaler(5, 2)
