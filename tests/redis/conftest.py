"""Redis service tests: a real server at ``TASKCORE_REDIS_URL``
(default ``redis://127.0.0.1:6379/0``).

Unreachable server: the tests are skipped, except in CI (``CI=true``) where that
is a failure. Every test gets its own key prefix and its keys are deleted after.
Tests that flush the server's script cache run against a private ``redis-server``
of their own instead (``private_redis_url``), so that other clients of the shared
server keep theirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis_helpers import delete_prefix, new_prefix

import redis as redis_sync
from taskcore.clock import FakeClock
from taskcore_redis import RedisBackend

REDIS_URL = os.environ.get("TASKCORE_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's client is asyncio-only


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI where every service is expected to be there."""
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
        _unavailable(f"Redis server at {REDIS_URL} unreachable ({exc}); set TASKCORE_REDIS_URL")
    return REDIS_URL


@pytest.fixture(scope="session")
def private_redis_url() -> Iterator[str]:
    """A ``redis-server`` of these tests' own, on a unix socket, nothing on disk (for
    tests that flush its script cache)."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not on PATH; install Redis to run the script-cache tests")
    assert binary is not None  # _unavailable() does not return
    with tempfile.TemporaryDirectory(prefix="tc-redis-") as tmp:
        sock = os.path.join(tmp, "redis.sock")
        options = ["--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"]
        server = subprocess.Popen(
            [binary, *options, "--dir", tmp, "--logfile", ""],  # the log on stdout
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None  # stdout=PIPE
            for line in server.stdout:  # the server says when it is ready, or exits
                # 7.0: "... now ready to accept connections at <path>"; 7.2: "Ready to ..."
                if "ready to accept connections" in line.lower():
                    break
            else:
                _unavailable(f"the private redis-server did not start ({binary})")
            yield f"unix://{sock}"
        finally:
            server.terminate()
            server.communicate(timeout=10)  # reads the rest of its log, then reaps it


@pytest.fixture(scope="session")
def admin(redis_url: str) -> Iterator[redis_sync.Redis]:
    """A plain synchronous client for inspecting the server."""
    client = redis_sync.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(admin: redis_sync.Redis) -> Iterator[str]:
    p = new_prefix()
    yield p
    delete_prefix(admin, p)


@pytest.fixture
def make_redis_backend(
    redis_url: str, admin: redis_sync.Redis
) -> Iterator[Callable[[FakeClock], contextlib.AbstractAsyncContextManager[RedisBackend]]]:
    """A factory of backends, each with a fresh prefix removed on exit."""
    prefixes: list[str] = []

    @contextlib.asynccontextmanager
    async def make(clock: FakeClock) -> AsyncIterator[RedisBackend]:
        p = new_prefix()
        prefixes.append(p)
        async with RedisBackend.from_url(redis_url, clock=clock, prefix=p) as backend:
            yield backend

    yield make
    for p in prefixes:
        delete_prefix(admin, p)
