"""Process-pool tasks for the e2e tests: the child process imports them by name, so
they live in an importable module. A test registers ``task.fn`` on its own app under the
same name; in the child only this module's task (its function and codec) is used."""

from __future__ import annotations

import logging

from taskcore import App

app = App("memory://")
log = logging.getLogger("tests.e2e.proc")
# the child has its own logging configuration, not the test process's: info() must
# get through this logger's level there
log.setLevel(logging.INFO)


@app.task(name="e2e.proc.chatty", complexity="complex")
def chatty(lines: int) -> int:
    for i in range(lines):
        log.info("child line %d", i)
    return lines


@app.task(name="e2e.proc.fails", complexity="complex")
def fails(word: str) -> None:
    log.warning("about to fail on %s", word)
    raise ValueError(f"no {word}")
