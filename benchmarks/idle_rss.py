"""Where an idle worker's resident memory goes:
``python -m benchmarks.idle_rss [--backend redis|postgres|both] [--repeat N]``.

Each stage is a fresh interpreter that imports what the worker imports, in the
worker's order, up to that stage (every stage includes the ones above it); the last
row is ``taskcore worker benchmarks.apps:app`` itself after ``--idle`` seconds, the
figure the peers suite reports. Per stage: ``VmRSS`` split into anonymous memory
(Python objects, the malloc heap) and file-backed pages (the interpreter, shared
libraries), medians of ``--repeat`` runs, and the increment over the stage above.
Run it with the worker's interpreter (``.bench-venvs/taskcore/bin/python``) for a
user's dependency set; ``TASKCORE_BENCH_URL`` is set per backend from
``benchmarks._common``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from ._common import drop_scratch, scratch_url
from .apps import URL_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = (
    "import gc; gc.collect(); "
    "print(*(l.split()[1] for l in open('/proc/self/status') "
    "if l.startswith(('RssAnon:', 'RssFile:'))))"
)
DRIVER = {
    "redis": ("redis-py", "import redis.asyncio"),
    "postgres": ("psycopg + psycopg_pool", "import psycopg, psycopg_pool"),
}
PACKAGE = {"redis": "taskcore_redis", "postgres": "taskcore_pg"}


def stages(backend: str) -> list[tuple[str, str]]:
    driver_name, driver = DRIVER[backend]
    return [
        ("interpreter", "pass"),
        ("asyncio (with ssl)", "import asyncio"),
        (driver_name, driver),
        ("anyio", "import anyio"),
        ("msgspec", "import msgspec"),
        ("attrs", "import attrs"),
        ("argparse", "import argparse"),
        ("taskcore (the CLI and core modules)", "import taskcore.cli"),
        (PACKAGE[backend], f"import {PACKAGE[backend]}"),
        (
            "app loaded, worker built",
            "from taskcore.cli import load_app; load_app('benchmarks.apps:app').worker()",
        ),
    ]


def measure(code: str, env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{PROBE}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def worker(env: dict[str, str], idle: float) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "taskcore", "worker", "benchmarks.apps:app"]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "WARNING"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(idle)
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited early ({proc.returncode})")
        with open(f"/proc/{proc.pid}/status") as f:
            kb = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f)
                  if k in ("RssAnon", "RssFile")}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait()
    return kb["RssAnon"] / 1024, kb["RssFile"] / 1024


def breakdown(backend: str, repeat: int, idle: float) -> None:
    url = scratch_url(backend)
    env = {**os.environ, URL_ENV: url}
    rows = [(label, "\n".join(code for _, code in stages(backend)[: i + 1]))
            for i, (label, _) in enumerate(stages(backend))]  # fmt: skip
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in rows}
    runs["idle worker (running)"] = []
    try:
        for _ in range(repeat):  # interleaved: every stage once per round
            for label, code in rows:
                runs[label].append(measure(code, env))
            runs["idle worker (running)"].append(worker(env, idle))
    finally:
        asyncio.run(drop_scratch(url))
    out = [f"\n{backend}: {sys.executable}, medians of {repeat}, MB\n"]
    out.append("| stage | RSS | anonymous | file-backed | + RSS |\n|---|---:|---:|---:|---:|\n")
    prev = None
    for label, samples in runs.items():
        anon = statistics.median(a for a, _ in samples)
        file = statistics.median(f for _, f in samples)
        total = statistics.median(a + f for a, f in samples)
        step = "" if prev is None else f"{total - prev:+.1f}"
        out.append(f"| {label} | {total:.1f} | {anon:.1f} | {file:.1f} | {step} |\n")
        prev = total
    sys.stdout.write("".join(out))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle_rss", description=__doc__)
    p.add_argument("--backend", choices=("redis", "postgres", "both"), default="both")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--idle", type=float, default=2.0, help="idle seconds of the worker (2)")
    args = p.parse_args()
    for backend in ("redis", "postgres") if args.backend == "both" else (args.backend,):
        breakdown(backend, args.repeat, args.idle)
    with open("/proc/loadavg") as f:
        sys.stdout.write(f"\nload average: {f.read().strip()}\n")


if __name__ == "__main__":
    main()
