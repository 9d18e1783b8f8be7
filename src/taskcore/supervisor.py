"""A small process supervisor: keep K worker processes alive.

``taskcore worker app:app --workers K`` runs K copies of the worker command as child
processes and starts a replacement whenever one exits: a worker that retired
(``--max-tasks`` / ``--max-rss``) or one that crashed. A child that keeps dying young is
restarted with an increasing delay (up to 30 s) so a broken deployment does not spin.
SIGINT/SIGTERM to the supervisor are passed on to every child as SIGTERM (each finishes
or hands back its tasks within its grace period); the supervisor exits once all have.

The children run in their own session so a terminal's Ctrl-C reaches only the
supervisor, which decides what the children get.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import anyio
import anyio.abc

__all__ = ["CHILD_ENV", "Supervisor", "child_command"]

log = logging.getLogger("taskcore.supervisor")

CHILD_ENV = "TASKCORE_WORKER_SLOT"  # set in each child: its slot number
YOUNG = 5.0  # seconds: a child that exits sooner counts towards the restart back-off
MAX_BACKOFF = 30.0


class Supervisor:
    """Keeps ``count`` copies of ``command`` running until :meth:`stop`.

    Args:
        command: the child's argv.
        count: processes to keep alive (>= 1).
        env: extra environment for the children.
    """

    def __init__(
        self, command: Sequence[str], count: int, env: Mapping[str, str] | None = None
    ) -> None:
        self.command = list(command)
        self.count = count
        self.env = dict(env or {})
        self.started = 0  # child processes started, replacements included
        self.restarts = 0
        self._procs: dict[int, anyio.abc.Process] = {}
        self._stopping = False
        self._stopped: anyio.Event | None = None

    def stop(self) -> None:
        """Stop restarting; ask every child to stop (SIGTERM)."""
        self._stopping = True
        if self._stopped is not None:
            self._stopped.set()
        for proc in list(self._procs.values()):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def run(self) -> None:
        """Run until :meth:`stop` and every child has exited."""
        self._stopped = anyio.Event()
        async with anyio.create_task_group() as tg:
            for slot in range(self.count):
                tg.start_soon(self._keep, slot)

    async def _keep(self, slot: int) -> None:
        young_exits = 0
        while not self._stopping:
            began = time.monotonic()
            proc = await anyio.open_process(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                env={**os.environ, **self.env, CHILD_ENV: str(slot)},
                start_new_session=True,
            )
            self._procs[slot] = proc
            self.started += 1
            if self._stopping:  # stopped while it was starting
                proc.send_signal(signal.SIGTERM)
            log.info("worker process %d started (slot %d)", proc.pid, slot)
            with anyio.CancelScope(shield=True):
                code = await proc.wait()
            del self._procs[slot]
            if self._stopping:
                log.info("worker process %d stopped (exit %d)", proc.pid, code)
                return
            lived = time.monotonic() - began
            if code == 0:
                log.info("worker process %d retired after %.1fs; starting another", proc.pid, lived)
            else:
                log.warning(
                    "worker process %d exited with %d after %.1fs; starting another",
                    proc.pid,
                    code,
                    lived,
                )
            young_exits = young_exits + 1 if lived < YOUNG else 0
            self.restarts += 1
            if young_exits > 1:
                delay = min(MAX_BACKOFF, 0.5 * 2 ** (young_exits - 2))
                log.warning("slot %d keeps exiting young: next start in %.1fs", slot, delay)
                with anyio.move_on_after(delay):
                    assert self._stopped is not None
                    await self._stopped.wait()


def child_command(argv: Sequence[str]) -> list[str]:
    """The argv that runs ``taskcore`` with the same arguments in a child process."""
    return [sys.executable, "-m", "taskcore", *argv]
