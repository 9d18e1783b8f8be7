from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from taskcore.backend import Backend
from taskcore.clock import FakeClock
from taskcore.testing import BackendConformance
from taskcore_redis import RedisBackend


class TestRedisBackend(BackendConformance):
    @pytest.fixture(autouse=True)
    def _factory(
        self,
        make_redis_backend: Callable[
            [FakeClock], contextlib.AbstractAsyncContextManager[RedisBackend]
        ],
    ) -> None:
        self._make = make_redis_backend

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @contextlib.asynccontextmanager
    async def make_backend(self, clock: FakeClock) -> AsyncIterator[Backend]:
        async with self._make(clock) as backend:
            yield backend
