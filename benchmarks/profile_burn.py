"""A memory burn-down to run under a profiler: preload N tasks, then drain them.

py-spy record -r 1000 -f raw -o burn.raw -- .venv/bin/python -m benchmarks.profile_burn 200000
"""

from __future__ import annotations

import asyncio
import sys

from ._run import drain, enqueue_noops
from .apps import make_app


async def main(n: int) -> None:
    app = make_app("memory://")
    async with app:
        await enqueue_noops(app, n)
        result = await drain(app, n, concurrency=100, timeout=600)
    sys.stdout.write(f"{n / result['elapsed']:,.0f} tasks/s\n")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
