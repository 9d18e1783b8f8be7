"""What every fault scenario needs: worker processes of :mod:`tests.faults.crash_app`,
the ledger of runs, a probe on the backend, and the end-of-scenario checks.

A scenario enqueues numbered tasks, breaks something while worker processes drain
them, and then checks the promise: every accepted task reached a terminal state,
the ledger holds every number, nothing is left running, and the tasks that ran twice
are no more than were in flight when things broke.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import psycopg
from anyio.from_thread import BlockingPortal, start_blocking_portal

import redis as redis_sync
from taskcore import App, State
from taskcore.backend import TaskRecord
from taskcore.errors import BackendError
from taskcore.states import TERMINAL

from . import crash_app

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.crash_app:app"

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], what: str, timeout: float, interval: float = 0.1
) -> T:
    """Poll an observable condition until it holds (returns its value), bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@attrs.frozen
class Ledger:
    """Runs per task number, on the shared server (a Redis hash, or a Postgres table
    ``<name>`` with ``<name>_starts`` and ``<name>_tries`` beside it)."""

    url: str
    name: str

    @property
    def on_redis(self) -> bool:
        return self.url.startswith("redis")

    def env(self) -> dict[str, str]:
        return {"TASKCORE_FAULT_LEDGER_URL": self.url, "TASKCORE_FAULT_LEDGER": self.name}

    def runs(self) -> dict[int, int]:
        if self.on_redis:
            client = redis_sync.Redis.from_url(self.url)
            try:
                return {int(k): int(v) for k, v in client.hgetall(self.name).items()}
            finally:
                client.close()
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(f"SELECT n, count(*) FROM {self.name} GROUP BY n").fetchall()
        return {int(n): int(c) for n, c in rows}

    def starts(self) -> list[str]:
        """``pid:time`` marks of :func:`crash_app.long_job` runs, oldest first."""
        if self.on_redis:
            client = redis_sync.Redis.from_url(self.url, decode_responses=True)
            try:
                marks = [str(m) for m in client.lrange(f"{self.name}:starts", 0, -1)]
            finally:
                client.close()
        else:
            with psycopg.connect(self.url) as conn:
                marks = [r[0] for r in conn.execute(f"SELECT mark FROM {self.name}_starts")]
        return sorted(marks, key=lambda m: float(m.split(":")[1]))


@attrs.frozen
class Target:
    """A backend under test (``url``, what workers connect to) and its ledger."""

    kind: str  # "redis" or "postgres"
    url: str
    ledger: Ledger


class Probe:
    """The test's own view of the backend: one app, kept open in a portal thread."""

    def __init__(self, portal: BlockingPortal, app: App) -> None:
        self._portal = portal
        self.app = app

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._portal.call(fn, *args)

    def states(self) -> dict[State, int]:
        totals: dict[State, int] = dict.fromkeys(State, 0)
        for stats in self.call(self.app.stats):
            for state, n in stats.states.items():
                totals[state] += n
        return totals

    def try_states(self) -> dict[State, int] | None:
        """The states, or None while the backend is unreachable."""
        try:
            return self.states()
        except BackendError:
            return None

    def running(self) -> list[TaskRecord]:
        async def running() -> list[TaskRecord]:
            return await self.app.list_tasks(state=State.RUNNING, limit=100_000)

        return list(self.call(running))

    def records(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        async def get() -> list[TaskRecord]:
            return [r for tid in task_ids if (r := await self.app.backend.get(tid)) is not None]

        return list(self.call(get))

    def enqueue(self, task: Any, calls: Sequence[tuple[Any, ...]], **options: Any) -> list[str]:
        async def enqueue() -> list[str]:
            handles = []
            for i in range(0, len(calls), 5000):
                handles += await self.app.enqueue_many(task, calls[i : i + 5000], **options)
            return [h.id for h in handles]

        return list(self.call(enqueue))

    def wait_succeeded(self, count: int, timeout: float) -> None:
        """Wait until at least ``count`` tasks succeeded (the backend may be away)."""

        def done() -> bool:
            states = self.try_states()
            return states is not None and states[State.SUCCEEDED] >= count

        wait_for(done, f"{count} tasks to succeed", timeout)

    def wait_terminal(
        self, total: int, timeout: float, workers: Workers | None = None
    ) -> dict[State, int]:
        """Wait until ``total`` tasks are terminal; tolerates the backend being away.
        With ``workers``, fails at once if one of them exits."""

        def done() -> dict[State, int] | None:
            if workers is not None:
                workers.assert_alive()
            states = self.try_states()
            return states if states and sum(states[s] for s in TERMINAL) >= total else None

        return wait_for(done, f"{total} tasks to end", timeout, interval=0.25)


@contextmanager
def probe(url: str) -> Iterator[Probe]:
    app = App(url)
    app.tasks.update(crash_app.app.tasks)
    with start_blocking_portal("asyncio") as portal:
        portal.call(app.open)
        try:
            yield Probe(portal, app)
        finally:
            portal.call(app.aclose)


class Workers:
    """Worker processes (``taskcore worker``) of the crash app on ``target``.

    Their logs go to ``log_dir`` (shown when a scenario fails).
    """

    def __init__(
        self,
        target: Target,
        log_dir: Path,
        *,
        concurrency: int = 10,
        lease: float = 2.0,
        processes: int | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.target = target
        self.log_dir = log_dir
        self.concurrency = concurrency
        self.lease = lease
        self.processes = processes
        self.log_level = log_level
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.killed = 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TASKCORE_FAULT_URL": self.target.url,
            **self.target.ledger.env(),
            "PYTHONPATH": str(ROOT),
        }

    def start(self, n: int = 1) -> list[subprocess.Popen[bytes]]:
        argv = [
            sys.executable, "-m", "taskcore", "worker", APP,
            "--concurrency", str(self.concurrency),
            "--lease", str(self.lease),
            "--grace", "5",
            "--maintenance-interval", "0.5",
            "--log-level", self.log_level,
        ]  # fmt: skip
        if self.processes is not None:
            argv += ["--processes", str(self.processes)]
        new = []
        for _ in range(n):
            self.started += 1
            log = (self.log_dir / f"worker-{self.started}.log").open("wb")
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
            new.append(proc)
        self.procs += new
        return new

    def kill_random(self, rng: random.Random) -> subprocess.Popen[bytes]:
        """SIGKILL one live worker (it gets no chance to settle or hand back)."""
        victim = self.procs.pop(rng.randrange(len(self.procs)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.killed += 1
        return victim

    def assert_alive(self) -> None:
        dead = [p.pid for p in self.procs if p.poll() is not None]
        assert not dead, f"worker processes {dead} exited\n{self.logs()}"

    def stop(self) -> list[int | None]:
        """SIGTERM every worker; returns their exit codes (None: had to be killed)."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(None)
        self.procs = []
        return codes

    def logged(self, fragment: str) -> int:
        """How many log lines of all workers so far contain ``fragment``."""
        return sum(
            line.count(fragment)
            for path in self.log_dir.glob("worker-*.log")
            for line in path.read_text(errors="replace").splitlines()
        )

    def logs(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@attrs.frozen
class Summary:
    tasks: int
    runs: int
    duplicates: int
    in_flight: int

    def line(self, scenario: str, kind: str, **extra: object) -> str:
        more = "".join(f", {k}={v}" for k, v in extra.items())
        return (
            f"FAULTS {scenario} [{kind}]: tasks={self.tasks}, runs={self.runs}, lost=0, "
            f"duplicates={self.duplicates} (bound {self.in_flight}){more}"
        )


def check_outcome(
    probe: Probe,
    ledger: Ledger,
    numbers: Sequence[int],
    *,
    in_flight: int,
    succeeded: int | None = None,
) -> Summary:
    """The promise, checked after a scenario: every accepted task ended (``succeeded``
    of them succeeded, default all), nothing is left running or waiting, the ledger
    holds every number, and re-runs are bounded by ``in_flight``."""
    states = probe.states()
    expected = len(numbers) if succeeded is None else succeeded
    assert {s: n for s, n in states.items() if n and s not in TERMINAL} == {}, states
    assert states[State.SUCCEEDED] == expected, states
    runs = ledger.runs()
    missing = sorted(set(numbers) - set(runs))
    assert not missing, f"{len(missing)} accepted tasks never ran, e.g. {missing[:10]}"
    total = sum(runs[n] for n in numbers)
    duplicates = total - len(numbers)
    assert 0 <= duplicates <= in_flight, (duplicates, in_flight)
    return Summary(len(numbers), total, duplicates, in_flight)
