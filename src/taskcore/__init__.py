"""taskcore: embeddable background task processing with pluggable backends."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .app import App
from .backend import Backend, QueueStats, TaskRecord
from .circuit import Circuit
from .clock import Clock, FakeClock, SystemClock
from .complexity import Complexity
from .errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    IllegalTransition,
    PayloadTooLarge,
    RateLimited,
    ResultTimeout,
    Retry,
    SerializationError,
    TaskCancelled,
    TaskcoreError,
    TaskError,
    TaskFailed,
    TaskTimeout,
    TaskValidationError,
    UnknownTask,
)
from .handle import TaskHandle
from .middleware import ExecutionContext, Middleware
from .priority import Priority
from .retry import RetryPolicy
from .scheduling import SchedulingPolicy
from .states import State
from .task import RateLimit, Task
from .worker import Worker

if TYPE_CHECKING:
    from .workflow import Chain, Chord, Group, Signature, WorkflowHandle, chain, chord, group

__version__ = "0.1.0"

# Names imported at their first use (PEP 562), so a worker that runs no workflow does
# not load their module: name -> module.
_WORKFLOW = ("Chain", "Chord", "Group", "Signature", "WorkflowHandle", "chain", "chord", "group")
_LAZY = dict.fromkeys(_WORKFLOW, "taskcore.workflow")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups find the module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "App",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Chain",
    "Chord",
    "Circuit",
    "Clock",
    "Complexity",
    "ConfigurationError",
    "ExecutionContext",
    "FakeClock",
    "Group",
    "IllegalTransition",
    "Middleware",
    "PayloadTooLarge",
    "Priority",
    "QueueStats",
    "RateLimit",
    "RateLimited",
    "ResultTimeout",
    "Retry",
    "RetryPolicy",
    "SchedulingPolicy",
    "SerializationError",
    "Signature",
    "State",
    "SystemClock",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskHandle",
    "TaskRecord",
    "TaskTimeout",
    "TaskValidationError",
    "TaskcoreError",
    "UnknownTask",
    "Worker",
    "WorkflowHandle",
    "__version__",
    "chain",
    "chord",
    "group",
]
