"""Host resource sampling: CPU, memory, disk, network and this process's memory.

psutil is imported on the first sample, not with this module, so an idle worker (which
never samples) does not load it.

CPU use and network throughput are differences between two readings of the host's
counters. The sampler keeps its own previous readings rather than calling
``psutil.cpu_percent(interval=None)``, whose "since the last call" baseline is one
global shared with every other caller in the process (the worker's autoscaler).
The first sample's CPU figure is the average since boot; its network rates are 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from taskcore.errors import ConfigurationError

from .snapshot import ResourceSample

if TYPE_CHECKING:
    import psutil

__all__ = ["ResourceSampler"]


class _Net(NamedTuple):
    at: float  # time.monotonic()
    sent: int
    recv: int


class ResourceSampler:
    """Samples the host this process runs on.

    Args:
        disk_path: a path on the filesystem whose usage is reported (default ``/``).

    Raises:
        ConfigurationError: ``disk_path`` does not exist.
    """

    def __init__(self, disk_path: str = "/") -> None:
        if not os.path.exists(disk_path):
            raise ConfigurationError(
                f"disk_path={disk_path!r} does not exist: give a path on the filesystem "
                "whose usage the monitor should report, e.g. '/' or the data directory"
            )
        self.disk_path = disk_path
        self._cpu: tuple[float, float] = (0.0, 0.0)  # (busy, total) seconds: since boot
        self._net: _Net | None = None
        self._process: psutil.Process | None = None

    def sample(self) -> ResourceSample:
        """Read the counters now (a few reads of ``/proc`` on Linux; does not block).

        Raises:
            OSError: psutil could not read a counter (``psutil.Error`` derives from it
                on some platforms; the monitor logs either and reports no resources).
        """
        import psutil  # first use only: keep it out of processes that never sample

        if self._process is None:
            self._process = psutil.Process()
        cpu = self._cpu_percent(psutil.cpu_times()._asdict())
        counters = psutil.net_io_counters()
        now = _Net(time.monotonic(), counters.bytes_sent, counters.bytes_recv)
        sent_rate = recv_rate = 0.0
        previous, self._net = self._net, now
        if previous is not None and now.at > previous.at:
            elapsed = now.at - previous.at
            # counters wrap or reset (an interface went away): clamp at 0
            sent_rate = max(0, now.sent - previous.sent) / elapsed
            recv_rate = max(0, now.recv - previous.recv) / elapsed
        return ResourceSample(
            cpu_percent=cpu,
            memory_percent=float(psutil.virtual_memory().percent),
            disk_percent=float(psutil.disk_usage(self.disk_path).percent),
            net_sent_per_s=sent_rate,
            net_recv_per_s=recv_rate,
            process_rss=int(self._process.memory_info().rss),
        )

    def _cpu_percent(self, fields: Mapping[str, float]) -> float:
        """Busy share of the CPU time elapsed since the previous reading, 0-100."""
        total = sum(fields.values())
        # Linux counts guest time inside user/nice as well (as psutil's own cpu_percent)
        total -= fields.get("guest", 0.0) + fields.get("guest_nice", 0.0)
        idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
        busy = total - idle
        last_busy, last_total = self._cpu
        self._cpu = (busy, total)
        elapsed = total - last_total
        if elapsed <= 0:
            return 0.0
        return round(min(100.0, max(0.0, (busy - last_busy) / elapsed * 100)), 1)
