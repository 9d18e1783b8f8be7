"""The model-based machine, memory backend against memory backend: checks the
machine itself (any difference here is a bug in the machine or a non-determinism
in the reference)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from taskcore.memory import MemoryBackend
from taskcore.testing.stateful import backend_state_machine

_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_memory_matches_memory_on_asyncio() -> None:
    machine = backend_state_machine(lambda clock: MemoryBackend(clock=clock))
    run_state_machine_as_test(machine, settings=_SETTINGS)


def test_memory_matches_memory_on_trio() -> None:
    machine = backend_state_machine(
        lambda clock: MemoryBackend(clock=clock), async_backend="trio", queues=("a", "b", "c")
    )
    run_state_machine_as_test(machine, settings=settings(_SETTINGS, max_examples=15))
