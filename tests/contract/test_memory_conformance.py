from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from taskcore.backend import FollowUp, Outcome, OutcomeKind
from taskcore.clock import FakeClock
from taskcore.memory import MemoryBackend
from taskcore.testing import BackendConformance, make_message

pytestmark = pytest.mark.anyio


class TestMemoryBackend(BackendConformance):
    @contextlib.asynccontextmanager
    async def make_backend(self, clock: FakeClock) -> AsyncIterator[MemoryBackend]:
        async with MemoryBackend(clock=clock) as backend:
            yield backend


async def test_an_incomplete_join_leaves_nothing_once_its_parents_results_expire() -> None:
    clock = FakeClock()
    async with MemoryBackend(clock=clock) as backend:
        await backend.enqueue([make_message(clock), make_message(clock)])
        a, b = await backend.claim(["q"], 2, 30, "w")
        cb = make_message(clock, queue="q3")  # a chord callback whose other member fails
        ok = Outcome(
            a.message.id,
            a.token,
            OutcomeKind.SUCCEEDED,
            clock.now(),
            result_ttl=100.0,
            then=(FollowUp(cb, after=2),),
        )
        dead = Outcome(b.message.id, b.token, OutcomeKind.DEAD, clock.now(), result_ttl=100.0)
        assert await backend.settle([ok, dead]) == [True, True]
        clock.advance(99)
        await backend.reap()
        assert set(backend._joins) == {cb.id}
        clock.advance(1)
        await backend.reap()
        assert backend._joins == {}
