"""The shared backend conformance suite, run against a real PostgreSQL server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from taskcore.clock import FakeClock
from taskcore.testing import BackendConformance
from taskcore_pg import PostgresBackend


class TestPostgresConformance(BackendConformance):
    dsn: str
    schema: str

    @pytest.fixture(autouse=True)
    def _fresh_schema(self, pg_dsn: str, pg_schema: str) -> None:
        self.dsn = pg_dsn
        self.schema = pg_schema

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @contextlib.asynccontextmanager
    async def make_backend(self, clock: FakeClock) -> AsyncIterator[PostgresBackend]:
        backend = PostgresBackend.from_url(
            f"{self.dsn}?schema={self.schema}", clock=clock, min_size=1, max_size=4
        )
        async with backend:
            yield backend
