"""Producer processes of the paced scenarios (stdlib only: the peers' drivers import it
inside their own virtualenvs, taskcore's harness in its own).

One process of single enqueues cannot offer the fastest targets their load (a Python
process sends a few thousand single enqueues a second at best), so the paced plan can
be sent by several processes, and in per-tick batches where the library has a public
bulk or pipelined enqueue:

- the parent writes the plan (:func:`write_plan`: each call's due offset, and its class
  in the priority mix) to a file and starts ``parts`` producer processes;
- each one connects, prints :data:`READY` and waits for one line on stdin: the wall
  clock of offset 0, the same for every process, a moment ahead;
- each sends its share, the calls ``i`` with ``i % parts == part`` (so each gets its
  share of the rate, in due order), with :func:`send_calls`: single enqueues
  (:func:`benchmarks._pace.pace`) or, with a ``tick``, one bulk call per tick and class
  (:func:`benchmarks._pace.ticks`, :func:`benchmarks._pace.pace_ticks`);
- each prints its own ledger, the wall clock just before each of its calls was sent
  (:func:`child`), and the parent checks that the ledgers are disjoint and their union
  is exactly the ids 0..n-1 (:func:`run`): a producer that lost or repeated a call
  fails the run, as a worker ledger that misses a task does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ._pace import pace, pace_ticks, ticks

READY = "ready"
START_MARGIN_S = 0.2  # offset 0 is this far after the last producer said it is ready


class ProducerFailed(RuntimeError):
    pass


def write_plan(path: Path, due: Sequence[float], classes: Sequence[str] | None = None) -> None:
    path.write_text(
        json.dumps({"due": list(due), "classes": None if classes is None else list(classes)})
    )


def read_plan(path: Path) -> tuple[list[float], list[str] | None]:
    plan = json.loads(path.read_text())
    return plan["due"], plan["classes"]


def share(n: int, part: int, parts: int) -> list[int]:
    """The calls producer ``part`` of ``parts`` sends."""
    return list(range(part, n, parts))


async def send_calls(
    due: Sequence[float],
    ids: Sequence[int] | None,
    producers: int,
    tick: float,
    send_one: Callable[[int], Awaitable[object]],
    send_batch: Callable[[list[int]], Awaitable[object]] | None,
    classes: Sequence[str] | None = None,
    start_at: float | None = None,
) -> list[float]:
    """Send the calls ``ids`` (default all) of a plan by ``producers`` coroutines: one
    ``send_batch(ids)`` per ``tick`` seconds and class where given both, else one
    ``send_one(i)`` per call. The wall clock before each call, by id (0.0 for others)."""
    if tick > 0 and send_batch is not None:
        key = classes.__getitem__ if classes is not None else None
        batches = ticks(due, tick, ids, key)
        return await pace_ticks(batches, len(due), send_batch, producers, start_at)
    return await pace(due, send_one, producers, ids, start_at)


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def child(
    plan: Path,
    part: int,
    parts: int,
    producers: int,
    tick: float,
    send_one: Callable[[int], Awaitable[object]],
    send_batch: Callable[[list[int]], Awaitable[object]] | None,
) -> None:
    """A producer process, connected: say ready, wait for offset 0 on stdin, send this
    process's share of the plan, print its ledger (``{"sent": {id: wall clock}}``)."""
    due, classes = read_plan(plan)
    ids = share(len(due), part, parts)
    _emit(READY)
    line = await asyncio.to_thread(sys.stdin.readline)
    sent = await send_calls(due, ids, producers, tick, send_one, send_batch, classes, float(line))
    _emit({"sent": {str(i): sent[i] for i in ids}})


async def _ready(proc: Any, part: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = await asyncio.wait_for(
                proc.stdout.readline(), max(0.1, deadline - time.monotonic())
            )
        except TimeoutError:
            raise ProducerFailed(f"producer {part} was not ready within {timeout:g}s") from None
        if not line:
            err = (await proc.stderr.read()).decode()
            raise ProducerFailed(f"producer {part} exited before it was ready: {err[-1500:]}")
        if line.strip() == json.dumps(READY).encode():
            return


async def _ledger(proc: Any, part: int) -> dict[int, float]:
    out, err = await proc.communicate()
    lines = out.decode().strip().splitlines()
    try:
        sent = json.loads(lines[-1])["sent"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise ProducerFailed(
            f"producer {part} failed ({proc.returncode}): {err.decode()[-1500:]}"
        ) from None
    return {int(i): float(t) for i, t in sent.items()}


def check_ledgers(n: int, ledgers: Sequence[dict[int, float]]) -> list[float]:
    """The wall clock each call was sent at, by id, from the producers' ledgers;
    raises :class:`ProducerFailed` unless they are disjoint and hold exactly 0..n-1."""
    sent = [0.0] * n
    seen: set[int] = set()
    for part, ledger in enumerate(ledgers):
        if twice := seen & ledger.keys():
            raise ProducerFailed(f"producer {part} sent ids another one sent: {sorted(twice)[:5]}")
        seen |= ledger.keys()
        for i, t in ledger.items():
            if not 0 <= i < n:
                raise ProducerFailed(f"producer {part} sent id {i}, outside 0..{n - 1}")
            sent[i] = t
    if len(seen) != n:
        missing = sorted(set(range(n)) - seen)
        raise ProducerFailed(f"the producers sent {len(seen)} of {n} calls (missing {missing[:5]})")
    return sent


async def run(
    argv: Callable[[int], list[str]],
    parts: int,
    n: int,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> list[float]:
    """Start ``parts`` producer processes (``argv(part)``, each running :func:`child`),
    give them one offset 0, wait for their ledgers; the wall clock each of the ``n``
    calls was sent at, by id. Raises :class:`ProducerFailed` (the processes are
    killed) if one fails, is not ready within 120 s, or takes over ``timeout``."""
    procs = []
    try:
        for part in range(parts):  # one by one: the finally kills those started
            procs.append(  # noqa: PERF401
                await asyncio.create_subprocess_exec(
                    *argv(part),
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        for part, proc in enumerate(procs):
            await _ready(proc, part, 120)
        start_at = time.time() + START_MARGIN_S
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at!r}\n".encode())
            await proc.stdin.drain()
        try:
            ledgers = await asyncio.wait_for(
                asyncio.gather(*(_ledger(p, k) for k, p in enumerate(procs))), timeout
            )
        except TimeoutError:
            raise ProducerFailed(f"the producers took over {timeout:g}s") from None
        return check_ledgers(n, ledgers)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
