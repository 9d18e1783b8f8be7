"""The app of the ``taskcore worker --config`` test: its URL says memory://, the
settings file gives the real one."""

from __future__ import annotations

from taskcore import App

app = App("memory://")


@app.task(name="flag_async")
async def flag_async(customer: str) -> bool:
    return app.flags.enabled("new-billing", key=customer)


@app.task(name="loop_kind")
async def loop_kind() -> str:
    """The module of the running event loop's class (``uvloop`` or ``asyncio...``)."""
    import asyncio

    return type(asyncio.get_running_loop()).__module__.split(".")[0]
