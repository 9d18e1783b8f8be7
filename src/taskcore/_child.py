"""Entry points of process-pool runs: import the task by name in the child process."""

from __future__ import annotations

import importlib
from typing import Any

from .tasklogs import CURRENT_RUN, ChildRun, install_in_child


def run_in_child(module: str, qualname: str, args_body: bytes) -> bytes:
    """Import ``module``, find the task at ``qualname``, run it, return the encoded result.

    The result is encoded in the child so an unserialisable return value fails there
    with a clear error instead of a pickling error.
    """
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    task = obj
    args, kwargs = task.decode_args(args_body)
    result = task.fn(*args, **kwargs)
    encoded: bytes = task.app.codec.encode(result)
    return encoded


def run_captured(
    module: str, qualname: str, args_body: bytes, attempt: int
) -> tuple[bytes | BaseException, bytes | None]:
    """:func:`run_in_child` with the call's log lines captured (``Worker(capture_logs=
    True)``): returns the encoded result, or the exception the call raised, and the
    lines it logged (:meth:`RunLog.payload <taskcore.tasklogs.RunLog.payload>`; None if
    it logged nothing). The exception is returned, not raised, so that its lines reach
    the worker too; the worker raises it.
    """
    install_in_child()
    run = ChildRun(attempt)
    token = CURRENT_RUN.set(run)
    try:
        outcome: bytes | BaseException = run_in_child(module, qualname, args_body)
    except BaseException as exc:  # anyio's child would send it back just the same
        outcome = exc
    finally:
        CURRENT_RUN.reset(token)
    return outcome, None if run.log is None else run.log.payload()
