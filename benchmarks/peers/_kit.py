"""What every peer adapter shares; runs INSIDE a peer's virtualenv (stdlib only here).

``python -m benchmarks.peers._kit PEER MODE ...`` drives one adapter for one run and
prints one JSON object on its last stdout line. Modes:

- ``burn``: enqueue N no-op tasks in bulk (timed: that is the bulk-enqueue figure),
  check the library stores N waiting tasks, start ONE worker process, wait until the
  worker's ledger holds all N distinct task ids, stop the worker.
- ``latency``: start one worker, send a warm-up task and wait for it, leave the worker
  idle for ``--idle`` seconds, read its RSS (scenario 9), then enqueue ``--count``
  single tasks at ``--rate`` per second, each carrying ``time.time()`` taken just
  before the enqueue call; the task body records ``time.time() - ts``.

The proof of work is :class:`Ledger`, in the worker process: every task body adds its
id to a set (under a lock: several peers run tasks in threads). When the set holds all
N ids the ledger writes its result file (atomically); the driver waits for that file.
A run whose ledger does not fill before ``--timeout`` fails, it is never "fast".
The burn-down clock runs from the first task body's start to the body that completed
the ledger, both read in the worker (interpreter start-up, imports and connecting are
not counted, as in taskcore's own harness).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent.parent
WARMUP = -1  # task id of the warm-up task in latency mode (not part of the ledger)
OWNER_KEY = "taskcore-bench-peers:owner"


# -- configuration, passed to the driver and the worker through the environment -----
@dataclass(frozen=True)
class Config:
    redis_url: str  # a Redis db index owned by the peer benchmarks (never 0)
    pg_dsn: str  # a database created for this peer by the runner
    queue: str  # a fresh queue name per run
    concurrency: int
    expect: int  # ledger size the worker waits for
    result: str  # the ledger's result file

    @classmethod
    def from_env(cls) -> Config:
        e = os.environ
        return cls(
            redis_url=e.get("BENCH_REDIS_URL", ""),
            pg_dsn=e.get("BENCH_PG_DSN", ""),
            queue=e.get("BENCH_QUEUE", "bench"),
            concurrency=int(e.get("BENCH_CONCURRENCY", "10")),
            expect=int(e.get("BENCH_EXPECT", "0")),
            result=e.get("BENCH_RESULT", ""),
        )

    def env(self) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_PG_DSN": self.pg_dsn,
            "BENCH_QUEUE": self.queue,
            "BENCH_CONCURRENCY": str(self.concurrency),
            "BENCH_EXPECT": str(self.expect),
            "BENCH_RESULT": self.result,
        }


CONFIG = Config.from_env()


# -- the worker-side proof of work --------------------------------------------------------
class Ledger:
    """Records every task body that ran, in the worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.ids: set[int] = set()
        self.bodies = 0
        self.first = 0.0
        self.latencies: list[float] = []
        self.written = False

    def hit(self, i: int, ts: float | None = None) -> None:
        now = time.time()
        if i == WARMUP:
            _write_json(self.config.result + ".ready", {"pid": os.getpid(), "at": now})
            return
        with self.lock:
            if not self.ids:
                self.first = now
            self.bodies += 1
            self.ids.add(i)
            if ts is not None:
                self.latencies.append((now - ts) * 1000)
            full = len(self.ids) >= self.config.expect and not self.written
            if full:
                self.written = True
                report = {
                    "pid": os.getpid(),
                    "first": self.first,
                    "last": now,
                    "distinct": len(self.ids),
                    "bodies": self.bodies,
                    "in_range": all(0 <= k < self.config.expect for k in self.ids),
                    "latencies_ms": self.latencies,
                }
        if full:
            _write_json(self.config.result, report)


LEDGER = Ledger(CONFIG)


def _write_json(path: str, obj: object) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


# -- what an adapter module provides -------------------------------------------------------
class Adapter(Protocol):
    """An adapter module (``benchmarks/peers/<name>.py``) defines ``ADAPTER``.

    Methods may be plain or ``async``. ``open``/``close`` bracket the producer side.
    """

    library: str  # distribution name, for the version in the report
    backend: str  # "redis" | "postgres"

    def open(self) -> Any: ...  # connect the producer; install a schema if the library needs one
    def enqueue_bulk(self, ids: Sequence[int]) -> Any: ...  # as the library allows
    def enqueue_one(self, i: int, ts: float) -> Any: ...  # one single enqueue
    def waiting(self) -> Any: ...  # tasks stored and waiting to run (a count)
    def worker_argv(self) -> list[str]: ...  # ONE worker process, CONFIG.concurrency slots
    def close(self) -> Any: ...


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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_rss_mb(root: int) -> float:
    """RSS of ``root`` and all its descendants (some CLIs fork their workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += rss_mb(pid)
        except (OSError, RuntimeError):
            pass
        todo.extend(children.get(pid, []))
    return total


# -- the driver --------------------------------------------------------------------------------
class RunFailed(Exception):
    pass


def _worker_env(config: Config) -> dict[str, str]:
    env = dict(os.environ)
    env.update(config.env())
    env["PYTHONPATH"] = str(ROOT)
    return env


def _spawn(adapter: Adapter, config: Config, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            adapter.worker_argv(),
            cwd=ROOT,
            env=_worker_env(config),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so we can stop the whole tree
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the tree
    except ProcessLookupError:
        pass
    proc.wait()


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


async def _wait_file(path: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while (found := _read_json(path)) is None:
        if proc.poll() is not None:
            raise RunFailed(f"worker exited ({proc.returncode}): {_tail(log)}")
        if time.monotonic() > deadline:
            raise RunFailed(f"timed out after {timeout}s waiting for {Path(path).name}")
        await asyncio.sleep(0.02)
    return found


def _tail(log: Path) -> str:
    return log.read_text()[-1500:]


def _check_ledger(report: dict[str, Any], n: int) -> None:
    if report["distinct"] != n or not report["in_range"]:
        raise RunFailed(f"ledger holds {report['distinct']} distinct ids, expected 0..{n - 1}")


async def burn(adapter: Adapter, config: Config, n: int, timeout: float, log: Path) -> Any:
    await _call(adapter.open)
    try:
        t0 = time.perf_counter()
        await _call(adapter.enqueue_bulk, range(n))
        enqueue_s = time.perf_counter() - t0
        waiting = await _call(adapter.waiting)
        if waiting != n:
            raise RunFailed(f"after enqueueing {n} tasks the library stores {waiting} waiting")
        proc = _spawn(adapter, config, log)
        try:
            report = await _wait_file(config.result, proc, timeout, log)
        except RunFailed as exc:  # say how far it got
            left = await _call(adapter.waiting)
            raise RunFailed(f"{exc}; {left} of {n} tasks still waiting") from None
        finally:
            _stop(proc)
    finally:
        await _call(adapter.close)
    _check_ledger(report, n)
    elapsed = report["last"] - report["first"]
    return {
        "tasks_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "bulk_tasks_per_s": n / enqueue_s,
        "enqueue_s": enqueue_s,
        "bodies": report["bodies"],
    }


async def latency(
    adapter: Adapter,
    config: Config,
    count: int,
    rate: float,
    idle: float,
    timeout: float,
    log: Path,
) -> Any:
    await _call(adapter.open)
    proc = _spawn(adapter, config, log)
    try:
        await _call(adapter.enqueue_one, WARMUP, time.time())
        ready = await _wait_file(config.result + ".ready", proc, 60, log)
        await asyncio.sleep(idle)
        pid = int(ready["pid"])
        out: dict[str, Any] = {"rss_mb": rss_mb(pid), "tree_rss_mb": tree_rss_mb(proc.pid)}
        out["worker_processes"] = 1 + _descendants(proc.pid)
        if count:
            t0 = time.perf_counter()
            for i in range(count):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _call(adapter.enqueue_one, i, time.time())
            report = await _wait_file(config.result, proc, timeout, log)
            _check_ledger(report, count)
            lat = report["latencies_ms"]
            out.update(
                rate_per_s=rate,
                count=count,
                p50_ms=percentile(lat, 50),
                p95_ms=percentile(lat, 95),
                p99_ms=percentile(lat, 99),
                max_ms=max(lat),
            )
    finally:
        _stop(proc)
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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100), as in benchmarks/_common.py."""
    import math

    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers._kit")
    p.add_argument("peer")
    p.add_argument("mode", choices=["burn", "latency"])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--workdir", type=Path, required=True)
    args = p.parse_args(argv)

    config = Config(
        redis_url=CONFIG.redis_url,
        pg_dsn=CONFIG.pg_dsn,
        queue=f"bench_{os.getpid()}_{os.urandom(3).hex()}",
        concurrency=CONFIG.concurrency,
        expect=args.n if args.mode == "burn" else args.count,
        result=str(args.workdir / "ledger.json"),
    )
    # before the adapter is imported: it builds its app from the environment
    os.environ.update(config.env())
    module = importlib.import_module(f"benchmarks.peers.{args.peer.replace('-', '_')}")
    adapter: Adapter = module.ADAPTER
    if adapter.backend == "redis":
        reset_redis(config.redis_url)
    else:
        reset_pg(config.pg_dsn)
    log = args.workdir / "worker.log"
    # SIGTERM from the runner: unwind, so the finally blocks stop the worker process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.mode == "burn":
            coro = burn(adapter, config, args.n, args.timeout, log)
        else:
            coro = latency(adapter, config, args.count, args.rate, args.idle, args.timeout, log)
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
