"""An app for the ingest and export command tests (its own, so that the tasks they
leave queued do not reach other tests' view of tests/core/cli_app.py)."""

from __future__ import annotations

from taskcore import App

app = App("memory://")


@app.task(name="tests.core.cli_app.send", queue="emails")
async def send(to: str) -> str:
    return to
