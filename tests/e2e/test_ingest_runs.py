"""Named ingestion runs, end to end on memory (asyncio and trio), Redis and PostgreSQL:
running a source again under the same run name enqueues only what the earlier attempts
did not, whatever the task's ``unique`` setting, until a finished task is forgotten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskcore import App, FakeClock
from taskcore.backend import Outcome, OutcomeKind
from taskcore.errors import BackendUnavailable, ConfigurationError
from taskcore.ingest import IngestError, ingest, ingest_file
from tests.e2e.test_data import all_tasks, args_of, canonical, register

pytestmark = pytest.mark.anyio

IMAGES = "image_id\n1\n2\n3\ntwo\n5\n6\n"  # record 4 is no int


def failing_from(app: App, monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The backend's enqueue fails from its ``call``-th call on (a server gone down)."""
    real = app.backend.enqueue
    seen = 0

    async def enqueue(messages: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen >= call:
            raise BackendUnavailable("the server went away")
        return await real(messages)

    monkeypatch.setattr(app.backend, "enqueue", enqueue)


def ids_of(report: Any) -> tuple[int, int, int, int]:
    return report.read, report.enqueued, report.duplicates, report.rejected


async def test_a_run_given_again_enqueues_only_what_its_attempts_did_not(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(app)  # data.resize is not unique: the run alone keeps records from doubling
    path = tmp_path / "images.csv"
    path.write_text(IMAGES)

    failing_from(app, monkeypatch, call=2)
    with pytest.raises(IngestError) as failed:
        await ingest_file(app, "data.resize", path, batch_size=2, run="import-1")
    monkeypatch.undo()
    first = failed.value.report
    assert (first.run, ids_of(first)) == ("import-1", (4, 2, 0, 1))
    assert "run it again with run='import-1'" in str(failed.value)

    second = await ingest_file(app, "data.resize", path, batch_size=2, run="import-1")
    assert (second.run, ids_of(second)) == ("import-1", (6, 3, 2, 1))
    records = await all_tasks(app)
    assert args_of(app, records) == canonical([{"image_id": i} for i in (1, 2, 3, 5, 6)])

    third = await ingest_file(app, "data.resize", path, run="import-1")
    assert ids_of(third) == (6, 0, 5, 1)
    assert len(await all_tasks(app)) == 5

    # each attempt kept its own reject of the still bad record 4, told apart by attempt
    kept = await app.rejects("import-1")
    assert [(r.number, r.attempt) for r in kept] == [
        (4, first.attempt),
        (4, second.attempt),
        (4, third.attempt),
    ]
    assert len({first.attempt, second.attempt, third.attempt} - {"import-1"}) == 3

    path.write_text(IMAGES.replace("two", "4"))  # the bad record fixed in place
    fixed = await ingest_file(app, "data.resize", path, run="import-1")
    assert ids_of(fixed) == (6, 1, 5, 0)
    assert args_of(app, await all_tasks(app)) == canonical([{"image_id": i} for i in range(1, 7)])

    other = await ingest_file(app, "data.resize", path, run="import-2")  # another run
    assert ids_of(other) == (6, 6, 0, 0)
    assert len(await all_tasks(app)) == 12


async def test_a_run_not_named_can_be_given_again_by_the_name_it_got(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(app)
    path = tmp_path / "images.jsonl"
    path.write_text("".join(f'{{"image_id": {i}}}\n' for i in range(1, 6)))
    failing_from(app, monkeypatch, call=3)
    with pytest.raises(IngestError) as failed:
        await ingest_file(app, "data.resize", path, batch_size=2)
    monkeypatch.undo()
    first = failed.value.report
    assert first.attempt == first.run and ids_of(first) == (5, 4, 0, 0)

    again = await ingest_file(app, "data.resize", path, batch_size=2, run=first.run)
    assert ids_of(again) == (5, 1, 4, 0)
    fresh = await ingest_file(app, "data.resize", path)  # not named: a new run
    assert fresh.run not in (first.run, again.run) and ids_of(fresh) == (5, 5, 0, 0)
    assert len(await all_tasks(app)) == 10


async def test_equal_records_of_one_run_are_all_enqueued_and_streams_resume_too(
    app: App,
) -> None:
    register(app)
    calls = [{"image_id": 7}, {"image_id": 7}, {"image_id": 8}]
    report = await ingest(app, "data.resize", calls, run="stream-1")
    assert ids_of(report) == (3, 3, 0, 0)  # two equal calls are two tasks
    again = await ingest(app, "data.resize", [*calls, {"image_id": 9}], run="stream-1")
    assert ids_of(again) == (4, 1, 3, 0)
    # a record that moved is enqueued again rather than taken for another one
    moved = await ingest(app, "data.resize", [{"image_id": 8}, *calls], run="stream-1")
    assert ids_of(moved) == (4, 3, 1, 0)  # only record 2 (image 7) is where it was


async def test_a_rerun_enqueues_again_a_finished_task_once_it_is_forgotten(
    app: App, clock: FakeClock
) -> None:
    register(app)
    records = [{"image_id": 1}, {"image_id": 2}]
    first = await ingest(app, "data.resize", records, run="daily")
    assert first.enqueued == 2
    leases = await app.backend.claim(["images"], 10, 30.0, "test-worker")
    now = clock.now()
    outcomes = [
        Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, now, result_ttl=60)
        for lease in leases
    ]
    assert len(outcomes) == 2 and all(await app.backend.settle(outcomes))

    kept = await ingest(app, "data.resize", records, run="daily")
    assert ids_of(kept) == (2, 0, 2, 0)  # finished, but its record is kept: in already
    clock.advance(61)
    await app.backend.reap()  # a worker's maintenance forgets it after result_ttl
    assert await all_tasks(app) == []
    forgotten = await ingest(app, "data.resize", records, run="daily")
    assert ids_of(forgotten) == (2, 2, 0, 0)


@pytest.mark.parametrize("run", ["", "x" * 201, "tab\there", 7])
async def test_a_bad_run_name_is_refused_before_anything_is_read(app: App, run: Any) -> None:
    register(app)
    with pytest.raises(ConfigurationError, match="name the run with 1-200 printable"):
        await ingest(app, "data.resize", [{"image_id": 1}], run=run)
    assert await all_tasks(app) == []
