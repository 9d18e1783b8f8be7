"""A producer process of taskcore's paced scenarios (:mod:`benchmarks._produce`):
``python -m benchmarks._producer --url URL --plan FILE --part K --parts P``.

Sends its share of the plan's ``bench.stamp(i)`` calls: single ``enqueue`` calls, or
with ``--tick`` one ``enqueue_many`` per tick and priority. The plan's classes, where
given, are the calls' priorities (``"0"`` .. ``"4"``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from benchmarks import _produce
from benchmarks.apps import QUEUE, make_app


async def produce(
    url: str, plan: Path, part: int, parts: int, coroutines: int, tick: float
) -> None:
    _due, classes = _produce.read_plan(plan)
    app = make_app(url)
    async with app:
        stamp = app.tasks["bench.stamp"]
        await app.backend.stats([QUEUE])  # connect before saying ready

        def send_one(i: int) -> Any:
            if classes is None:
                return stamp.enqueue(i)
            return stamp.with_options(priority=int(classes[i])).enqueue(i)

        def send_batch(ids: list[int]) -> Any:
            options = {} if classes is None else {"priority": int(classes[ids[0]])}
            return app.enqueue_many(stamp, [(i,) for i in ids], **options)

        await _produce.child(plan, part, parts, coroutines, tick, send_one, send_batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks._producer")
    p.add_argument("--url", required=True)
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--part", type=int, required=True)
    p.add_argument("--parts", type=int, required=True)
    p.add_argument("--producers", type=int, default=1, help="coroutines")
    p.add_argument("--tick", type=float, default=0.0, help="seconds per enqueue_many (0: single)")
    args = p.parse_args(argv)
    asyncio.run(produce(args.url, args.plan, args.part, args.parts, args.producers, args.tick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
