"""Entry point of process-pool runs: import the task by name in the child process."""

from __future__ import annotations

import importlib
from typing import Any


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
