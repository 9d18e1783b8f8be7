"""Runs: the name an ingestion goes by, and the task id each of its records gets.

A record's task id is derived from the run, the task, the record's position in the
source and its call (the encoded arguments), so running the same source again under
the same run name gives every record the id it had the first time. Every backend
answers the enqueue of an id that exists with ``created=False``: a rerun stores only
what the earlier attempts did not, whatever the task's ``unique`` setting.

Why position *and* call: by position alone, a record that moved (a line inserted
or removed before it between the runs) would take the id of another record and be
counted as in already, never enqueued; by call alone, two equal records of one file
(two calls meant to run twice) would share an id and one would be dropped. With both,
a record is skipped only when the same call sits at the same position: a source that
changed between the runs can enqueue a call again, never lose one.
"""

from __future__ import annotations

import hashlib
from typing import Final

from taskcore.envelope import new_task_id
from taskcore.errors import ConfigurationError

__all__ = ["MAX_RUN", "record_id", "run_name"]

MAX_RUN: Final = 200
"""The longest run name (it is the key of the run's rejects in the journal)."""
_ID_BYTES: Final = 13  # 26 hex digits, as long as new_task_id()'s ids


def run_name(run: str | None) -> str:
    """The run's name: ``run`` checked, or a new unique one when not given.

    Raises:
        ConfigurationError: ``run`` is not 1-200 printable characters.
    """
    if run is None:
        return new_task_id()
    if not isinstance(run, str) or not run or len(run) > MAX_RUN or not run.isprintable():
        raise ConfigurationError(
            f"run={run!r}: name the run with 1-{MAX_RUN} printable characters, e.g. "
            "'import-2026-11-29', and give the same name to run the source again"
        )
    return run


def record_id(run: str, task: str, number: int, args: bytes | memoryview) -> str:
    """The task id of record ``number`` of run ``run`` calling ``task`` with the
    encoded arguments ``args``."""
    h = hashlib.blake2b(digest_size=_ID_BYTES, person=b"taskcore-ingest")
    for part in (run.encode(), task.encode(), str(number).encode()):
        h.update(len(part).to_bytes(4, "big"))  # length-prefixed: no two splits collide
        h.update(part)
    h.update(args)
    return h.hexdigest()
