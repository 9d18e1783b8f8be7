from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from taskcore import App, ExecutionContext, FakeClock, Middleware
from taskcore.backend import OutcomeKind
from taskcore.memory import MemoryBackend


class Recorder(Middleware):
    """Records every run's outcome and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, OutcomeKind | None]] = []
        self.started: list[str] = []
        self._changed = anyio.Event()
        self._started_changed = anyio.Event()

    async def before_run(self, ctx: ExecutionContext) -> None:
        self.started.append(ctx.lease.message.id)
        self._started_changed.set()
        self._started_changed = anyio.Event()

    async def after_run(self, ctx: ExecutionContext) -> None:
        self.runs.append((ctx.lease.message.id, ctx.attempt, ctx.outcome))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_runs(self, n: int, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while len(self.runs) < n:
                await self._changed.wait()

    async def wait_started(self, n: int, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while len(self.started) < n:
                await self._started_changed.wait()


async def settled(app: App, task_id: str, state: str, timeout: float = 5) -> None:
    """Wait until the worker's batched settle has landed in the backend."""
    with anyio.fail_after(timeout):
        while (rec := await app.backend.get(task_id)) is None or rec.state != state:
            await anyio.lowlevel.checkpoint()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def app(clock: FakeClock, recorder: Recorder) -> AsyncIterator[App]:
    app = App(backend=MemoryBackend(clock=clock), clock=clock, middleware=[recorder])
    async with app:
        yield app
