"""Child process of the unique-key race: N concurrent enqueues of one key.

``python -m tests.faults.race_child URL KEY N`` prints ``created <count> ids <ids...>``.
"""

from __future__ import annotations

import sys

import anyio

from taskcore import App

app = App(sys.argv[1] if len(sys.argv) > 1 else "memory://")


@app.task
async def charge(order: int) -> None:
    return None


async def main(key: str, n: int) -> None:
    results: list[tuple[bool, str]] = []

    async def one(i: int) -> None:
        handle = await charge.with_options(unique_key=key).enqueue(i)
        results.append((handle.created, handle.id))

    async with app:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    created = sum(1 for c, _ in results if c)
    ids = sorted({tid for _, tid in results})
    print("created", created, "ids", *ids)  # noqa: T201


if __name__ == "__main__":
    anyio.run(main, sys.argv[2], int(sys.argv[3]))
