"""Fixtures for the PostgreSQL backend tests.

The server comes from ``TASKCORE_PG_DSN`` (default: the local test database). If it
cannot be reached the tests are skipped with the reason, except under ``CI=true``,
where an unreachable server is a failure. Each test gets its own schema, dropped
afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

DSN = os.environ.get("TASKCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def anyio_backend() -> str:
    # psycopg's async driver runs on asyncio only.
    return "asyncio"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {DSN} ({exc}); set TASKCORE_PG_DSN"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name; the schema (if created) is dropped after the test."""
    name = f"tc_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
