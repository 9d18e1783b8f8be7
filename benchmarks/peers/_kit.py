"""What every peer adapter shares; runs INSIDE a peer's virtualenv (stdlib only here).

``python -m benchmarks.peers._kit PEER MODE ...`` drives one adapter for one run and
prints one JSON object on its last stdout line. Modes:

- ``burn``: enqueue N tasks in bulk (timed: that is the bulk-enqueue figure), check the
  library stores N waiting tasks, start ``--workers`` worker processes (1: the
  burn-down; 1, 2, 4: scaling), wait until their ledgers hold all N distinct task ids,
  stop the workers. ``--task`` picks the body: ``noop``, ``io`` (a 10 ms sleep:
  ``asyncio.sleep`` or ``time.sleep``, as the library runs tasks), ``blob`` (checks the
  ``--size`` characters of payload it received) or ``cpu`` (50 ms of CPU, in the
  library's process pool: :meth:`Adapter.pool_argv`; n/a where it has none).
- ``paced``: start one worker, send a warm-up task and wait for it, leave the worker
  idle for ``--idle`` seconds, read its RSS (scenario 9), then send single enqueues
  paced by the ``--phase NAME:SECONDS:RATE`` plan (:mod:`benchmarks._pace`; one phase
  is the latency and load scenarios, three the burst).
- ``priority``: like ``paced`` (no idle wait), the two-class plan of scenario 5
  (:func:`benchmarks._pace.priority_plan`), each call sent by the adapter's
  ``enqueue_prio(i, high)`` at the library's highest or lowest priority; n/a where the
  adapter has none (its ``no_priority`` says why).

The proof of work is :class:`Ledger`, in every process that runs task bodies: each
body records its id and the wall clock it finished at (under a lock: several peers run
tasks in threads). A reporter thread writes how many ids the process holds; when the
counts of all processes add up to N the driver asks for the full ledgers and checks
that their union is exactly the ids 0..N-1 (a worker process per ledger file, so
several workers and process pools are counted alike). A run whose ledgers do not fill
before ``--timeout`` fails, it is never "fast". The burn-down clock runs from the first
body to the last, both read in the workers (interpreter start-up, imports and
connecting are not counted, as in taskcore's own harness).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from benchmarks import _produce
from benchmarks._pace import (
    HIGH,
    Phase,
    priority_plan,
    priority_report,
    report,
    schedule,
)
from benchmarks._proc import idle_activity, rss_mb, tree_rss_mb

ROOT = Path(__file__).resolve().parent.parent.parent
WARMUP = -1  # task id of the warm-up task in paced mode (not part of the ledger)
OWNER_KEY = "taskcore-bench-peers:owner"
IO_SECONDS = 0.01  # the io task's sleep
CPU_MS = 50.0  # the cpu task's busy time
BATCH_BYTES = 8 * 2**20  # bulk enqueue: at most about this much payload per batch
REPORT_EVERY = 0.02  # seconds between a ledger's progress reports


# -- configuration, passed to the driver and the worker through the environment -----
@dataclass(frozen=True)
class Config:
    redis_url: str  # a Redis db index owned by the peer benchmarks (never 0)
    pg_dsn: str  # a database created for this peer by the runner
    queue: str  # a fresh queue name per run
    concurrency: int
    result: str  # prefix of the ledgers' files
    task: str = "noop"  # noop | io | blob | cpu
    size: int = 0  # blob: characters of payload
    priority: bool = False  # the priority scenario: the adapter sets up its priorities

    @classmethod
    def from_env(cls) -> Config:
        e = os.environ
        return cls(
            redis_url=e.get("BENCH_REDIS_URL", ""),
            pg_dsn=e.get("BENCH_PG_DSN", ""),
            queue=e.get("BENCH_QUEUE", "bench"),
            concurrency=int(e.get("BENCH_CONCURRENCY", "10")),
            result=e.get("BENCH_RESULT", ""),
            task=e.get("BENCH_TASK", "noop"),
            size=int(e.get("BENCH_SIZE", "0")),
            priority=e.get("BENCH_PRIORITY") == "1",
        )

    def env(self) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_PG_DSN": self.pg_dsn,
            "BENCH_QUEUE": self.queue,
            "BENCH_CONCURRENCY": str(self.concurrency),
            "BENCH_RESULT": self.result,
            "BENCH_TASK": self.task,
            "BENCH_SIZE": str(self.size),
            "BENCH_PRIORITY": "1" if self.priority else "0",
        }


CONFIG = Config.from_env()
DATA = "x" * CONFIG.size  # the blob task's payload


# -- the worker-side proof of work --------------------------------------------------------
class Ledger:
    """Records every task body that ran in this process (a forked child starts its own)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.pid = 0
        self.done: dict[int, float] = {}
        self.bodies = 0

    def hit(self, i: int) -> None:
        now = time.time()
        if i == WARMUP:
            _write_json(self.config.result + ".ready", {"pid": os.getpid(), "at": now})
            return
        with self.lock:
            if self.pid != os.getpid():  # the first body in this process
                self.pid, self.done, self.bodies = os.getpid(), {}, 0
                threading.Thread(target=self._report, daemon=True).start()
            self.bodies += 1
            self.done[i] = now

    def _report(self) -> None:
        """Write this process's count of ids when it changes, and the whole ledger when
        the driver asks (``<result>.dump`` holds the request's number)."""
        base = f"{self.config.result}.{os.getpid()}"
        told, dumped = -1, None
        while True:
            time.sleep(REPORT_EVERY)
            with self.lock:
                count = len(self.done)
            if count != told:
                _write_json(base + ".count", count)
                told = count
            request = _read_json(self.config.result + ".dump")
            if request is not None and request != dumped:
                with self.lock:
                    snap = {"request": request, "bodies": self.bodies, "done": dict(self.done)}
                _write_json(base + ".json", snap)
                dumped = request


LEDGER = Ledger(CONFIG)


def _check(data: str | None) -> None:
    if CONFIG.task == "blob" and (data is None or len(data) != CONFIG.size):
        raise ValueError(f"payload of {len(data or '')} characters, expected {CONFIG.size}")


def work(i: int, data: str | None = None) -> None:
    """The task body of the libraries that run tasks in threads or processes."""
    _check(data)
    if CONFIG.task == "io":
        time.sleep(IO_SECONDS)
    elif CONFIG.task == "cpu":
        end = time.thread_time() + CPU_MS / 1000
        while time.thread_time() < end:
            pass
    LEDGER.hit(i)


async def awork(i: int, data: str | None = None) -> None:
    """The task body of the asyncio libraries (no process pool: no cpu task)."""
    _check(data)
    if CONFIG.task == "io":
        await asyncio.sleep(IO_SECONDS)
    LEDGER.hit(i)


def task_args(i: int) -> tuple[Any, ...]:
    """Positional arguments of call ``i``: ``(i,)``, plus the payload for ``blob``."""
    return (i, DATA) if CONFIG.task == "blob" else (i,)


def task_kwargs(i: int) -> dict[str, Any]:
    """Keyword arguments of call ``i`` (for the libraries that take them)."""
    return {"i": i, "data": DATA} if CONFIG.task == "blob" else {"i": i}


def chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    """``ids`` in bulk-enqueue batches: 1,000 calls, or fewer to stay near 8 MB."""
    size = max(1, min(1000, BATCH_BYTES // max(1, CONFIG.size)))
    return [ids[k : k + size] for k in range(0, len(ids), size)]


def _write_json(path: str, obj: object) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


# -- what an adapter module provides -------------------------------------------------------
class Adapter(Protocol):
    """An adapter module (``benchmarks/peers/<name>.py``) defines ``ADAPTER``.

    Methods may be plain or ``async``. ``open``/``close`` bracket the producer side.
    """

    library: str  # distribution name, for the version in the report
    backend: str  # "redis" | "postgres"

    def open(self) -> Any: ...  # connect the producer; install a schema if the library needs one
    def enqueue_bulk(self, ids: Sequence[int]) -> Any: ...  # task_args(i) as the library allows
    def enqueue_one(self, i: int) -> Any: ...  # one single enqueue of task_args(i)
    def waiting(self) -> Any: ...  # tasks stored and waiting to run (a count)
    def worker_argv(self) -> list[str]: ...  # ONE worker process, CONFIG.concurrency slots
    def close(self) -> Any: ...

    # optional: enqueue_batch(ids, high) -> one bulk or pipelined enqueue of the calls
    # ids (at enqueue_prio's priority unless high is None), where the library has a
    # public bulk API, described by ``batch_api``; the paced scenarios send their
    # per-tick batches with it (single enqueues without it)
    # optional: open_producer() -> open for a producer process of a paced run, when
    # open() does more than connect (the driver has opened first)
    # optional: enqueue_prio(i, high) -> one single enqueue of task_args(i) at the
    # library's highest (high) or lowest priority (the priority scenario); without it
    # ``no_priority`` says why the library's public API has none
    # optional: pool_argv() -> one worker whose task bodies run in a pool of os.cpu_count()
    # processes, where the library's public API has one (the cpu task); n/a otherwise


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


# -- scratch state: a Redis db the benchmarks own, a database per PG peer -------------------
def reset_redis(url: str) -> None:
    """Delete every key of the benchmark-owned db (keys only: no FLUSHDB)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        if client.dbsize() and not client.exists(OWNER_KEY):
            db = client.connection_pool.connection_kwargs.get("db")
            raise SystemExit(
                f"Redis db {db} holds keys the peer benchmarks did not create; "
                "choose an empty db with --redis-db"
            )
        client.set(OWNER_KEY, "python -m benchmarks.peers")
        batch: list[Any] = []
        for key in client.scan_iter(count=5000):
            if key.decode() != OWNER_KEY:
                batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def reset_pg(dsn: str) -> None:
    """Drop and re-create the peer's own database (named ``bench_peers_*``)."""
    import psycopg

    base, _, name = dsn.rpartition("/")
    if not name.startswith("bench_peers_"):
        raise SystemExit(f"refusing to recreate database {name!r}: not a bench_peers_ database")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# -- the driver --------------------------------------------------------------------------------
class RunFailed(Exception):
    pass


def _worker_env(config: Config) -> dict[str, str]:
    env = dict(os.environ)
    env.update(config.env())
    env["PYTHONPATH"] = str(ROOT)
    return env


class Workers:
    """Worker processes of one run (each in its own session, so its whole tree can be
    stopped) and the ledgers of every process that ran a body."""

    def __init__(self, config: Config, argv: list[str], count: int, workdir: Path) -> None:
        self.config = config
        self.logs = [workdir / f"worker-{k}.log" for k in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for log in self.logs:
            with open(log, "wb") as out:  # own session: the whole tree can be stopped
                proc = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=_worker_env(config),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
        self.request = 0

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise RunFailed(f"worker exited ({proc.returncode}): {log.read_text()[-1500:]}")

    async def wait_file(self, path: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while (found := _read_json(path)) is None:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RunFailed(f"timed out after {timeout}s waiting for {Path(path).name}")
            await asyncio.sleep(0.02)
        return found

    def _files(self, suffix: str) -> dict[str, Any]:
        prefix = Path(self.config.result)
        found = {}
        for path in prefix.parent.glob(f"{prefix.name}.*{suffix}"):
            pid = path.name[len(prefix.name) + 1 : -len(suffix)]
            if pid.isdigit() and (value := _read_json(str(path))) is not None:
                found[pid] = value
        return found

    async def ledgers(self, n: int, timeout: float) -> tuple[dict[str, dict[int, float]], int]:
        """Wait until the ledgers hold the ids 0..n-1; their entries by process, and how
        many bodies ran in all. Raises :class:`RunFailed` on a timeout or a dead worker."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            counts = self._files(".count")
            if sum(counts.values()) >= n:
                self.request += 1
                _write_json(self.config.result + ".dump", self.request)
                while True:
                    dumps = self._files(".json")
                    if all(dumps.get(pid, {}).get("request") == self.request for pid in counts):
                        break
                    if time.monotonic() > deadline:
                        raise RunFailed("timed out waiting for the workers' ledgers")
                    await asyncio.sleep(0.02)
                done = {pid: {int(k): v for k, v in d["done"].items()} for pid, d in dumps.items()}
                union = set().union(*done.values())
                if len(union) >= n:
                    if union != set(range(n)):
                        raise RunFailed(f"ledgers hold ids outside 0..{n - 1}")
                    return done, sum(d["bodies"] for d in dumps.values())
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"timed out after {timeout}s: the ledgers hold {sum(counts.values())} of {n}"
                )
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the tree
            except ProcessLookupError:
                pass
            proc.wait()


async def burn(
    adapter: Adapter, config: Config, n: int, workers: int, timeout: float, workdir: Path
) -> Any:
    if config.task == "cpu":
        if not hasattr(adapter, "pool_argv"):
            return {"na": "no process pool in the library's public API"}
        argv = adapter.pool_argv()
    else:
        argv = adapter.worker_argv()
    await _call(adapter.open)
    try:
        t0 = time.perf_counter()
        await _call(adapter.enqueue_bulk, range(n))
        enqueue_s = time.perf_counter() - t0
        waiting = await _call(adapter.waiting)
        if waiting != n:
            raise RunFailed(f"after enqueueing {n} tasks the library stores {waiting} waiting")
        procs = Workers(config, argv, workers, workdir)
        try:
            done, bodies = await procs.ledgers(n, timeout)
        except RunFailed as exc:  # say how far it got
            left = await _call(adapter.waiting)
            raise RunFailed(f"{exc}; {left} of {n} tasks still waiting") from None
        finally:
            procs.stop()
    finally:
        await _call(adapter.close)
    ends = [t for d in done.values() for t in d.values()]
    elapsed = max(ends) - min(ends)
    out = {
        "tasks_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "bulk_tasks_per_s": n / enqueue_s,
        "enqueue_s": enqueue_s,
        "bodies": bodies,
        "processes": len(done),
        "split": "/".join(str(len(d)) for d in done.values()),
    }
    if len(done) > 1:  # while every process ran bodies: start-up skew left out
        lo = max(min(d.values()) for d in done.values())
        hi = min(max(d.values()) for d in done.values())
        inside = sum(lo <= t <= hi for t in ends)
        out["all_running_tasks_per_s"] = inside / (hi - lo) if hi > lo else 0.0
    return out


@dataclass(frozen=True)
class Producers:
    """How the paced scenarios send their plan: ``procs`` producer processes (0: the
    driver itself), each with ``coroutines`` producers; with a ``tick`` (seconds), one
    call of the adapter's ``enqueue_batch`` per tick and class where it has one."""

    procs: int = 0
    coroutines: int = 1
    tick: float = 0.0
    peer: str = ""  # the adapter's module name, for the producer processes

    def api(self, adapter: Adapter) -> str:
        """The enqueue API the producers use with ``adapter``."""
        if self.tick > 0 and hasattr(adapter, "enqueue_batch"):
            return (
                f"{getattr(adapter, 'batch_api', 'enqueue_batch')} per {self.tick * 1000:g} ms tick"
            )
        return "single enqueues"

    def describe(self, adapter: Adapter) -> dict[str, Any]:
        return {
            "producer_procs": max(1, self.procs),
            "producer_coroutines": self.coroutines,
            "producer_api": self.api(adapter),
        }


def _senders(
    adapter: Adapter, classes: Sequence[str] | None, coroutines: int
) -> tuple[Callable[[int], Awaitable[Any]], Callable[[list[int]], Awaitable[Any]] | None]:
    """``enqueue_one`` (``enqueue_prio`` with ``classes``) and ``enqueue_batch`` as
    coroutines; in a thread when they block and several coroutines share the loop (the
    libraries' clients are thread-safe)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if coroutines > 1 and not inspect.iscoroutinefunction(fn):
            return lambda *a: asyncio.to_thread(fn, *a)
        return lambda *a: _call(fn, *a)

    if classes is None:
        one = wrap(adapter.enqueue_one)
        send_one: Callable[[int], Awaitable[Any]] = one
    else:
        prio = wrap(adapter.enqueue_prio)  # type: ignore[attr-defined]
        send_one = lambda i: prio(i, classes[i] == HIGH)  # noqa: E731
    batch = getattr(adapter, "enqueue_batch", None)
    if batch is None:
        return send_one, None
    many = wrap(batch)
    if classes is None:
        return send_one, lambda ids: many(ids, None)
    return send_one, lambda ids: many(ids, classes[ids[0]] == HIGH)  # one class a batch


async def produce(
    adapter: Adapter,
    config: Config,
    due: list[float],
    classes: list[str] | None,
    producers: Producers,
    workdir: Path,
    timeout: float,
) -> list[float]:
    """Send the plan (:mod:`benchmarks._produce`); the wall clock before each call."""
    if producers.procs <= 0:
        one, batch = _senders(adapter, classes, producers.coroutines)
        return await _produce.send_calls(
            due, None, producers.coroutines, producers.tick, one, batch, classes
        )
    plan = workdir / "plan.json"
    _produce.write_plan(plan, due, classes)

    def argv(part: int) -> list[str]:
        return [
            sys.executable, "-m", "benchmarks.peers._kit", producers.peer, "produce",
            f"--plan={plan}", f"--part={part}", f"--parts={producers.procs}",
            f"--producers={producers.coroutines}", f"--tick={producers.tick!r}",
            f"--workdir={workdir}",
        ]  # fmt: skip

    try:
        return await _produce.run(
            argv, producers.procs, len(due), timeout, _worker_env(config), ROOT
        )
    except _produce.ProducerFailed as exc:
        raise RunFailed(str(exc)) from None


async def produce_child(
    adapter: Adapter, plan: Path, part: int, parts: int, coroutines: int, tick: float
) -> None:
    """One producer process (``_kit PEER produce``): the adapter's producer side, on the
    driver's queue (from the environment)."""
    _due, classes = _produce.read_plan(plan)
    await _call(getattr(adapter, "open_producer", adapter.open))
    try:
        one, batch = _senders(adapter, classes, coroutines)
        await _produce.child(plan, part, parts, coroutines, tick, one, batch)
    finally:
        await _call(adapter.close)


async def paced(
    adapter: Adapter,
    config: Config,
    phases: list[Phase],
    idle: float,
    timeout: float,
    workdir: Path,
    producers: Producers = Producers(),
    idle_window: float = 0.0,
) -> Any:
    await _call(adapter.open)
    procs = Workers(config, adapter.worker_argv(), 1, workdir)
    try:
        await _call(adapter.enqueue_one, WARMUP)
        ready = await procs.wait_file(config.result + ".ready", 60)
        await asyncio.sleep(idle)
        root = procs.procs[0].pid
        out: dict[str, Any] = {
            "rss_mb": rss_mb(int(ready["pid"])),
            "tree_rss_mb": tree_rss_mb(root),
        }
        out["worker_processes"] = 1 + _descendants(root)
        if idle_window > 0:
            out |= await idle_activity(root, idle_window)
        if phases:
            due = schedule(phases)
            sent = await produce(adapter, config, due, None, producers, workdir, timeout)
            done, _bodies = await procs.ledgers(len(due), timeout)
            end = {i: t for d in done.values() for i, t in d.items()}
            out |= report(phases, sent, [end[i] for i in range(len(due))])
            out |= producers.describe(adapter)
    finally:
        procs.stop()
        await _call(adapter.close)
    return out


async def priority(
    adapter: Adapter,
    config: Config,
    cap: float,
    seconds: float,
    trickle: float,
    timeout: float,
    workdir: Path,
    producers: Producers = Producers(),
) -> Any:
    """Scenario 5 with two classes (:func:`benchmarks._pace.priority_plan`)."""
    enqueue_prio = getattr(adapter, "enqueue_prio", None)
    reason = getattr(adapter, "no_priority", None)
    if reason or enqueue_prio is None:
        return {"na": reason or "no priority in the public API"}
    if cap <= 0:  # the runner asks whether the scenario applies
        return {"applies": "yes"}
    due, classes = priority_plan(cap, seconds, trickle)
    await _call(adapter.open)
    procs = Workers(config, adapter.worker_argv(), 1, workdir)
    try:
        await _call(adapter.enqueue_one, WARMUP)
        await procs.wait_file(config.result + ".ready", 60)
        sent = await produce(adapter, config, due, classes, producers, workdir, timeout)
        done, _bodies = await procs.ledgers(len(due), timeout)
        end = {i: t for d in done.values() for i, t in d.items()}
        out: dict[str, Any] = {"capacity_per_s": cap, "trickle_per_s": trickle}
        out |= priority_report(seconds, due, classes, sent, [end[i] for i in range(len(due))])
        out |= producers.describe(adapter)
    finally:
        procs.stop()
        await _call(adapter.close)
    return out


def _descendants(root: int) -> int:
    """Processes in the worker's session besides the one we started."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != root:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == root:  # session id: the worker was started in a new session
                count += 1
    return count


def _phase(text: str) -> Phase:
    name, seconds, rate = text.split(":")
    return name, float(seconds), float(rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers._kit")
    p.add_argument("peer")
    p.add_argument("mode", choices=["burn", "paced", "priority", "produce"])
    p.add_argument("--n", type=int, default=20_000, help="burn: tasks")
    p.add_argument("--workers", type=int, default=1, help="burn: worker processes")
    p.add_argument("--task", choices=["noop", "io", "blob", "cpu"], default="noop")
    p.add_argument("--size", type=int, default=0, help="blob: characters of payload")
    p.add_argument("--phase", type=_phase, action="append", default=[],
                   help="paced: NAME:SECONDS:RATE, repeatable (none: idle RSS only)")  # fmt: skip
    p.add_argument(
        "--producers",
        type=int,
        default=1,
        help="paced, priority: producer coroutines (per producer process)",
    )
    p.add_argument(
        "--producer-procs",
        type=int,
        default=0,
        help="paced, priority: producer processes (0: the driver itself)",
    )
    p.add_argument(
        "--tick",
        type=float,
        default=0.0,
        help="paced, priority: seconds per batch of the adapter's enqueue_batch "
        "(0, or no enqueue_batch: single enqueues)",
    )
    p.add_argument("--plan", type=Path, help="produce: the plan file")
    p.add_argument("--part", type=int, default=0, help="produce: this producer's number")
    p.add_argument("--parts", type=int, default=1, help="produce: producers in all")
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--idle-window", type=float, default=0.0,
                   help="paced: then count the idle worker's wake-ups this long")  # fmt: skip
    p.add_argument("--capacity", type=float, default=1000.0, help="priority: tasks/s")
    p.add_argument("--seconds", type=float, default=8.0, help="priority: seconds")
    p.add_argument("--trickle", type=float, default=20.0, help="priority: high calls/s")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--workdir", type=Path, required=True)
    args = p.parse_args(argv)
    if args.mode == "produce":  # a producer process of a paced run: the driver's queue
        module = importlib.import_module(f"benchmarks.peers.{args.peer.replace('-', '_')}")
        asyncio.run(
            produce_child(
                module.ADAPTER, args.plan, args.part, args.parts, args.producers, args.tick
            )
        )
        return 0
    producers = Producers(args.producer_procs, args.producers, args.tick, args.peer)

    config = Config(
        redis_url=CONFIG.redis_url,
        pg_dsn=CONFIG.pg_dsn,
        queue=f"bench_{os.getpid()}_{os.urandom(3).hex()}",
        concurrency=CONFIG.concurrency,
        result=str(args.workdir / "ledger"),
        task=args.task,
        size=args.size,
        priority=args.mode == "priority",
    )
    # before the adapter is imported: it builds its app from the environment
    os.environ.update(config.env())
    module = importlib.import_module(f"benchmarks.peers.{args.peer.replace('-', '_')}")
    adapter: Adapter = module.ADAPTER
    if adapter.backend == "redis":
        reset_redis(config.redis_url)
    else:
        reset_pg(config.pg_dsn)
    # SIGTERM from the runner: unwind, so the finally blocks stop the worker processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.mode == "burn":
            coro = burn(adapter, config, args.n, args.workers, args.timeout, args.workdir)
        elif args.mode == "priority":
            coro = priority(
                adapter, config, args.capacity, args.seconds, args.trickle, args.timeout,
                args.workdir, producers,
            )  # fmt: skip
        else:
            coro = paced(
                adapter, config, args.phase, args.idle, args.timeout, args.workdir, producers,
                args.idle_window,
            )  # fmt: skip
        result = asyncio.run(coro)
    except RunFailed as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}) + "\n")
        return 1
    finally:
        if adapter.backend == "redis":
            reset_redis(config.redis_url)
    from importlib import metadata

    result["library"] = adapter.library
    result["version"] = metadata.version(adapter.library)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
