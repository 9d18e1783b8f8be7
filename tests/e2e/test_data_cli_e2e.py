"""``taskcore ingest``, ``export``, ``status`` and ``monitor`` as a user runs them, in a
process of their own, against Redis and PostgreSQL: the app module says ``memory://``,
and the settings file (``--config``) or the environment (``TASKCORE_URL``) names the
scratch backend, as for ``taskcore worker``. (tests/core/test_data_cli.py covers the
in-memory app.)"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from taskcore import App
from taskcore.formats import task_rows

from .test_config_e2e import ON_SERVERS, ROOT, _url_of

pytestmark = [pytest.mark.anyio, ON_SERVERS]

APP = "tests.core.data_cli_app:app"  # App("memory://"): the backend comes from the settings
TASK = "tests.core.cli_app.send"


def flat(text: str) -> str:
    """Rich wraps long lines to the terminal's width."""
    return " ".join(text.split())


def register(app: App) -> None:
    @app.task(name=TASK, queue="emails")  # as tests/core/data_cli_app.py declares it
    async def send(to: str) -> str:
        raise AssertionError("never run here")


async def taskcore(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m taskcore ARGV`` in a new process: (exit status, stdout, stderr)."""
    import anyio

    environ = {**os.environ, **(env or {}), "COLUMNS": "200"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT)]))
    done = await anyio.run_process(
        [sys.executable, "-m", "taskcore", *argv], env=environ, cwd=ROOT, check=False
    )
    assert isinstance(done, subprocess.CompletedProcess)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def settings_file(app: App, tmp_path: Path, backend_kind: str) -> Path:
    """A settings file naming ``app``'s scratch backend (for ``--config``)."""
    config = tmp_path / "taskcore.toml"
    config.write_text(f'url = "{_url_of(app, backend_kind)}"\n')
    return config


async def queued(app: App, queue: str) -> list[Any]:
    return sorted(row["args"]["to"] for row in task_rows(app, await app.list_tasks(queue=queue)))


async def test_ingest_reaches_the_configured_backend_and_a_named_run_resumes(
    app: App, tmp_path: Path, backend_kind: str
) -> None:
    register(app)
    config = settings_file(app, tmp_path, backend_kind)
    queue = f"q{uuid.uuid4().hex[:8]}"
    mails = tmp_path / "mails.jsonl"
    mails.write_text('{"to": "a@example.com"}\n{"to": 5}\n{"to": "b@example.com"}\n')
    argv = ["ingest", APP, TASK, str(mails), "--queue", queue, "--run", "mails-1"]

    code, out, _ = await taskcore(*argv, "--config", str(config))
    assert code == 1  # record 2 rejected
    assert "read 3, enqueued 2 in 1 batch(es), duplicates 0, rejected 1" in flat(out)
    assert "run mails-1, attempt " in flat(out)
    assert await queued(app, queue) == ["a@example.com", "b@example.com"]

    # the same run again, the URL from the environment this time: nothing doubles
    env = {"TASKCORE_URL": _url_of(app, backend_kind)}
    code, out, _ = await taskcore(*argv, "--batch-size", "1", env=env)
    assert code == 1
    assert "read 3, enqueued 0 in 2 batch(es), duplicates 2, rejected 1" in flat(out)
    assert await queued(app, queue) == ["a@example.com", "b@example.com"]
    kept = await app.rejects("mails-1")
    assert [r.number for r in kept] == [2, 2] and kept[0].attempt != kept[1].attempt

    mails.write_text('{"to": "a@example.com"}\n{"to": "c@example.com"}\n{"to": "b@example.com"}\n')
    code, out, _ = await taskcore(*argv, env=env)  # record 2 fixed
    assert code == 0
    assert "read 3, enqueued 1 in 1 batch(es), duplicates 2, rejected 0" in flat(out)
    assert await queued(app, queue) == ["a@example.com", "b@example.com", "c@example.com"]


async def test_export_reads_the_configured_backend(
    app: App, tmp_path: Path, backend_kind: str
) -> None:
    register(app)
    queue = f"q{uuid.uuid4().hex[:8]}"
    send = app.get_task(TASK).with_options(queue=queue)
    for to in ("=1+1", 'a, "quoted" <b@example.com>'):
        await send.enqueue(to)
    config = settings_file(app, tmp_path, backend_kind)
    argv = ["export", APP, "--config", str(config), "--queue", queue]

    out_csv = tmp_path / "out.csv"
    code, _, err = await taskcore(*argv, "--format", "csv", "-o", str(out_csv))
    assert code == 0, err
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["args"] for r in rows) == [
        '{"to":"=1+1"}',  # JSON text begins with {: a spreadsheet runs no formula
        '{"to":"a, \\"quoted\\" <b@example.com>"}',
    ]
    assert {r["queue"] for r in rows} == {queue} and {r["state"] for r in rows} == {"queued"}

    code, out, err = await taskcore(*argv, "--format", "xml", "--limit", "1")
    assert code == 0, err
    root = ET.parse(io.StringIO(out)).getroot()
    assert len(root) == 1 and root[0].findtext("queue") == queue

    code, _, err = await taskcore(*argv, "--state", "zombie")
    assert code == 2 and "unknown state 'zombie'" in flat(err)


async def test_status_and_monitor_read_the_configured_backend(
    app: App, tmp_path: Path, backend_kind: str
) -> None:
    register(app)
    config = settings_file(app, tmp_path, backend_kind)
    queue = f"q{uuid.uuid4().hex[:8]}"
    send = app.tasks[TASK]
    for to in ("a@example.com", "b@example.com", "c@example.com"):
        await send.with_options(queue=queue).enqueue(to)
    code, out, err = await taskcore("status", APP, "--config", str(config))
    assert code == 0, err
    [row] = [line for line in out.splitlines() if queue in line]
    assert " 3 " in f" {flat(row)} "  # its three waiting tasks, not an empty memory://
    code, out, err = await taskcore("monitor", APP, "--once", "--config", str(config))
    assert queue in out, (out, err)
    # the same through the environment
    env = {"TASKCORE_URL": _url_of(app, backend_kind)}
    code, out, err = await taskcore("status", APP, env=env)
    assert code == 0 and queue in out, err
