"""``python -m benchmarks.peers [SCENARIO ...] [--peers a,b] [--repeat R] ...``.

Runs taskcore (through its own harness: ``benchmarks/scenarios.py``, ``scaling.py``,
``realistic.py``, in this interpreter) and each peer (through its adapter in
``benchmarks/peers/<peer>.py``, in its own virtualenv under ``.bench-venvs/``, as a
subprocess) on the same Redis / PostgreSQL, interleaved: every repeat runs every
target once per scenario, in an order rotated from repeat to repeat. Writes
``benchmarks/results/peers-<stamp>.json`` (after every run, so a partial suite is
kept) and ``benchmarks/results/peers-latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
VENVS = ROOT / ".bench-venvs"
REQUIREMENTS = ROOT / "benchmarks"

# peer -> (virtualenv / requirements file, backend)
PEERS: dict[str, tuple[str, str]] = {
    "arq": ("arq", "redis"),
    "saq-redis": ("saq", "redis"),
    "taskiq": ("taskiq", "redis"),
    "huey": ("huey", "redis"),
    "dramatiq": ("dramatiq", "redis"),
    "celery": ("celery", "redis"),
    "rq": ("rq", "redis"),
    "saq-pg": ("saq", "postgres"),
    "procrastinate": ("procrastinate", "postgres"),
    "pgqueuer": ("pgqueuer", "postgres"),
}
TASKCORE = {"taskcore-redis": "redis", "taskcore-pg": "postgres"}
# in the order they run: load, priority and burst use the burn-down of the same suite run
SCENARIOS = ("burn-down", "latency", "load", "priority", "scaling", "realistic", "burst")
PACED = ("load", "priority", "burst")  # the scenarios at a fraction of the capacity
LOAD_FRACTIONS = (0.5, 0.9)
SCALE_WORKERS = (1, 2, 4)
SIZES = {"100B": 100, "10KB": 10_000, "1MB": 1_000_000 - 4096}  # 1MB: under taskcore's limit


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# -- virtualenvs ------------------------------------------------------------------------
def ensure_venv(name: str) -> Path:
    """``.bench-venvs/<name>`` built from ``requirements-peers-<name>.txt``; rebuilt when
    that file changes."""
    req = REQUIREMENTS / f"requirements-peers-{name}.txt"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    venv = VENVS / name
    stamp = venv / ".requirements.sha256"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    _say(f"building {venv} from {req.name}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(req)], check=True
    )
    stamp.write_text(digest)
    return python


def ensure_taskcore_venv() -> Path:
    """``.bench-venvs/taskcore``: this checkout (editable) on the pinned dependencies of
    ``taskcore[redis,pg]`` only, for taskcore's worker processes (idle RSS like a user's)."""
    python = ensure_venv("taskcore")
    if subprocess.run([str(python), "-c", "import taskcore"], capture_output=True).returncode:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True
        )
    return python


# -- a private Redis ---------------------------------------------------------------------
@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port, configured like the shared one (no
    persistence). Other test suites on the shared server run ``CLIENT KILL TYPE
    normal``, which drops every worker's connection mid-run; here nobody else connects."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: install it or pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="peers-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(
                            f"private redis-server on port {port} did not start"
                        ) from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


# -- one run of one target ----------------------------------------------------------------
def _with_db(url: str, db: int) -> str:
    base = url.split("?", 1)[0].rstrip("/")
    head, _, last = base.rpartition("/")
    return f"{head if last.isdigit() else base}/{db}"


def _pg_dsn(peer: str, db: str | None = None) -> str:
    """The peer's database, named after this runner process too: two suite runs at once
    on the same server do not drop each other's database."""
    from benchmarks._common import PG_URL

    base = PG_URL.split("?", 1)[0].rsplit("/", 1)[0]
    name = db or f"bench_peers_{peer.replace('-', '_')}_{os.getpid()}"
    return f"{base}/{name}"


@contextlib.contextmanager
def dropping_pg_databases(peers: list[str]) -> Iterator[None]:
    """Drop the PostgreSQL peers' databases of this run when it ends."""
    try:
        yield
    finally:
        import psycopg

        pg = [p for p in peers if PEERS[p][1] == "postgres"]
        if pg:
            with psycopg.connect(_pg_dsn("", "postgres"), autocommit=True) as conn:
                for peer in pg:
                    name = _pg_dsn(peer).rsplit("/", 1)[1]
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _kit(peer: str, argv: list[str], concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run of the peer's driver (``benchmarks.peers._kit``) in its virtualenv."""
    from benchmarks._common import REDIS_URL

    venv, _ = PEERS[peer]
    python = VENVS / venv / "bin" / "python"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        BENCH_REDIS_URL=_with_db(REDIS_URL, args.redis_db),
        BENCH_PG_DSN=_pg_dsn(peer),
        BENCH_CONCURRENCY=str(concurrency),
    )
    with tempfile.TemporaryDirectory(prefix=f"peers-{peer}-") as work:
        cmd = [str(python), "-m", "benchmarks.peers._kit", peer.replace("-", "_"), *argv]
        cmd += ["--timeout", str(args.timeout), "--workdir", work]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=args.timeout + 120)
        except BaseException as exc:  # timeout or Ctrl-C: let the driver stop its workers
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            if isinstance(exc, subprocess.TimeoutExpired):
                return {"error": f"driver timed out after {args.timeout + 120}s"}
            raise
        lines = stdout.strip().splitlines()
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"error": f"driver failed ({proc.returncode}): {stderr[-1500:]}"}
        if proc.returncode != 0 and "error" not in result:
            result["error"] = f"driver exit {proc.returncode}"
        return result


def _phases_arg(phases: list[tuple[str, float, float]]) -> list[str]:
    return [f"--phase={name}:{seconds:g}:{rate:.6g}" for name, seconds, rate in phases]


def _burst_phases(cap: float, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """``--burst-calm`` s at ``--burst-base`` x capacity, ``--burst-seconds`` at ten
    times that, the base again; a lower base if the plan holds over ``--burst-max-tasks``."""
    calm, burst = args.burst_calm, args.burst_seconds
    base = min(args.burst_base * cap, args.burst_max_tasks / (2 * calm + 10 * burst))
    return [("before", calm, base), ("burst", burst, 10 * base), ("after", calm, base)]


def _plans(
    scenario: str, args: argparse.Namespace, cap: float
) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """The paced plans of load (one per level, key suffix ``_50`` / ``_90``) or burst."""
    if scenario == "load":
        return [(f"_{round(f * 100)}", [("", args.load_seconds, f * cap)]) for f in LOAD_FRACTIONS]
    return [("", _burst_phases(cap, args))]


def _producer_args(args: argparse.Namespace) -> list[str]:
    """How the paced scenarios send (``_kit``'s options)."""
    return [
        f"--producers={args.producers}",
        f"--producer-procs={args.producer_procs}",
        f"--tick={args.tick_ms / 1000:g}",
    ]


def _producer_info(target: str, args: argparse.Namespace) -> dict[str, Any]:
    """taskcore's producers, described as ``_kit`` describes a peer's."""
    api = f"enqueue_many per {args.tick_ms:g} ms tick" if args.tick_ms > 0 else "single enqueues"
    return {
        "producer_procs": max(1, args.producer_procs),
        "producer_coroutines": args.producers,
        "producer_api": api,
    }


def _parts(scenario: str, args: argparse.Namespace, cap: float) -> list[tuple[str, str, Any]]:
    """The runs one scenario takes, as (key prefix, key suffix, (``_kit`` argv, worker
    slots)) for a peer; their results are merged by :func:`_merge`."""
    slots = args.concurrency
    if scenario == "burn-down":
        return [("", "", (["burn", f"--n={args.n}"], slots))]
    if scenario == "latency":
        phase = [("", args.seconds, args.rate)]
        idle = [f"--idle={args.idle:g}", f"--idle-window={args.idle_window:g}"]
        return [("", "", (["paced", *idle, *_phases_arg(phase)], slots))]
    if scenario in ("load", "burst"):
        load = ["--idle=0", *_producer_args(args)]
        plans = _plans(scenario, args, cap)
        return [("", tag, (["paced", *load, *_phases_arg(ph)], slots)) for tag, ph in plans]
    if scenario == "priority":
        argv = ["priority", f"--capacity={cap:.6g}", f"--seconds={args.priority_seconds:g}",
                f"--trickle={args.trickle:g}", *_producer_args(args)]  # fmt: skip
        return [("", "", (argv, slots))]
    if scenario == "scaling":
        burn = ["burn", f"--n={args.scale_n}"]
        return [("", f"_{k}w", ([*burn, f"--workers={k}"], slots)) for k in SCALE_WORKERS]
    if scenario == "realistic":
        rc = args.realistic_concurrency
        parts = [("io_", "", (["burn", "--task=io", f"--n={args.io_n}"], rc))]
        parts.append(("cpu_", "", (["burn", "--task=cpu", f"--n={args.cpu_n}"], rc)))
        for label, size in SIZES.items():
            argv = ["burn", "--task=blob", f"--size={size}", f"--n={_payload_n(args)[label]}"]
            parts.append((f"payload_{label}_", "", (argv, rc)))
        return parts
    raise ValueError(scenario)


def _payload_n(args: argparse.Namespace) -> dict[str, int]:
    return {
        "100B": args.blob_n,
        "10KB": max(1, args.blob_n * 2 // 5),
        "1MB": max(5, args.blob_n // 100),
    }


def _merge(scenario: str, parts: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """One result of a scenario from its parts' results (any part failed: the run failed)."""
    out: dict[str, Any] = {}
    for prefix, suffix, res in parts:
        if "error" in res:
            return {"error": f"{prefix}{suffix or ''}: {res['error']}"}
        if "na" in res:
            out[prefix.rstrip("_") or "na"] = "n/a: " + res["na"]
            out |= {k: res[k] for k in ("library", "version") if k in res}
            continue
        for key, value in res.items():
            if key in ("library", "version"):
                out[key] = value
            else:
                out[f"{prefix}{key}{suffix}"] = value
    if scenario == "scaling" and out.get("tasks_per_s_1w"):
        for k in SCALE_WORKERS:
            out[f"speedup_{k}w"] = out[f"tasks_per_s_{k}w"] / out["tasks_per_s_1w"]
    if scenario == "burst" and out.get("before_p99_ms"):
        out["rise_p99_x"] = out["burst_p99_ms"] / out["before_p99_ms"]
    if scenario == "realistic":
        # a peer's burn-down is timed from the first body's end to the last's (_kit's
        # burn): its figure is also the one to set beside taskcore's on that clock
        for part in ("io", *(f"payload_{label}" for label in SIZES)):
            if f"{part}_tasks_per_s" in out:
                out.setdefault(f"{part}_first_to_last_per_s", out[f"{part}_tasks_per_s"])
    return out


def _no_priority(peer: str, args: argparse.Namespace) -> dict[str, Any]:
    """The priority scenario's result where the peer has no priority (``_kit priority
    --capacity 0`` answers at once), else ``{}``."""
    res = _kit(peer, ["priority", "--capacity=0"], args.concurrency, args)
    return _merge("priority", [("", "", res)]) if "na" in res else {}


def run_peer(peer: str, scenario: str, args: argparse.Namespace, cap: float) -> dict[str, Any]:
    parts = []
    for prefix, suffix, (argv, slots) in _parts(scenario, args, cap):
        res = _kit(peer, argv, slots, args)
        parts.append((prefix, suffix, res))
        if "error" in res:
            break
    return _merge(scenario, parts)


# taskcore's realistic figures under the peers' names
_REALISTIC_KEYS = {
    "io_tasks_per_s": "io_tasks_per_s",
    "io_first_to_last_per_s": "io_first_to_last_per_s",
    "cpu_tasks_per_s": "cpu_tasks_per_s",
}
for _label in SIZES:
    _REALISTIC_KEYS[f"payload_{_label}_first_to_last_per_s"] = (
        f"payload_{_label}_first_to_last_per_s"
    )
    _REALISTIC_KEYS[f"payload_{_label}_drain_per_s"] = f"payload_{_label}_tasks_per_s"
    _REALISTIC_KEYS[f"payload_{_label}_enqueue_per_s"] = f"payload_{_label}_bulk_tasks_per_s"


async def _taskcore(
    target: str, scenario: str, args: argparse.Namespace, cap: float
) -> dict[str, Any]:
    from benchmarks import scenarios
    from benchmarks._pace import HIGH, priority_plan, priority_report, report, schedule
    from benchmarks.realistic import realistic
    from benchmarks.scaling import scaling
    from taskcore.priority import Priority

    backend = TASKCORE[target]
    if scenario == "burn-down":
        res = await scenarios.burn_down(backend, args.n, args.concurrency)
        return {
            "tasks_per_s": res["tasks_per_s"],
            "elapsed_s": res["elapsed_s"],
            "bulk_tasks_per_s": args.n / res["preload_enqueue_s"],
            "enqueue_s": res["preload_enqueue_s"],
        }
    if scenario == "latency":
        lat = await scenarios.latency(backend, args.rate, args.seconds)
        rss = await scenarios.idle_rss(backend, settle_s=args.idle, window=args.idle_window)
        return {**lat, **rss, "tree_rss_mb": rss["rss_mb"]}
    if scenario == "scaling":
        return await scaling(backend, args.scale_n, args.concurrency, SCALE_WORKERS)
    if scenario == "priority":
        due, classes = priority_plan(cap, args.priority_seconds, args.trickle)
        prio = [int(Priority.CRITICAL if c == HIGH else Priority.BATCH) for c in classes]
        sent, start = await scenarios.paced(
            backend, due, args.concurrency, args.timeout, args.producers, prio,
            args.producer_procs, args.tick_ms / 1000,
        )  # fmt: skip
        out = priority_report(args.priority_seconds, due, classes, sent, start)
        return {"capacity_per_s": cap, "trickle_per_s": args.trickle, **out,
                **_producer_info(target, args)}  # fmt: skip
    if scenario == "realistic":
        res = await realistic(
            backend, args.io_n, args.cpu_n, _payload_n(args), args.realistic_concurrency
        )
        return {new: res[old] for old, new in _REALISTIC_KEYS.items() if res.get(old) is not None}
    parts = []
    for suffix, phases in _plans(scenario, args, cap):
        sent, start = await scenarios.paced(
            backend, schedule(phases), args.concurrency, args.timeout, args.producers,
            None, args.producer_procs, args.tick_ms / 1000,
        )  # fmt: skip
        parts.append(("", suffix, report(phases, sent, start) | _producer_info(target, args)))
    return _merge(scenario, parts)


async def run_taskcore(
    target: str, scenario: str, args: argparse.Namespace, cap: float
) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(_taskcore(target, scenario, args, cap), args.timeout * 4)
    except Exception as exc:  # a failed run is recorded, the suite goes on
        return {"error": f"{type(exc).__name__}: {exc}"}


def _given_capacity(text: str | None, target: str) -> float | None:
    """``--capacity 5000`` (every target) or ``--capacity huey=3000,taskcore-redis=9000``."""
    if not text:
        return None
    if "=" not in text:
        return float(text)
    given = dict(x.split("=", 1) for x in text.split(",") if x)
    return float(given[target]) if target in given else None


def capacity(target: str, result: dict[str, Any], args: argparse.Namespace) -> float:
    """Tasks/s of the target's burn-down: ``--capacity``, else the median of its
    burn-down runs so far in this suite, else one burn-down of ``--capacity-n`` tasks
    (measured once per suite run). Recorded in ``result["capacity"]``."""
    import statistics

    caps = result.setdefault("capacity", {})
    given = _given_capacity(args.capacity, target)
    if given:
        caps[target] = {"per_s": given, "from": "--capacity"}
    else:
        burns = [r["tasks_per_s"] for r in result["runs"][target].get("burn-down", [])
                 if "tasks_per_s" in r]  # fmt: skip
        if burns:
            caps[target] = {"per_s": statistics.median(burns), "from": "burn-down, this run"}
        elif target not in caps:
            n = args.capacity_n
            quick = argparse.Namespace(**{**vars(args), "n": n})
            res = (
                asyncio.run(run_taskcore(target, "burn-down", quick, 0.0))
                if target in TASKCORE
                else run_peer(target, "burn-down", quick, 0.0)
            )
            if "error" in res:
                raise RuntimeError(f"capacity of {target}: {res['error']}")
            caps[target] = {"per_s": res["tasks_per_s"], "from": f"burn-down of {n:,}, this run"}
    return float(caps[target]["per_s"])


# -- the suite ------------------------------------------------------------------------------------
# scenarios 4-8: (option, type, default, help)
OPTIONS_4_8: list[tuple[str, type, float, str]] = [
    ("--capacity-n", int, 20_000, "tasks of the capacity burn-down when burn-down is not run"),
    ("--load-seconds", float, 10.0, "load: seconds per level"),
    ("--producers", int, 4, "load / priority / burst: producer coroutines per producer process"),
    ("--producer-procs", int, 2, "load / priority / burst: producer processes (0: in the driver)"),
    (
        "--tick-ms",
        float,
        10.0,
        "load / priority / burst: ms per bulk enqueue, where the library "
        "has a public bulk API (0: single enqueues everywhere)",
    ),
    ("--priority-seconds", float, 8.0, "priority: seconds of the low flood and high trickle"),
    ("--trickle", float, 20.0, "priority: high-priority calls/s"),
    ("--scale-n", int, 20_000, "scaling: tasks"),
    ("--realistic-concurrency", int, 100, "realistic: slots per worker"),
    ("--io-n", int, 5_000, "realistic: 10 ms sleep tasks"),
    ("--cpu-n", int, 200, "realistic: 50 ms CPU tasks"),
    ("--blob-n", int, 5_000, "realistic: 100 B payloads (10 KB: 2/5 of it, 1 MB: 1/100)"),
    ("--burst-seconds", float, 30.0, "burst: seconds of ten times the base rate"),
    ("--burst-calm", float, 5.0, "burst: seconds at the base rate before and after"),
    ("--burst-base", float, 0.1, "burst: base rate as a fraction of the capacity"),
    ("--burst-max-tasks", int, 100_000, "burst: most calls in all (a lower base rate if need be)"),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="taskcore side by side with peer libraries (docs/benchmarks.md, Peers)",
    )
    p.add_argument("scenarios", nargs="*", default=["burn-down", "latency"], metavar="SCENARIO",
                   help=f"{', '.join(SCENARIOS)} or all (default: burn-down latency)")  # fmt: skip
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"comma-separated, from {', '.join(PEERS)} (default: all)")  # fmt: skip
    p.add_argument("--no-taskcore", action="store_true", help="run the peers only")
    p.add_argument("--n", type=int, default=20_000, help="burn-down tasks (20,000)")
    p.add_argument("--concurrency", type=int, default=10, help="slots per worker (10)")
    p.add_argument("--rate", type=float, default=100.0, help="latency: enqueues/s (100)")
    p.add_argument("--seconds", type=float, default=20.0, help="latency: duration (20)")
    p.add_argument("--idle", type=float, default=2.0, help="idle seconds before RSS (2)")
    p.add_argument("--idle-window", type=float, default=10.0,
                   help="then seconds of counting the idle worker's wake-ups (10)")  # fmt: skip
    p.add_argument(
        "--taskcore-prefetch",
        default="",
        help="taskcore workers' prefetch (N or auto; default: the library's, none)",
    )
    p.add_argument("--repeat", type=int, default=3, help="repeats; medians reported (3)")
    p.add_argument(
        "--capacity",
        help="load / priority / burst: tasks/s, for every target (5000) or per target "
        "(huey=3000,taskcore-redis=9000); default: the burn-down of this run",
    )
    for flag, kind, default, text in OPTIONS_4_8:
        p.add_argument(flag, type=kind, default=default, help=f"{text} ({default:,g})")
    p.add_argument("--timeout", type=float, default=240.0, help="per-run limit, s (240)")
    p.add_argument(
        "--redis-url", help="an existing Redis for everyone (default: start a private redis-server)"
    )
    p.add_argument("--redis-db", type=int, default=9,
                   help="Redis db index the peers own (9; never 0)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--setup-only", action="store_true", help="build the virtualenvs, run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    peers = [x for x in args.peers.split(",") if x]
    if unknown := set(peers) - set(PEERS):
        p.error(f"unknown peer(s) {sorted(unknown)}: choose from {', '.join(PEERS)}")
    if args.taskcore_prefetch:  # read by benchmarks._common.worker_options, in every worker
        os.environ["TASKCORE_BENCH_PREFETCH"] = args.taskcore_prefetch
    if "all" in args.scenarios:
        args.scenarios = list(SCENARIOS)
    args.scenarios = [x for x in SCENARIOS if x in args.scenarios] + [
        x for x in args.scenarios if x not in SCENARIOS
    ]  # the suite's order: load and burst take the capacity from the burn-down
    if unknown := set(args.scenarios) - set(SCENARIOS):
        p.error(f"unknown scenario(s) {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")
    if args.redis_db == 0:
        p.error("--redis-db 0 is the shared db: the peers clear their db, pick 1..15")
    for venv in sorted({PEERS[x][0] for x in peers}):
        ensure_venv(venv)
    if not args.no_taskcore:
        # read by benchmarks.scenarios on import: taskcore's workers run in their own venv
        os.environ.setdefault("TASKCORE_BENCH_PYTHON", str(ensure_taskcore_venv()))
    if args.setup_only:
        return 0
    # SIGTERM: unwind like Ctrl-C, so the running driver stops its worker process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(private_redis())
        os.environ["TASKCORE_BENCH_REDIS"] = url  # read by benchmarks._common on import
        stack.enter_context(dropping_pg_databases(peers))
        return suite(args, peers, argv)


def suite(args: argparse.Namespace, peers: list[str], argv: list[str] | None) -> int:
    from benchmarks._proc import cpu_times, steal_pct
    from benchmarks.peers.table import markdown, summarise
    from benchmarks.report import host_speed, machine

    targets: list[str] = []
    for backend, tc in (("redis", "taskcore-redis"), ("postgres", "taskcore-pg")):
        group = [x for x in peers if PEERS[x][1] == backend]
        if group and not args.no_taskcore:
            targets.append(tc)
        targets += group
    command = "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {
        "command": command.strip(),
        "machine": asyncio.run(machine()),
        "config": {k: v for k, v in vars(args).items() if k not in ("scenarios", "peers", "out")},
        "redis": os.environ["TASKCORE_BENCH_REDIS"]
        + ("" if args.redis_url else " (private redis-server started by the runner)"),
        "peers": {x: {"venv": PEERS[x][0], "backend": PEERS[x][1]} for x in peers},
        "runs": {t: {s: [] for s in args.scenarios} for t in targets},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"peers-{stamp}.json"
    t_start = time.monotonic()
    for r in range(args.repeat):
        if r:  # the host's speed before every repeat (machine() read it before the first)
            result["machine"]["host_speed_s"].append(host_speed())
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for scenario in args.scenarios:
            for target in order:
                _say(f"[{time.monotonic() - t_start:6.0f}s] repeat {r + 1}/{args.repeat} "
                     f"{scenario} {target}")  # fmt: skip
                res: dict[str, Any] = {}
                cap = 0.0
                if scenario == "priority" and target not in TASKCORE:
                    res = _no_priority(target, args)  # n/a: no capacity burn-down
                if scenario in PACED and not res:
                    try:
                        cap = capacity(target, result, args)
                    except RuntimeError as exc:
                        res = {"error": str(exc)}
                if not res:
                    before = cpu_times()
                    if target in TASKCORE:
                        res = asyncio.run(run_taskcore(target, scenario, args, cap))
                    else:
                        res = run_peer(target, scenario, args, cap)
                    res["host_steal_pct"] = steal_pct(before, cpu_times())
                    if cap and "na" not in res:
                        res["capacity_per_s"] = cap
                result["runs"][target][scenario].append(res)
                _say("    " + json.dumps({k: v for k, v in res.items() if k != "error"})[:200]
                     + (f" ERROR {res['error'][:400]}" if "error" in res else ""))  # fmt: skip
                path.write_text(json.dumps(result, indent=1) + "\n")
    result["medians"] = summarise(result)
    path.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (args.out / "peers-latest.md").write_text(table)
    sys.stdout.write(table)
    _say(f"wrote {path} and {args.out / 'peers-latest.md'}")
    failed = [
        f"{t}/{s}" for t, per in result["runs"].items() for s, rs in per.items()
        if any("error" in x for x in rs)
    ]  # fmt: skip
    if failed:
        _say(f"runs with failures: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
