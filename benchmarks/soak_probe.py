"""Where a worker's memory goes during a soak: ``python -m benchmarks.soak_probe``.

Like the ``soak`` scenario (``--n`` no-ops pre-enqueued, one worker process drains
them), but at every tenth of the settles the worker records, besides its RSS: the
``[heap]`` / anonymous / file-backed parts of ``/proc/self/smaps``, glibc's
``mallinfo2()`` (heap size, bytes in use and free, live mmaps), pymalloc's arenas and
bytes in allocated blocks (``sys._debugmallocstats``), the number of gc-tracked
objects, the largest settle batch so far and, with ``--tracemalloc DEPTH``, the traced
memory (and a snapshot diff, first tenth to end, by traceback). At the end it reports
what clearing ``struct``'s format cache gives back.

``--stall S`` delays 5% of the settles by a random 0-S seconds before they go out, so
that the worker's settle batches grow as they do when the server is slow (the
controlled reproduction of docs/benchmarks.md, "The PostgreSQL soak").
``--prefix "heaptrack -o FILE"`` runs the worker under a tool; ``--kill`` ends the
worker with SIGKILL right after the drain (heaptrack then reports as leaked what the
worker held at that moment). Linux and glibc only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import os
import random
import re
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Sequence
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2
MB = 2**20


def _smaps() -> dict[str, float]:
    out: collections.Counter[str] = collections.Counter()
    kind = "file"
    with open("/proc/self/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                kind = "heap" if name == "[heap]" else "anon" if not name else "file"
                kind = name if name.startswith("[") and name != "[heap]" else kind
            elif line.startswith("Rss:"):
                out[kind] += int(line.split()[1])
    return {k: v / 1024 for k, v in out.items()}


def _pymalloc() -> dict[str, int]:
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    found = {}
    for key, label in (
        ("arenas", "arenas allocated current"),
        ("used", "bytes in allocated blocks"),
    ):
        m = re.search(rf"# {label}\s+=\s+([\d,]+)", text)
        if m:
            found[key] = int(m.group(1).replace(",", ""))
    return found


def _sample(settled: int, rss: float, max_settle: int) -> dict[str, Any]:
    mi = _libc.mallinfo2()
    rec: dict[str, Any] = {
        "settled": settled,
        "rss": rss,
        "smaps": _smaps(),
        "heap": mi.arena / MB,
        "in_use": mi.uordblks / MB,
        "free": mi.fordblks / MB,
        "mmap": mi.hblkhd / MB,
        "pymalloc": _pymalloc(),
        "gc_objects": len(gc.get_objects()),
        "max_settle": max_settle,
    }
    if tracemalloc.is_tracing():
        rec["traced"] = tracemalloc.get_traced_memory()[0] / MB
    return rec


async def _child(url: str, n: int, concurrency: int, stall: float, depth: int) -> dict[str, Any]:
    import psutil

    from benchmarks._common import count_settles
    from benchmarks._run import drain
    from benchmarks.apps import make_app

    if depth:
        tracemalloc.start(depth)
    proc = psutil.Process()
    app = make_app(url)
    step = max(1, n // 10)
    sizes: list[int] = []
    samples: list[dict[str, Any]] = []
    snapshots: list[tracemalloc.Snapshot] = []
    settled = 0
    rng = random.Random(1)

    def on_settled(k: int) -> None:
        nonlocal settled
        before, settled = settled, settled + k
        if settled // step > before // step:
            samples.append(_sample(settled, proc.memory_info().rss / MB, max(sizes, default=0)))
            if depth:
                snapshots.append(tracemalloc.take_snapshot())

    async with app:
        samples.append(_sample(0, proc.memory_info().rss / MB, 0))
        count_settles(app, on_settled)
        settle = app.backend.settle

        async def sizing(outcomes: Sequence[Any]) -> list[bool]:
            sizes.append(len(outcomes))
            if stall and rng.random() < 0.05:
                await asyncio.sleep(rng.uniform(0, stall))
            return await settle(outcomes)

        app.backend.settle = sizing  # type: ignore[method-assign]
        result = await drain(app, n, concurrency, 600)
        in_use = _libc.mallinfo2().uordblks
        struct._clearcache()  # type: ignore[attr-defined]
        result["struct_cache_mb"] = (in_use - _libc.mallinfo2().uordblks) / MB
        result["settle_sizes"] = sorted(collections.Counter(sizes).items())
        result["samples"] = samples
        if len(snapshots) >= 2:
            ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
            first, last = (s.filter_traces(ignore) for s in (snapshots[0], snapshots[-1]))
            result["trace_diff"] = [
                {
                    "kb": stat.size_diff / 1024,
                    "count": stat.count_diff,
                    "where": [f"{fr.filename}:{fr.lineno}" for fr in stat.traceback][-4:],
                }
                for stat in last.compare_to(first, "traceback")[:15]
            ]
        if os.environ.get("SOAK_PROBE_KILL"):
            _out(json.dumps(result))
            os.kill(os.getpid(), signal.SIGKILL)
    return result


async def _prepare(backend: str, n: int) -> str:
    from benchmarks._common import scratch_url
    from benchmarks._run import enqueue_noops
    from benchmarks.apps import make_app

    url = scratch_url(backend)
    async with make_app(url) as app:
        await enqueue_noops(app, n)
    return url


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks._common import drop_scratch

    url = asyncio.run(_prepare(args.backend, args.n))
    try:
        cmd = [*shlex.split(args.prefix), sys.executable, "-m", "benchmarks.soak_probe"]
        cmd += ["--child", "--url", url, "--n", str(args.n), "--stall", str(args.stall)]
        cmd += ["--concurrency", str(args.concurrency), "--tracemalloc", str(args.tracemalloc)]
        env = {**os.environ, "SOAK_PROBE_KILL": "1" if args.kill else ""}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"the worker failed:\n{done.stderr}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    finally:
        asyncio.run(drop_scratch(url))


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _print(res: dict[str, Any]) -> None:
    sizes = res["settle_sizes"]
    _out(
        f"elapsed {res['elapsed']:.1f} s; settles {sum(c for _, c in sizes)}, "
        f"{len(sizes)} sizes, largest {max((s for s, _ in sizes), default=0)}; "
        f"clearing struct's cache at the end freed {res['struct_cache_mb']:.2f} MB"
    )
    _out(
        "settled    rss | [heap]   anon | heap in_use  free  mmap | arenas py_used "
        "| gc_objs max_settle traced"
    )
    for s in res["samples"]:
        pm = s["pymalloc"]
        _out(
            f"{s['settled']:>7} {s['rss']:6.1f} | {s['smaps'].get('heap', 0):6.1f} "
            f"{s['smaps'].get('anon', 0):6.1f} | {s['heap']:4.1f} {s['in_use']:6.2f} "
            f"{s['free']:5.2f} {s['mmap']:5.2f} | {pm.get('arenas', 0):6d} "
            f"{pm.get('used', 0) / MB:7.2f} | {s['gc_objects']:7d} {s['max_settle']:10d} "
            f"{s.get('traced', '')}"
        )
    for d in res.get("trace_diff", []):
        _out(f"{d['kb']:9.1f} KB {d['count']:7d}  " + " <- ".join(reversed(d["where"])))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak_probe", description=__doc__)
    p.add_argument("--backend", choices=["postgres", "redis"], default="postgres")
    p.add_argument("--n", type=int, default=100_000, help="tasks the worker drains")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--stall", type=float, default=0.0, help="delay 5%% of settles by 0-S s")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="DEPTH")
    p.add_argument("--prefix", default="", help='run the worker under e.g. "heaptrack -o f"')
    p.add_argument("--kill", action="store_true", help="SIGKILL the worker after the drain")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = asyncio.run(
            _child(args.url, args.n, args.concurrency, args.stall, args.tracemalloc)
        )
        _out(json.dumps(result))
        return 0
    res = _run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    _print(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
