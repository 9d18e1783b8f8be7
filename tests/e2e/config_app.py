"""The app of the ``taskcore worker --config`` test: its URL says memory://, the
settings file gives the real one."""

from __future__ import annotations

from taskcore import App

app = App("memory://")


@app.task(name="flag_async")
async def flag_async(customer: str) -> bool:
    return app.flags.enabled("new-billing", key=customer)
