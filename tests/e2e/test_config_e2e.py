"""Remote configuration on every backend: a running worker picks up a change at its
next maintenance (one key read per tick), ignores a document it cannot read, and the
``taskcore worker --config`` command takes its settings from a file (services only:
the worker runs in another process)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest

from taskcore import App, FakeClock, State
from taskcore.config import REMOTE_KEY, Flag, RemoteConfig, RemoteDocument
from taskcore.config.remote import WRITE_ATTEMPTS

from .conftest import POLL, settled, until

pytestmark = pytest.mark.anyio

MakeApp = Callable[..., contextlib.AbstractAsyncContextManager[App]]
ROOT = Path(__file__).resolve().parents[2]


# The worker command's tests run a worker process, which needs a server to share.
ON_SERVERS = pytest.mark.parametrize(
    "target",
    [
        pytest.param(("redis", "asyncio"), id="redis"),
        pytest.param(("postgres", "asyncio"), id="pg"),
    ],
    indirect=True,
)


def register(app: App) -> tuple[Any, Any]:
    @app.task(name="flag_async")
    async def flag_async(customer: str) -> bool:
        return app.flags.enabled("new-billing", key=customer)

    @app.task(name="flag_sync")
    def flag_sync(customer: str) -> bool:  # runs in the thread pool
        return app.flags.enabled("new-billing", key=customer)

    return flag_async, flag_sync


async def test_a_running_worker_picks_up_concurrency_and_flags_at_its_next_maintenance(
    app: App, make_app: MakeApp, clock: FakeClock
) -> None:
    flag_async, flag_sync = register(app)
    async with make_app() as admin, app.worker(concurrency=4, poll_interval=POLL) as w:
        assert await (await flag_async.enqueue("c1")).result(timeout=5) is False
        await admin.config.set_remote(concurrency=2, flags={"new-billing": True})
        # nothing changes before the worker's next maintenance: no read per task
        assert w.target == 4
        assert await (await flag_sync.enqueue("c1")).result(timeout=5) is False
        clock.advance(w.maintenance_interval)  # the maintenance loop's tick
        await until(lambda: w.target == 2)
        assert await (await flag_async.enqueue("c1")).result(timeout=5) is True
        assert await (await flag_sync.enqueue("c2")).result(timeout=5) is True
        await w.maintain()  # the heartbeat reports the new concurrency
        [info] = await admin.backend.workers()
        assert info.concurrency == 2
        # a flag flipped off again, and the slot count handed back
        await admin.config.set_remote(concurrency=None, flags={"new-billing": False})
        await w.maintain()
        assert w.target == 4
        assert await (await flag_sync.enqueue("c1")).result(timeout=5) is False


async def test_a_paused_worker_claims_nothing_until_resumed(app: App, make_app: MakeApp) -> None:
    flag_async, _ = register(app)
    async with make_app() as admin, app.worker(poll_interval=POLL) as w:
        await admin.config.set_remote(paused=True)
        await w.maintain()
        assert w.paused
        handle = await flag_async.enqueue("c1")
        # a paused claim loop waits for a resume: the task stays queued through a
        # maintenance round and several of the idle wait's poll intervals
        await w.maintain()
        with pytest.raises(TimeoutError):
            await settled(app, handle.id, State.SUCCEEDED, timeout=3 * POLL)
        record = await app.backend.get(handle.id)
        assert record is not None and record.state == State.QUEUED
        await admin.config.set_remote(paused=False)
        await w.maintain()
        await settled(app, handle.id, State.SUCCEEDED)


async def test_a_bad_remote_document_is_ignored_with_a_log_line(
    app: App, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    register(app)
    async with make_app() as admin, app.worker(concurrency=4, poll_interval=POLL) as w:
        await admin.config.set_remote(concurrency=3, flags={"new-billing": True})
        await w.maintain()
        assert w.target == 3
        # another version's document, and one with a value out of bounds
        for raw in (
            msgspec.json.encode({"schema": 2, "version": 7, "concurrency": 1}),
            msgspec.json.encode({"schema": 1, "version": 8, "concurrency": 0}),
        ):
            await admin.backend.kv_set(REMOTE_KEY, raw)
            caplog.clear()
            with caplog.at_level(logging.WARNING, "taskcore.config"):
                await w.maintain()
            assert [r.levelname for r in caplog.records] == ["WARNING"]
            message = caplog.records[0].getMessage()
            assert message.startswith("ignoring the remote configuration: ")
            assert message.endswith("; keeping version 1")
            assert w.target == 3  # the last good document stays
            assert app.flags.enabled("new-billing")
        # a good document again is applied
        await admin.config.set_remote(concurrency=5, replace=True)
        await w.maintain()
        assert w.target == 5
        assert not app.flags.enabled("new-billing")


async def test_concurrent_writers_on_two_apps_keep_every_change(
    app: App, make_app: MakeApp
) -> None:
    """Many ``set_remote`` calls at once from two processes, each setting its own flag:
    every flag is in the final document, and each write got its own version."""
    writers = WRITE_ATTEMPTS // 2  # per app: at most WRITE_ATTEMPTS at once all succeed
    written: list[RemoteDocument] = []

    async def write(config: RemoteConfig, name: str, value: bool | dict[str, int]) -> None:
        written.append(await config.set_remote(flags={name: value}))

    async with make_app() as other:
        async with anyio.create_task_group() as tg:
            for i in range(writers):
                tg.start_soon(write, app.config, f"a{i}", True)
                tg.start_soon(write, other.config, f"b{i}", {"percent": i + 1})
        final = await other.config.get_remote()
    expected = {f"a{i}": Flag(enabled=True) for i in range(writers)}
    expected |= {f"b{i}": Flag(percent=i + 1) for i in range(writers)}
    assert final is not None
    assert final.flags == expected
    assert final.version == 2 * writers
    # versions 1..2N, each once, and each write's document holds what the writes
    # before it stored (one new flag per write)
    assert sorted(doc.version for doc in written) == list(range(1, 2 * writers + 1))
    assert all(len(doc.flags) == doc.version for doc in written)


@ON_SERVERS
async def test_the_worker_command_takes_its_settings_from_a_file(
    app: App, tmp_path: Path, backend_kind: str
) -> None:
    flag_async, _ = register(app)
    config = tmp_path / "taskcore.toml"
    config.write_text(
        f'url = "{_url_of(app, backend_kind)}"\n[worker]\nconcurrency = 7\nmax_tasks = 100\n'
        "threads = 2\npoll_interval = 0.05\n[flags]\nnew-billing = {percent = 100}\n"
    )
    env = {**os.environ, "TASKCORE_WORKER__MAX_TASKS": "2"}  # over the file
    # the flag over the file's concurrency
    handles = [await flag_async.enqueue(c) for c in ("c1", "c2")]
    proc = await _open_worker(config, env, "--concurrency", "3", "--log-level", "INFO")
    async with proc:
        with anyio.fail_after(60), _killed_on_failure(proc):
            # the app module says memory://: the file's URL reached the tasks, and the
            # file's flag was on in the worker
            for handle in handles:
                assert await handle.result(timeout=30) is True
            # retired after max_tasks=2 (the environment's), not the file's 100
            assert await proc.wait() == 0
        assert proc.stderr is not None
        chunks = []
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                chunks.append(await proc.stderr.receive())
        log = b"".join(chunks).decode()
    assert "concurrency 3" in log
    assert "retiring: claimed max_tasks=2 tasks" in log


@ON_SERVERS
async def test_the_worker_command_runs_tasks_on_uvloop_when_asked(
    app: App, tmp_path: Path, backend_kind: str
) -> None:
    @app.task(name="loop_kind")  # as tests/e2e/config_app.py defines it for the worker
    async def loop_kind() -> str:
        raise AssertionError("runs in the worker process")

    config = tmp_path / "taskcore.toml"
    config.write_text(f'url = "{_url_of(app, backend_kind)}"\n[worker]\nmax_tasks = 1\n')
    for flags, expected in ((["--loop", "uvloop"], "uvloop"), ([], "asyncio")):
        handle = await loop_kind.enqueue()
        proc = await _open_worker(config, dict(os.environ), *flags)
        async with proc:
            with anyio.fail_after(60), _killed_on_failure(proc):
                assert await handle.result(timeout=30) == expected
                assert await proc.wait() == 0  # retired after its one task


def _url_of(app: App, backend_kind: str) -> str:
    """The URL of ``app``'s backend (its scratch prefix or schema) for a worker process."""
    backend: Any = app.backend
    if backend_kind == "redis":
        url = os.environ.get("TASKCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
        return f"{url}?prefix={backend.prefix}"
    url = os.environ.get("TASKCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    return f"{url}?schema={backend.schema}"


async def _open_worker(config: Path, env: dict[str, str], *flags: str) -> anyio.abc.Process:
    """``taskcore worker tests.e2e.config_app:app --config CONFIG FLAGS`` in a new process."""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT)]))
    command = [sys.executable, "-m", "taskcore", "worker", "tests.e2e.config_app:app"]
    command += ["--config", str(config), *flags]
    return await anyio.open_process(command, env=env, cwd=ROOT, stderr=subprocess.PIPE)


@contextlib.contextmanager
def _killed_on_failure(proc: anyio.abc.Process) -> Any:
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.kill()
