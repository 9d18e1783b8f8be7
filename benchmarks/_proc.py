"""What ``/proc`` says about a worker process tree: its RSS, and its activity while idle
(scenario 9). Standard library only: the peers' kit imports it in their virtualenvs."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

__all__ = [
    "busy_pct",
    "cpu_times",
    "idle_activity",
    "pids_cpu",
    "process_cpu",
    "rss_mb",
    "steal_pct",
    "tree",
    "tree_rss_mb",
]


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


def _threads(pids: list[int]) -> dict[tuple[int, int], tuple[int, int]]:
    """Per thread of ``pids``, keyed by (thread id, start time: ids are reused): its CPU
    in clock ticks (user + system) and its context switches (voluntary and not)."""
    out: dict[tuple[int, int], tuple[int, int]] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # the process ended meanwhile
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                switches = 0
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                            switches += int(line.split()[1])
            except OSError:  # the thread ended meanwhile
                continue
            # utime, stime, starttime (fields 14, 15, 22 of stat)
            out[int(tid), int(fields[19])] = (int(fields[11]) + int(fields[12]), switches)
    return out


async def idle_activity(root: int, seconds: float) -> dict[str, Any]:
    """How often an idle worker tree wakes up and what CPU it uses, over ``seconds``:
    a process blocks and is woken once per voluntary context switch, so the switches of
    all its threads count its wake-ups (plus the few times the scheduler preempted it).
    CPU time comes in clock ticks (10 ms): a long window is needed for small figures."""
    before = _threads(tree(root))
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    after = _threads(tree(root))
    elapsed = time.monotonic() - t0
    # threads there at both ends: their growth; threads started meanwhile: all of theirs;
    # threads that ended meanwhile took theirs with them (counted, not estimated)
    ticks = switches = 0
    for key, (cpu, sw) in after.items():
        cpu0, sw0 = before.get(key, (0, 0))
        ticks += cpu - cpu0
        switches += sw - sw0
    return {
        "idle_wakeups_per_s": switches / elapsed,
        "idle_cpu_ms_per_s": ticks / os.sysconf("SC_CLK_TCK") * 1000 / elapsed,
        "idle_threads_ended": len(before.keys() - after.keys()),
    }


def cpu_times() -> list[int]:
    """The machine's CPU time so far, all CPUs (``/proc/stat``: user, nice, system,
    idle, iowait, irq, softirq, steal, ...; in clock ticks)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def steal_pct(before: list[int], after: list[int]) -> float:
    """The share of the CPU time between two :func:`cpu_times` readings that the
    hypervisor gave to other machines (steal): a run with much of it ran on a slower
    machine than its neighbours."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8])  # guest time is counted in user time already
    return 100.0 * delta[7] / total if total > 0 else 0.0


def busy_pct(before: list[int], after: list[int]) -> float:
    """The share of the CPU time between two :func:`cpu_times` readings that this
    machine spent working (user, nice, system, irq, softirq)."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8])
    return 100.0 * (delta[0] + delta[1] + delta[2] + delta[5] + delta[6]) / total if total else 0.0


def _stat(pid: str | int) -> tuple[str, int] | None:
    """A process's command name and CPU ticks so far (user + system), or None if it
    is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, fields = f.read().rsplit(")", 1)
    except OSError:
        return None
    parts = fields.split()
    return head.split("(", 1)[1], int(parts[11]) + int(parts[12])


def pids_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far."""
    stats = [_stat(pid) for pid in pids]
    return sum(s[1] for s in stats if s is not None) / os.sysconf("SC_CLK_TCK")


def process_cpu(name: str) -> float:
    """CPU seconds (user + system) used so far by every process on this machine whose
    command name is ``name`` (``postgres``, ``redis-server``): a server's own CPU, when
    it runs here."""
    stats = [_stat(pid) for pid in filter(str.isdigit, os.listdir("/proc"))]
    ticks = sum(s[1] for s in stats if s is not None and s[0] == name)
    return ticks / os.sysconf("SC_CLK_TCK")
