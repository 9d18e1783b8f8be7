"""taskcore: embeddable background task processing with pluggable backends."""

from __future__ import annotations

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
from .workflow import Chain, Chord, Group, Signature, WorkflowHandle, chain, chord, group

__version__ = "0.1.0"

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
