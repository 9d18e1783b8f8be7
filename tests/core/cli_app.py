"""An app for CLI tests."""

from __future__ import annotations

from taskcore import App

app = App("memory://")


@app.task(queue="emails")
async def send(to: str) -> str:
    return to


not_an_app = object()
