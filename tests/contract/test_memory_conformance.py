from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from taskcore.clock import FakeClock
from taskcore.memory import MemoryBackend
from taskcore.testing import BackendConformance


class TestMemoryBackend(BackendConformance):
    @contextlib.asynccontextmanager
    async def make_backend(self, clock: FakeClock) -> AsyncIterator[MemoryBackend]:
        async with MemoryBackend(clock=clock) as backend:
            yield backend
