"""Tasks for process-pool tests: they must live in an importable module."""

from __future__ import annotations

import os
import time

from taskcore import App, RetryPolicy
from taskcore.memory import MemoryBackend

app = App(backend=MemoryBackend())


@app.task(complexity="complex")
def whoami(n: int) -> dict[str, int]:
    return {"pid": os.getpid(), "n": n * 2}


@app.task(complexity="complex", timeout=0.5, retry=RetryPolicy.fixed(0))
def hang(seconds: float) -> None:
    time.sleep(seconds)


@app.task(complexity="complex", retry=RetryPolicy.fixed(0))
def crash() -> None:
    os._exit(3)
