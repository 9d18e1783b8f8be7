"""End-to-end fixtures: the same worker tests against memory, Redis and PostgreSQL.

``app`` is an :class:`App` on a fresh, isolated backend of the kind under test, driven
by a :class:`FakeClock`: memory runs on asyncio and trio; Redis (unique key prefix,
deleted after) and PostgreSQL (unique schema, dropped after) run on asyncio only,
since their drivers are asyncio-only. An unreachable server skips its tests, except
under ``CI=true`` where it fails them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import anyio
import psycopg
import pytest
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

import redis as redis_sync
from taskcore import App, FakeClock, Middleware
from taskcore.backend import Backend
from taskcore.memory import MemoryBackend
from taskcore.testing import Recorder
from taskcore_pg import PostgresBackend
from taskcore_redis import RedisBackend
from tests.redis.redis_helpers import delete_prefix

REDIS_URL = os.environ.get("TASKCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("TASKCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

# (backend kind, anyio backend); the services' drivers run on asyncio only
TARGETS = [
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("redis", "asyncio"), id="redis"),
    pytest.param(("postgres", "asyncio"), id="postgres"),
]

# how long the worker's idle wait may block before it looks again (real seconds)
POLL = 0.05


def _unreachable(reason: str) -> None:
    """Skip, or fail under CI where every service is expected to be up."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        client = redis_sync.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis_sync.RedisError as exc:
        _unreachable(f"Redis server at {REDIS_URL} unreachable ({exc}); set TASKCORE_REDIS_URL")
    return REDIS_URL


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        _unreachable(f"PostgreSQL is not reachable at {PG_DSN} ({exc}); set TASKCORE_PG_DSN")
    return PG_DSN


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def backend_kind(target: tuple[str, str]) -> str:
    return target[0]


@pytest.fixture
def anyio_backend(target: tuple[str, str]) -> str:
    return target[1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BackendFactory = Callable[[FakeClock], Backend]


@pytest.fixture
def make_backend(
    backend_kind: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[FakeClock], Backend]]:
    """Builds backends that all see the same isolated storage: a second call gives a
    second connection (a second "machine") to the same memory, key prefix or schema."""
    if backend_kind == "memory":
        shared: dict[int, MemoryBackend] = {}

        def memory(clock: FakeClock) -> Backend:
            return shared.setdefault(id(clock), MemoryBackend(clock=clock))

        yield memory
    elif backend_kind == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = f"tce2e-{uuid.uuid4().hex[:12]}"

        def redis(clock: FakeClock) -> Backend:
            return RedisBackend.from_url(url, clock=clock, prefix=prefix)

        yield redis
        # tests/redis kills every client of the server on purpose: survive it if those
        # tests run at the same time
        client = redis_sync.Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(), 5),
            retry_on_error=[redis_sync.ConnectionError],
        )
        try:
            delete_prefix(client, prefix)  # the journal's keys too ({prefix|j:...})
        finally:
            client.close()
    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = f"tc_e2e_{uuid.uuid4().hex[:12]}"

        def postgres(clock: FakeClock) -> Backend:
            return PostgresBackend.from_url(
                dsn, clock=clock, schema=schema, min_size=1, max_size=8, poll_interval=POLL
            )

        yield postgres
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_app(
    make_backend: BackendFactory, clock: FakeClock
) -> Callable[..., contextlib.AbstractAsyncContextManager[App]]:
    """Another app on the same storage (what a second worker machine would run)."""

    @contextlib.asynccontextmanager
    async def make(middleware: Sequence[Middleware] = (), **options: Any) -> AsyncIterator[App]:
        app = App(backend=make_backend(clock), clock=clock, middleware=middleware, **options)
        async with app:
            yield app

    return make


@pytest.fixture
async def app(
    make_app: Callable[..., contextlib.AbstractAsyncContextManager[App]], recorder: Recorder
) -> AsyncIterator[App]:
    async with make_app([recorder]) as app:
        yield app


async def until(predicate: Callable[[], Any], timeout: float = 5) -> None:
    """Wait for an observable condition. ``predicate`` may be async. Memory needs only
    checkpoints; the services' replies arrive over sockets, so poll briefly."""
    with anyio.fail_after(timeout):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await anyio.sleep(0.01)


async def settled(app: App, task_id: str, state: str, timeout: float = 5) -> None:
    """Wait until the worker's batched settle has landed in the backend."""

    async def landed() -> bool:
        rec = await app.backend.get(task_id)
        return rec is not None and rec.state == state

    await until(landed, timeout)
