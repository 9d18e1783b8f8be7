"""Fixtures of the fault suite: backends on the shared servers, private servers that
may be killed, and the ledgers (always on the shared servers)."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import NoReturn, TypeVar

import psycopg
import pytest

import redis as redis_sync
from tests.e2e.conftest import pg_dsn, redis_url

from .harness import Ledger, Target
from .servers import PrivatePostgres, PrivateRedis, ServerUnavailable, private_dir

__all__ = [
    "pg_dsn",
    "pg_ledger",
    "pg_target",
    "private_postgres",
    "private_redis",
    "redis_ledger",
    "redis_target",
    "redis_url",
]


def _with_query(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.fixture
def redis_ledger(redis_url: str) -> Iterator[tuple[Ledger, str]]:
    """A ledger on the shared Redis, and the key prefix it and the backend share."""
    prefix = f"tcfault{uuid.uuid4().hex[:10]}"
    yield Ledger(redis_url.split("?")[0], f"{prefix}:ledger"), prefix
    client = redis_sync.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


@pytest.fixture
def pg_ledger(pg_dsn: str) -> Iterator[tuple[Ledger, str]]:
    """A ledger in a fresh schema on the shared PostgreSQL, and that schema's name."""
    schema = f"tcfault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        for table, column in (("ledger", "n int"), ("ledger_starts", "mark text"),
                              ("ledger_tries", "n int")):  # fmt: skip
            conn.execute(f'CREATE TABLE "{schema}".{table} ({column} NOT NULL)')
    yield Ledger(pg_dsn, f'"{schema}".ledger'), schema
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def redis_target(redis_url: str, redis_ledger: tuple[Ledger, str]) -> Target:
    """The backend on the shared Redis under the ledger's prefix."""
    ledger, prefix = redis_ledger
    return Target("redis", _with_query(redis_url, prefix=prefix), ledger)


@pytest.fixture
def pg_target(pg_dsn: str, pg_ledger: tuple[Ledger, str]) -> Target:
    """The backend on the shared PostgreSQL, in the ledger's schema."""
    ledger, schema = pg_ledger
    return Target("postgres", _with_query(pg_dsn, schema=schema), ledger)


def _unavailable(exc: ServerUnavailable) -> NoReturn:
    reason = f"cannot start a private server: {exc}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


S = TypeVar("S", PrivateRedis, PrivatePostgres)


@contextlib.contextmanager
def _private(kind: type[S], prefix: str) -> Iterator[S]:
    """A started private server of ``kind`` in a fresh directory, removed after."""
    directory = private_dir(prefix)
    try:
        try:
            server = kind(directory)
            server.start()
        except ServerUnavailable as exc:
            _unavailable(exc)
        try:
            yield server
        finally:
            server.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def private_redis(redis_ledger: tuple[Ledger, str]) -> Iterator[tuple[PrivateRedis, Target]]:
    """A redis-server of the test's own (AOF on) that it may kill; the ledger stays on
    the shared server."""
    ledger, prefix = redis_ledger
    with _private(PrivateRedis, "tcfault-redis-") as server:
        yield server, Target("redis", _with_query(server.url, prefix=prefix), ledger)


@pytest.fixture
def private_postgres(
    pg_ledger: tuple[Ledger, str],
) -> Iterator[tuple[PrivatePostgres, Target]]:
    """A PostgreSQL cluster of the test's own that it may restart; the ledger stays
    on the shared server."""
    ledger, schema = pg_ledger
    with _private(PrivatePostgres, "tcfault-pg-") as server:
        yield server, Target("postgres", _with_query(server.dsn, schema=schema), ledger)
