"""Task logs end to end on memory, Redis and PostgreSQL: what a task logs through
:mod:`logging` while it runs is kept per run in the journal and read back by
``handle.logs()``; retention removes it after ``App(log_ttl=...)``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from taskcore import App, FakeClock, RetryPolicy, TaskFailed
from taskcore.tasklogs import MAX_LINES

from . import proc_tasks
from .test_worker_e2e import worker

pytestmark = pytest.mark.anyio

task_log = logging.getLogger("tests.tasklogs")


@pytest.fixture(autouse=True)
def info_level() -> Iterator[None]:
    # the root logger's default level (WARNING) would drop info() before any handler
    # (and the worker's own warnings reach the handler whatever an earlier test did to
    # the "taskcore" logger: the demo silences it)
    worker_log = logging.getLogger("taskcore.worker")
    before = worker_log.level
    task_log.setLevel(logging.INFO)
    worker_log.setLevel(logging.WARNING)
    yield
    task_log.setLevel(logging.NOTSET)
    worker_log.setLevel(before)


async def test_async_and_thread_tasks_logs_are_kept_per_run(app: App) -> None:
    @app.task(retry=RetryPolicy.explicit([0]))
    async def flaky(n: int) -> int:
        task_log.info("attempt with n=%d", n)
        runs.append(n)
        if len(runs) == 1:
            try:
                raise ValueError("first time")
            except ValueError:
                task_log.exception("failed")
                raise
        return n

    @app.task(pool="thread")
    def blocking(word: str) -> str:
        task_log.warning("in a thread: %s", word)
        return word

    @app.task
    async def quiet() -> None:
        return None

    runs: list[int] = []
    task_log.info("outside any task: not captured")
    async with worker(app):
        h = await flaky.enqueue(7)
        assert await h.result(timeout=5) == 7
        lines = await h.logs()  # written before the result was settled
        assert [(ln.attempt, ln.level, ln.message.splitlines()[0]) for ln in lines] == [
            (1, "INFO", "attempt with n=7"),
            (1, "ERROR", "failed"),
            (1, "WARNING", f"task {h.id} ({flaky.name}) attempt 1 failed: "
             "ValueError('first time'); retry in 0.0s"),
            (2, "INFO", "attempt with n=7"),
        ]  # fmt: skip
        assert "ValueError: first time" in lines[1].message  # with its traceback
        # the worker's own warning about the failed attempt is part of the run's log
        assert [ln.logger for ln in lines] == [
            *["tests.tasklogs"] * 2,
            "taskcore.worker",
            "tests.tasklogs",
        ]
        t = await blocking.enqueue("hi")
        assert await t.result(timeout=5) == "hi"
        [line] = await t.logs()
        assert (line.level, line.message, line.attempt) == ("WARNING", "in a thread: hi", 1)
        q = await quiet.enqueue()
        await q.result(timeout=5)
        assert await q.logs() == []
    assert await app.task_logs("no-such-task") == []


async def test_a_runs_lines_are_bounded(app: App) -> None:
    @app.task
    async def chatty() -> None:
        for i in range(MAX_LINES + 50):
            task_log.info("line %d", i)

    async with worker(app):
        h = await chatty.enqueue()
        await h.result(timeout=5)
        lines = await h.logs()
    assert len(lines) == MAX_LINES + 1
    assert lines[MAX_LINES - 1].message == f"line {MAX_LINES - 1}"
    assert lines[-1].message.startswith("50 more line(s) of this run were not kept")


async def test_process_pool_tasks_logs_are_kept_and_bounded(app: App) -> None:
    chatty = app.task(name="e2e.proc.chatty", complexity="complex")(proc_tasks.chatty.fn)
    fails = app.task(name="e2e.proc.fails", complexity="complex", retry=RetryPolicy.fixed(0))(
        proc_tasks.fails.fn
    )
    async with worker(app, processes=1) as w:
        h = await chatty.enqueue(2)
        assert await h.result(timeout=30) == 2
        lines = await h.logs()
        assert [(ln.attempt, ln.level, ln.logger, ln.message) for ln in lines] == [
            (1, "INFO", "tests.e2e.proc", "child line 0"),
            (1, "INFO", "tests.e2e.proc", "child line 1"),
        ]
        quiet = await chatty.enqueue(0)
        assert await quiet.result(timeout=30) == 0
        assert await quiet.logs() == []
        # the exception comes back from the child with the lines before it, then the
        # worker's own error joins the same run's log
        f = await fails.enqueue("way")
        with pytest.raises(TaskFailed, match="no way"):
            await f.result(timeout=30)
        failed = await f.logs()
        assert [(ln.logger, ln.message.splitlines()[0]) for ln in failed] == [
            ("tests.e2e.proc", "about to fail on way"),
            ("taskcore.worker", f"task {f.id} (e2e.proc.fails) failed after 1 attempt(s): "
             "ValueError('no way')"),
        ]  # fmt: skip
        many = await chatty.enqueue(MAX_LINES + 5)
        assert await many.result(timeout=30) == MAX_LINES + 5
        bounded = await many.logs()
        assert w.busy["process"] == 0
    assert len(bounded) == MAX_LINES + 1
    assert bounded[MAX_LINES - 1].message == f"child line {MAX_LINES - 1}"
    assert bounded[-1].message.startswith("5 more line(s) of this run were not kept")


async def test_logs_expire_after_log_ttl(app: App, clock: FakeClock) -> None:
    @app.task
    async def noisy() -> None:
        task_log.info("kept for log_ttl")

    async with worker(app):
        h = await noisy.enqueue()
        await h.result(timeout=5)
    assert len(await h.logs()) == 1
    clock.advance(app.log_ttl - 1)
    assert await app.trim_journal() == 0
    assert len(await h.logs()) == 1
    clock.advance(2)
    assert await app.trim_journal() == 1
    assert await h.logs() == []
