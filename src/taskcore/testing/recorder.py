"""A middleware that records runs, for tests that wait on a worker without sleeping."""

from __future__ import annotations

import anyio

from taskcore.backend import OutcomeKind
from taskcore.middleware import ExecutionContext, Middleware

__all__ = ["Recorder"]


class Recorder(Middleware):
    """Records every run's start and outcome; tests ``await`` the n-th one.

    ``App(..., middleware=[recorder])``, then ``await recorder.wait_runs(3)``.
    """

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
        """Wait until ``n`` runs have finished (any outcome)."""
        with anyio.fail_after(timeout):
            while len(self.runs) < n:
                await self._changed.wait()

    async def wait_started(self, n: int, timeout: float = 10) -> None:
        """Wait until ``n`` runs have started."""
        with anyio.fail_after(timeout):
            while len(self.started) < n:
                await self._started_changed.wait()
