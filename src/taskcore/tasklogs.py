"""Task logs: the records a task emits through :mod:`logging` while it runs, kept per
run in the backend's journal (stream ``logs``, keyed by task id, ``App(log_ttl=...)``).

A worker installs a log-record factory while it runs (:func:`logging.setLogRecordFactory`,
wrapping whatever factory was there) and sets a context variable to the current run
around each task body (async tasks and thread-pool tasks: anyio copies the context into
the thread); each record created inside a task body is added to that run's log. A
factory, not a handler on the root logger: a root handler would count as "a handler
found", so in a program that never configured logging Python's last-resort handler
would stop printing warnings and errors to stderr. A process-pool task runs in a child
process: the child installs the same factory (once), captures the call's lines with the
same bounds, and returns them with the result (or the exception), and the worker adds
them to the run's log; a child killed mid-call (timeout, crash) takes its lines with it.
A record created outside a task body costs one context-variable read; a task that logs
nothing costs nothing more (in the process pool: ``None`` beside the result). What a run
logged is written with the worker's next settle, one backend call for every run that
logged since the last one (never a call per line).

Capture sees the records a logger creates, which is what its effective level lets
through: a logger whose effective level is WARNING (the root's default) drops
``info()`` before any record exists. Handlers, their levels and ``propagate`` do not
matter. A process-pool child has its own logging configuration, not the worker's: what
the task's module (imported in the child) sets up, else the defaults (WARNING and above).
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Sequence
from typing import Any

import msgspec

from .backend import JournalEntry

__all__ = [
    "LOGS_STREAM",
    "MAX_LINES",
    "MAX_LINE_CHARS",
    "MAX_RUN_BYTES",
    "ChildRun",
    "LogLine",
    "RunLog",
    "decode_runs",
]

LOGS_STREAM = "logs"
MAX_LINES = 200
"""Lines kept per run; later ones are counted, not kept."""
MAX_LINE_CHARS = 4000
"""A longer message (with its traceback) is cut to this many characters."""
MAX_RUN_BYTES = 64 * 1024
"""Characters kept per run, all lines together; later lines are counted, not kept."""


class LogLine(msgspec.Struct, frozen=True):
    """One captured log record."""

    at: float
    """When it was emitted (epoch seconds, the record's own time)."""
    level: str
    logger: str
    message: str
    """The formatted message, with its traceback if it carried one."""
    attempt: int = 0
    """The attempt (run) of the task that emitted it."""


class _RunRecord(msgspec.Struct, frozen=True):
    """What a run's journal record holds."""

    attempt: int
    lines: list[LogLine]
    dropped: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_RunRecord).decode


class RunLog:
    """The lines one run logged so far (made at its first line)."""

    __slots__ = ("attempt", "dropped", "lines", "size")

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.lines: list[LogLine] = []
        self.size = 0
        self.dropped = 0

    def add(self, record: logging.LogRecord, message: str) -> None:
        if len(message) > MAX_LINE_CHARS:
            message = message[: MAX_LINE_CHARS - 1] + "…"
        if len(self.lines) >= MAX_LINES or self.size + len(message) > MAX_RUN_BYTES:
            self.dropped += 1
            return
        self.size += len(message)
        self.lines.append(
            LogLine(record.created, record.levelname, record.name, message, self.attempt)
        )

    def entry(self, task_id: str, at: float) -> JournalEntry:
        return JournalEntry(LOGS_STREAM, at, self.payload(), task_id)

    def payload(self) -> bytes:
        """The run's lines, encoded (a journal record, or a child's reply)."""
        return _encode(_RunRecord(self.attempt, self.lines, self.dropped))

    def merge(self, payload: bytes) -> None:
        """Add the lines of :meth:`payload` (a process-pool child's), within the bounds."""
        run = _decode(payload)
        self.dropped += run.dropped
        for line in run.lines:
            if len(self.lines) >= MAX_LINES or self.size + len(line.message) > MAX_RUN_BYTES:
                self.dropped += 1
                continue
            self.size += len(line.message)
            self.lines.append(line)


def decode_runs(entries: Sequence[JournalEntry]) -> list[LogLine]:
    """The lines of the runs in ``entries`` (oldest first), each run's dropped count as
    a last line of its own."""
    out: list[LogLine] = []
    for e in entries:
        run = _decode(e.payload)
        out += run.lines
        if run.dropped:
            at = run.lines[-1].at if run.lines else e.at
            out.append(
                LogLine(
                    at,
                    "WARNING",
                    "taskcore.tasklogs",
                    f"{run.dropped} more line(s) of this run were not kept (at most "
                    f"{MAX_LINES} lines and {MAX_RUN_BYTES} characters per run)",
                    run.attempt,
                )
            )
    return out


CURRENT_RUN: contextvars.ContextVar[Any] = contextvars.ContextVar("taskcore_run", default=None)
"""The run whose task body executes in this context (set by the worker): an object with
a ``log`` attribute (a :class:`RunLog` or None) and a ``lease`` (whose attempt it is)."""


class ChildRun:
    """A process-pool call as :data:`CURRENT_RUN` in the child process."""

    __slots__ = ("attempt", "log")

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.log: RunLog | None = None

    @property
    def lease(self) -> ChildRun:  # the handler reads run.lease.attempt, as of a worker run
        return self


def merge_child_logs(run: Any, payload: bytes) -> None:
    """Add what a process-pool child captured to ``run``'s log (a worker run)."""
    with _lock:
        if run.log is None:
            run.log = RunLog(run.lease.attempt)
        run.log.merge(payload)


def capture(record: logging.LogRecord) -> None:
    """Add ``record`` to the log of the run in progress in this context, if any."""
    run = CURRENT_RUN.get()
    if run is None:
        return
    try:
        message = record.getMessage()
        if record.exc_info or record.exc_text or record.stack_info:
            message = _with_traceback(record, message)
        with _lock:
            if run.log is None:
                run.log = RunLog(run.lease.attempt)
            run.log.add(record, message)
    except Exception:  # a bad format string in a task's log call must not break the task
        pass


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record: logging.LogRecord = _previous(*args, **kwargs)
    if _active:
        capture(record)
    return record


_formatter = logging.Formatter()
_lock = threading.Lock()
_previous: Any = logging.LogRecord  # the factory ours wraps
_in_chain = False  # ours is the factory, or one a later factory wraps
_active = False  # and it captures (else it passes records on untouched)
_users = 0


def _with_traceback(record: logging.LogRecord, message: str) -> str:
    parts = [message]
    if record.exc_info:
        parts.append(record.exc_text or _formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(_formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def install() -> None:
    """Start capturing (counted: the first call installs the factory)."""
    global _users, _active, _previous, _in_chain
    with _lock:
        _users += 1
        if not _active:
            if not _in_chain:
                _previous = logging.getLogRecordFactory()
                logging.setLogRecordFactory(_factory)
                _in_chain = True
            _active = True


def install_in_child() -> None:
    """Start capturing for good (a process-pool child, which no worker stops)."""
    if not _active:
        install()


def uninstall() -> None:
    """Undo one :func:`install`; the last one stops capturing, and takes the factory
    out unless another one has wrapped it since (then it stays, passing records on)."""
    global _users, _active, _in_chain
    with _lock:
        _users -= 1
        if _users <= 0 and _active:
            _users = 0
            _active = False
            if logging.getLogRecordFactory() is _factory:
                logging.setLogRecordFactory(_previous)
                _in_chain = False
