"""``python -m benchmarks.peers [SCENARIO ...] [--peers a,b] [--repeat R] ...``.

Runs taskcore (through the harness in ``benchmarks/scenarios.py``, in this interpreter)
and each peer (through its adapter in ``benchmarks/peers/<peer>.py``, in its own
virtualenv under ``.bench-venvs/``, as a subprocess) on the same Redis / PostgreSQL,
interleaved: every repeat runs every target once per scenario, in an order rotated
from repeat to repeat. Writes ``benchmarks/results/peers-<stamp>.json`` (after every
run, so a partial suite is kept) and ``benchmarks/results/peers-latest.md``.
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
SCENARIOS = ("burn-down", "latency")


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


def _pg_dsn(peer: str) -> str:
    from benchmarks._common import PG_URL

    base = PG_URL.split("?", 1)[0].rsplit("/", 1)[0]
    return f"{base}/bench_peers_{peer.replace('-', '_')}"


def run_peer(peer: str, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks._common import REDIS_URL

    venv, _ = PEERS[peer]
    python = VENVS / venv / "bin" / "python"
    count = max(1, int(args.rate * args.seconds))
    mode = ["burn", "--n", str(args.n)] if scenario == "burn-down" else ["latency"]
    if scenario == "latency":
        mode += ["--count", str(count), "--rate", str(args.rate)]
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        BENCH_REDIS_URL=_with_db(REDIS_URL, args.redis_db),
        BENCH_PG_DSN=_pg_dsn(peer),
        BENCH_CONCURRENCY=str(args.concurrency),
    )
    with tempfile.TemporaryDirectory(prefix=f"peers-{peer}-") as work:
        cmd = [str(python), "-m", "benchmarks.peers._kit", peer.replace("-", "_"), *mode]
        cmd += ["--timeout", str(args.timeout), "--workdir", work]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=args.timeout + 120)
        except BaseException as exc:  # timeout or Ctrl-C: let the driver stop its worker
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


async def run_taskcore(target: str, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import scenarios

    backend = TASKCORE[target]
    try:
        if scenario == "burn-down":
            res = await asyncio.wait_for(
                scenarios.burn_down(backend, args.n, args.concurrency), args.timeout + 60
            )
            return {
                "tasks_per_s": res["tasks_per_s"],
                "elapsed_s": res["elapsed_s"],
                "bulk_tasks_per_s": args.n / res["preload_enqueue_s"],
                "enqueue_s": res["preload_enqueue_s"],
            }
        lat = await asyncio.wait_for(
            scenarios.latency(backend, args.rate, args.seconds), args.timeout + 60
        )
        rss = await scenarios.idle_rss(backend, settle_s=args.idle)
        return {**lat, "rss_mb": rss["rss_mb"], "tree_rss_mb": rss["rss_mb"]}
    except Exception as exc:  # a failed run is recorded, the suite goes on
        return {"error": f"{type(exc).__name__}: {exc}"}


# -- the suite ------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="taskcore side by side with peer libraries (docs/benchmarks.md, Peers)",
    )
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS), metavar="SCENARIO",
                   help=f"{', '.join(SCENARIOS)} (default: both)")  # fmt: skip
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"comma-separated, from {', '.join(PEERS)} (default: all)")  # fmt: skip
    p.add_argument("--no-taskcore", action="store_true", help="run the peers only")
    p.add_argument("--n", type=int, default=20_000, help="burn-down tasks (20,000)")
    p.add_argument("--concurrency", type=int, default=10, help="slots per worker (10)")
    p.add_argument("--rate", type=float, default=100.0, help="latency: enqueues/s (100)")
    p.add_argument("--seconds", type=float, default=5.0, help="latency: duration (5)")
    p.add_argument("--idle", type=float, default=2.0, help="idle seconds before RSS (2)")
    p.add_argument("--repeat", type=int, default=3, help="repeats; medians reported (3)")
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
    if args.redis_url:
        os.environ["TASKCORE_BENCH_REDIS"] = args.redis_url
        return suite(args, peers, argv)
    with private_redis() as url:
        os.environ["TASKCORE_BENCH_REDIS"] = url  # read by benchmarks._common on import
        return suite(args, peers, argv)


def suite(args: argparse.Namespace, peers: list[str], argv: list[str] | None) -> int:
    from benchmarks.peers.table import markdown, summarise
    from benchmarks.report import machine

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
        "config": {
            k: getattr(args, k) for k in ("n", "concurrency", "rate", "seconds", "idle", "repeat")
        },
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
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for scenario in args.scenarios:
            for target in order:
                _say(f"[{time.monotonic() - t_start:6.0f}s] repeat {r + 1}/{args.repeat} "
                     f"{scenario} {target}")  # fmt: skip
                if target in TASKCORE:
                    res = asyncio.run(run_taskcore(target, scenario, args))
                else:
                    res = run_peer(target, scenario, args)
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
