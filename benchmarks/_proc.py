"""What ``/proc`` says about a worker process tree: its RSS, and its activity while idle
(scenario 9). Standard library only: the peers' kit imports it in their virtualenvs."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

__all__ = ["idle_activity", "rss_mb", "tree", "tree_rss_mb"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (some CLIs fork their workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def tree_rss_mb(root: int) -> float:
    total = 0.0
    for pid in tree(root):
        try:
            total += rss_mb(pid)
        except (OSError, RuntimeError):
            pass
    return total


def _counters(pids: list[int]) -> tuple[float, int]:
    """CPU seconds (user + system, all threads) and context switches (voluntary and
    not, summed over every thread) of ``pids``."""
    ticks, switches = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                            switches += int(line.split()[1])
        except OSError:  # the process or a thread ended meanwhile
            continue
    return ticks / os.sysconf("SC_CLK_TCK"), switches


async def idle_activity(root: int, seconds: float) -> dict[str, Any]:
    """How often an idle worker tree wakes up and what CPU it uses, over ``seconds``:
    a process blocks and is woken once per voluntary context switch, so the switches of
    all its threads count its wake-ups (plus the few times the scheduler preempted it).
    CPU time comes in clock ticks (10 ms): a long window is needed for small figures."""
    pids = tree(root)
    cpu0, sw0 = _counters(pids)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, sw1 = _counters(pids)
    elapsed = time.monotonic() - t0
    return {
        "idle_wakeups_per_s": (sw1 - sw0) / elapsed,
        "idle_cpu_ms_per_s": (cpu1 - cpu0) * 1000 / elapsed,
    }
