"""What each of taskcore's modules adds to an idle worker:
``python -m benchmarks.import_cost [--backend redis|postgres] [--repeat N]``.

A fresh interpreter records the order in which ``taskcore worker``'s imports finish
(``taskcore.cli``, the backend package, the app loaded and its worker built). A second
fresh interpreter imports every module outside taskcore first, then taskcore's modules
one by one in that order, each after everything it imports (a package's ``__init__``
runs where it finished, after its submodules, so a submodule does not pull in the
rest), and reads after each the memory tracemalloc sees (live allocations after
``gc.collect()``: code objects, functions, classes, module dicts) and ``VmRSS``.
Medians of ``--repeat`` runs, kB. RSS moves in pages and arenas (and tracemalloc's own
tables count in it), so tracemalloc is the per-module figure. ``.pyc`` files should
exist (``python -m compileall -q src benchmarks``): this machine sets
``PYTHONDONTWRITEBYTECODE=1``, and compiling from source leaves free heap behind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from .apps import URL_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("taskcore", "benchmarks")
URLS = {"redis": "redis://127.0.0.1:6379/0", "postgres": "postgresql://postgres@127.0.0.1/test"}
PACKAGE = {"redis": "taskcore_redis", "postgres": "taskcore_pg"}

# Phase 1: the order in which the worker's imports finish (dependencies first).
ORDER = """
import importlib.abc, importlib.machinery, json, sys
done = []
class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        run = spec.loader.exec_module
        def exec_module(module, run=run, name=name):
            run(module)
            done.append(name)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Recorder())
import taskcore.cli, {package}
from taskcore.cli import load_app
load_app("benchmarks.apps:app").worker()
print(json.dumps([done, sorted(sys.modules)]))
"""

# Phase 2: everything else first, then taskcore's modules one at a time.
MEASURE = """
import gc, importlib, json, sys, tracemalloc, types
order, others = json.loads(sys.argv[1])
for name in others:
    try:
        importlib.import_module(name)
    except Exception:
        pass
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
specs = {{pkg: importlib.util.find_spec(pkg) for pkg in ("taskcore", {package!r})}}
for pkg, spec in specs.items():  # bare packages: their __init__ runs where it finished
    stub = types.ModuleType(pkg)
    stub.__spec__, stub.__path__ = spec, spec.submodule_search_locations
    stub.__file__ = spec.origin
    sys.modules[pkg] = stub
gc.collect()
tracemalloc.start()
rows = []
for name in order:
    gc.collect()
    t0, r0 = tracemalloc.get_traced_memory()[0], rss()
    if name in specs:
        code = specs[name].loader.get_code(name)  # from the .pyc, as an import would
        exec(code, sys.modules[name].__dict__)
    else:
        importlib.import_module(name)
    gc.collect()
    rows.append((name, tracemalloc.get_traced_memory()[0] - t0, rss() - r0))
from taskcore.cli import load_app
gc.collect()
t0, r0 = tracemalloc.get_traced_memory()[0], rss()
load_app("benchmarks.apps:app").worker()
gc.collect()
rows.append(("(app loaded, worker built)", tracemalloc.get_traced_memory()[0] - t0, rss() - r0))
print(json.dumps(rows))
"""


def python(code: str, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.import_cost", description=__doc__)
    p.add_argument("--backend", choices=("redis", "postgres"), default="redis")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    package = PACKAGE[args.backend]
    env = {**os.environ, URL_ENV: URLS[args.backend]}
    done, modules = json.loads(python(ORDER.format(package=package), env=env))
    ours = (*OURS, package)
    order = [m for m in done if m.split(".")[0] in ours]
    others = [m for m in modules if m.split(".")[0] not in ours and not m.startswith("_")]
    runs: dict[str, list[tuple[int, int]]] = {}
    for _ in range(args.repeat):
        got = python(MEASURE.format(package=package), json.dumps([order, others]), env=env)
        for name, traced, rss in json.loads(got):
            runs.setdefault(name, []).append((traced, rss))
    rows = [
        (name, statistics.median(t for t, _ in s) / 1024, statistics.median(r for _, r in s))
        for name, s in runs.items()
    ]
    out = [f"{args.backend}: {sys.executable}, medians of {args.repeat}, kB\n"]
    out.append("| module | traced | RSS |\n|---|---:|---:|\n")
    for name, traced, rss in sorted(rows, key=lambda r: -r[1]):
        out.append(f"| {name} | {traced:.0f} | {rss:.0f} |\n")
    total_t = sum(r[1] for r in rows)
    total_r = sum(r[2] for r in rows)
    out.append(f"| total | {total_t:.0f} | {total_r:.0f} |\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
