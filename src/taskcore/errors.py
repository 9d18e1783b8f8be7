"""The taskcore error tree.

Every error taskcore raises derives from :class:`TaskcoreError`::

    TaskcoreError
    ├── ConfigurationError          bad settings, unknown backend URL, missing extra
    ├── BackendError                the backend failed or refused an operation
    │   ├── BackendUnavailable      connection lost / server down (retryable)
    │   └── IllegalTransition       a state change the state machine forbids
    ├── SerializationError          a payload or result could not be encoded/decoded
    │   └── PayloadTooLarge         an envelope over the size limit
    ├── TaskValidationError         arguments do not match the task's signature
    └── TaskError                   about one task
        ├── UnknownTask             no task registered under that name
        ├── TaskTimeout             the task ran past its timeout
        ├── TaskFailed              awaited result of a task that failed / died
        ├── TaskCancelled           awaited result of a cancelled task
        └── ResultTimeout           waiting for a result timed out

Control flow is not an error: :class:`Retry` (ask for another attempt) and
:class:`RateLimited` derive from :class:`TaskControl`, not from ``TaskcoreError``,
and the worker never logs them as failures.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "IllegalTransition",
    "PayloadTooLarge",
    "RateLimited",
    "ResultTimeout",
    "Retry",
    "SerializationError",
    "TaskCancelled",
    "TaskControl",
    "TaskError",
    "TaskFailed",
    "TaskTimeout",
    "TaskValidationError",
    "TaskcoreError",
    "UnknownTask",
]


class TaskcoreError(Exception):
    """Root of every error raised by taskcore."""


class ConfigurationError(TaskcoreError):
    """A setting, URL or option is invalid; the message says which and how to fix it."""


class BackendError(TaskcoreError):
    """The backend failed or refused an operation."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class BackendUnavailable(BackendError):
    """The backend cannot be reached right now; the operation may be retried."""


class IllegalTransition(BackendError):
    """A task state change that the state machine does not allow."""


class SerializationError(TaskcoreError):
    """A payload or a result could not be encoded or decoded."""


class PayloadTooLarge(SerializationError):
    """An envelope is larger than the configured ``max_payload_bytes``."""


class TaskValidationError(TaskcoreError):
    """Arguments given at enqueue time do not match the task's signature."""


class TaskError(TaskcoreError):
    """An error about one task; ``task_id`` names it when known."""

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class UnknownTask(TaskError):
    """No task is registered under the given name."""


class TaskTimeout(TaskError):
    """A task ran longer than its timeout."""


class TaskFailed(TaskError):
    """The awaited task ended failed or dead-lettered."""


class TaskCancelled(TaskError):
    """The awaited task was cancelled."""


class ResultTimeout(TaskError):
    """The task did not finish within the time given to ``result()``."""


class TaskControl(Exception):
    """Base for exceptions a task raises to steer its own execution."""


class Retry(TaskControl):
    """Raise from a task to ask for another attempt.

    Args:
        delay: seconds until the next attempt; ``None`` uses the retry policy's delay.
        reason: recorded in the attempt history.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        if delay is not None and delay < 0:
            raise ValueError(f"Retry(delay={delay!r}): delay must be >= 0 seconds")
        self.delay = delay
        self.reason = reason


class RateLimited(TaskControl):
    """Raise from a task when a downstream rate limit was hit (e.g. HTTP 429).

    The task is deferred by ``retry_after`` seconds without counting as a failed attempt.
    """

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after
