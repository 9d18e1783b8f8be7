from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from taskcore import App, FakeClock
from taskcore.memory import MemoryBackend
from taskcore.testing import Recorder


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
