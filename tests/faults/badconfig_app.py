"""An app that must not start: ``TASKCORE_FAULT_BAD`` names the one setting that is
outside its documented bounds (see tests/faults/test_startup_config.py)."""

from __future__ import annotations

import os

from taskcore import App, RetryPolicy

URL = os.environ.get("TASKCORE_FAULT_URL", "memory://")
BAD = os.environ.get("TASKCORE_FAULT_BAD", "")


def _app() -> App:
    if BAD == "result_ttl":
        return App(URL, result_ttl=86_400.0)  # one day; the bounds are 30-365 days
    if BAD == "dead_ttl":
        return App(URL, dead_ttl=365 * 86_400.0)  # the bounds are 30-180 days
    return App(URL)


def _retry() -> RetryPolicy | None:
    if BAD == "retries":
        return RetryPolicy(retries=5000)
    if BAD == "jitter":
        return RetryPolicy(backoff="exponential", jitter=1.5)
    if BAD == "delay":
        return RetryPolicy.fixed(retries=3, delay=-1.0)
    return None


app = _app()


@app.task(retry=_retry(), queue="bad queue" if BAD == "queue" else "default")
async def noop() -> None:
    return None
