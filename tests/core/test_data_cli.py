"""``taskcore ingest`` and ``taskcore export``: exit codes and output, run in this
process against the in-memory app of tests/core/data_cli_app.py (the app keeps its tasks
between commands, as a server would)."""

from __future__ import annotations

import csv
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import anyio
import pytest

from taskcore.cli import main
from tests.core.data_cli_app import app

APP = "tests.core.data_cli_app:app"


def flat(text: str) -> str:
    """Rich wraps long lines to the terminal's width."""
    return " ".join(text.split())


def queue_args(queue: str) -> list[str]:
    return ["--queue", queue]


def count(queue: str) -> int:
    async def run() -> int:
        async with app:
            return len(await app.list_tasks(queue=queue, limit=1000))

    return anyio.run(run)


def test_ingest_exits_0_when_every_record_is_enqueued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    path = tmp_path / "mails.csv"
    path.write_text("to\na@example.com\nb@example.com\n")
    assert main(["ingest", APP, "tests.core.cli_app.send", str(path), *queue_args(queue)]) == 0
    out = flat(capsys.readouterr().out)
    assert "read 2, enqueued 2" in out and "rejected 0" in out
    assert count(queue) == 2


def test_ingest_exits_1_when_a_record_is_rejected_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    path = tmp_path / "mails.data"
    path.write_text('{"to": "a@example.com"}\n{"to": 5}\n{"too": "b"}\n')
    argv = ["ingest", APP, "tests.core.cli_app.send", str(path), "--format", "jsonl"]
    assert main([*argv, *queue_args(queue), "--batch-size", "1"]) == 1
    out = flat(capsys.readouterr().out)
    assert "read 3, enqueued 1" in out and "rejected 2" in out
    assert "record 2 (line 2)" in out and "unknown argument too" in out
    assert count(queue) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no.such.task", "FILE"], "no task named 'no.such.task'"),
        (["tests.core.cli_app.send", "MISSING"], "No such file"),
        (["tests.core.cli_app.send", "FILE.txt"], "give the format"),
        (["tests.core.cli_app.send", "FILE", "--priority", "urgent"], "urgent"),
    ],
)
def test_ingest_exits_2_for_what_it_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "f.csv").write_text("to\na@example.com\n")
    (tmp_path / "f.txt").write_text("to\na@example.com\n")
    args = [
        a.replace("FILE.txt", str(tmp_path / "f.txt"))
        .replace("FILE", str(tmp_path / "f.csv"))
        .replace("MISSING", str(tmp_path / "missing.csv"))
        for a in args
    ]
    queue = f"q{uuid.uuid4().hex[:8]}"
    code = main(["ingest", APP, *args, *queue_args(queue)])
    captured = capsys.readouterr()
    if "--priority" in args:  # an invalid option rejects every record: exit 1
        assert code == 1 and message in flat(captured.out)
    else:
        assert code == 2 and message in flat(captured.err)
    assert count(queue) == 0


def test_export_writes_csv_and_xml_and_refuses_a_bad_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    source = tmp_path / "mails.csv"
    source.write_text('to\n"a, ""quoted"" <b@example.com>"\nc@example.com\n')
    assert main(["ingest", APP, "tests.core.cli_app.send", str(source), "--queue", queue]) == 0
    out = tmp_path / "out.csv"
    argv = ["export", APP, "--queue", queue, "--state", "queued"]
    assert main([*argv, "--format", "csv", "-o", str(out)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["args"] for r in rows) == [
        '{"to":"a, \\"quoted\\" <b@example.com>"}',
        '{"to":"c@example.com"}',
    ]
    capsys.readouterr()
    assert main([*argv, "--format", "xml", "--limit", "1"]) == 0
    root = ET.fromstring(capsys.readouterr().out)
    assert len(root) == 1 and root[0].findtext("queue") == queue
    assert main([*argv[:-1], "zombie"]) == 2
    assert "unknown state 'zombie'" in flat(capsys.readouterr().err)


def test_export_csv_is_spreadsheet_safe_unless_told_otherwise(tmp_path: Path) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    key = '=HYPERLINK("http://evil.example","x")'

    async def enqueue() -> None:
        async with app:
            await (
                app.get_task("tests.core.cli_app.send")
                .with_options(queue=queue, unique_key=key)
                .enqueue("a@example.com")
            )

    anyio.run(enqueue)
    argv = ["export", APP, "--queue", queue, "--format", "csv", "-o"]
    keys = []
    for flag in ([], ["--no-spreadsheet-safe"], ["--spreadsheet-safe"]):
        out = tmp_path / f"out{len(keys)}.csv"
        assert main([*argv, str(out), *flag]) == 0
        with out.open(newline="") as f:
            [row] = csv.DictReader(f)
        keys.append(row["unique_key"])
    assert keys == ["'" + key, key, "'" + key]


def test_ingest_with_a_run_given_again_enqueues_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    path = tmp_path / "mails.json"
    path.write_text('[{"to": "a@example.com"},\n {"to": "b@example.com"}]')
    argv = ["ingest", APP, "tests.core.cli_app.send", str(path), *queue_args(queue)]
    run = f"mails-{queue}"
    assert main([*argv, "--run", run]) == 0
    assert "read 2, enqueued 2" in flat(capsys.readouterr().out)
    assert main([*argv, "--run", run]) == 0
    out = flat(capsys.readouterr().out)
    assert "read 2, enqueued 0 in 1 batch(es), duplicates 2, rejected 0" in out
    assert f"(run {run}, attempt " in out
    assert count(queue) == 2
    assert main([*argv, "--run", ""]) == 2
    assert "run='': name the run with 1-200 printable characters" in flat(capsys.readouterr().err)
    assert count(queue) == 2
