"""Middleware: hooks around enqueue and execution. Subclass and override what you need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .backend import Lease, Message, OutcomeKind
    from .envelope import Envelope
    from .task import Task

__all__ = ["ExecutionContext", "Middleware"]


@attrs.define
class ExecutionContext:
    """What a worker knows about the run in progress."""

    task: Task[Any, Any]
    envelope: Envelope
    lease: Lease
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    outcome: OutcomeKind | None = None
    result: Any = None
    error: BaseException | None = None
    duration: float = 0.0


class Middleware:
    """Base class with no-op hooks, in the style of Dramatiq's middleware."""

    async def before_enqueue(self, task: Task[Any, Any], envelope: Envelope) -> None:
        """Called before a task is enqueued; raise to refuse the enqueue."""

    async def after_enqueue(self, task: Task[Any, Any], message: Message, created: bool) -> None:
        """Called after the backend accepted (or deduplicated) a task."""

    async def before_run(self, ctx: ExecutionContext) -> None:
        """Called in the worker before the task function runs."""

    async def after_run(self, ctx: ExecutionContext) -> None:
        """Called after the run with ``ctx.outcome``, ``ctx.result`` / ``ctx.error`` set."""
