from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from taskcore.clock import FakeClock
from taskcore.memory import MemoryBackend
from taskcore.testing import BackendConformance, settle_half_a_chord

pytestmark = pytest.mark.anyio


class TestMemoryBackend(BackendConformance):
    @contextlib.asynccontextmanager
    async def make_backend(self, clock: FakeClock) -> AsyncIterator[MemoryBackend]:
        async with MemoryBackend(clock=clock) as backend:
            yield backend


async def test_an_incomplete_join_leaves_nothing_once_its_parents_results_expire() -> None:
    clock = FakeClock()
    async with MemoryBackend(clock=clock) as backend:
        cb, _ = await settle_half_a_chord(backend, clock)  # a chord whose other member died
        clock.advance(99)
        await backend.reap()
        assert set(backend._joins) == {cb.id}
        clock.advance(1)
        await backend.reap()
        assert backend._joins == {}
