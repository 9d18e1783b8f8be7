"""Worker recycling: when a worker process should retire so a fresh one can take over.

Leaky tasks (a C extension that never frees, a cache that only grows) make a long-lived
worker swell. A worker with ``max_tasks`` claims no more than that many tasks; one with
``max_rss`` watches its resident memory and that of its process-pool children. When
either limit is reached the worker stops claiming, lets the tasks it holds finish (they
keep their own timeouts; no grace-period cut-off), settles them and exits. Nothing is
lost and nothing runs twice; a supervisor (``taskcore worker --workers K``, systemd,
Kubernetes) starts the replacement.

anyio's process pool (``anyio.to_process``) has no per-child task or memory limit: its
children only retire after five idle minutes. They are recycled with their worker.
"""

from __future__ import annotations

import re

import attrs

from .errors import ConfigurationError

__all__ = ["Recycle", "parse_size", "peak_rss"]

RSS_CHECK_INTERVAL = 0.5  # seconds between memory checks

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from ``536870912``, ``"512MB"``, ``"512M"``, ``"512MiB"`` or ``"1.5GB"``.

    K, M, G and T are powers of 1024 with or without ``B``/``iB``, as memory limits in
    Docker (``--memory 512m``) and Kubernetes (``512Mi``) mean them.

    Raises:
        ConfigurationError: the value is not a positive size.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"max_rss={value!r}: give a size such as '512MB'")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        if match is None or (match.group(3) and match.group(3).lower() == "ib" and not match[2]):
            raise ConfigurationError(
                f"max_rss={value!r}: write a size as bytes or with a unit, e.g. '512MB', "
                "'512M' or '2GB'"
            )
        size = int(float(match[1]) * _UNITS[match[2].lower()])
    if size <= 0:
        raise ConfigurationError(f"max_rss={value!r}: must be more than 0 bytes")
    return size


def peak_rss() -> int:
    """The largest resident set of this process and its children (the process pool)."""
    import psutil  # only workers with max_rss need it

    me = psutil.Process()
    largest = me.memory_info().rss
    for child in me.children():
        try:
            largest = max(largest, child.memory_info().rss)
        except psutil.Error:  # exited meanwhile
            continue
    return int(largest)


@attrs.frozen
class Recycle:
    """A worker's retirement limits (None: no limit).

    Args:
        max_tasks: tasks a worker claims before it retires (>= 1).
        max_rss: resident memory, in bytes, of the worker or of any of its process-pool
            children beyond which the worker retires.
    """

    max_tasks: int | None = None
    max_rss: int | None = None

    @classmethod
    def from_options(cls, max_tasks: int | None, max_rss: int | str | None) -> Recycle:
        if max_tasks is not None and (
            isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1
        ):
            raise ConfigurationError(
                f"max_tasks={max_tasks!r}: give the number of tasks (>= 1) a worker runs "
                "before it retires"
            )
        return cls(max_tasks, None if max_rss is None else parse_size(max_rss))

    def over_memory(self) -> str | None:
        """Why the worker should retire for its memory, or None."""
        if self.max_rss is None:
            return None
        rss = peak_rss()
        if rss < self.max_rss:
            return None
        return (
            f"resident memory {rss / 2**20:.0f} MiB reached max_rss {self.max_rss / 2**20:.0f} MiB"
        )
