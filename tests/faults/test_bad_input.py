"""Bad input against a real worker process on Redis and on Postgres.

Bytes that are not a valid envelope, pushed straight into the queue through the
backend, an unknown task name, arguments that fail validation, an envelope over the
size limit and a result that cannot be serialised: each is dead-lettered with its
reason and the worker keeps running the good tasks around it. Refused at enqueue
(nothing stored): arguments of the wrong type, a payload over the limit, a queue
name with whitespace. Task and queue names with odd characters run normally.
(The same dead-letter reasons with an in-process worker: tests/e2e.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import msgspec
import pytest

from taskcore import PayloadTooLarge, State, TaskValidationError
from taskcore.backend import Message
from taskcore.envelope import DEFAULT_MAX_PAYLOAD, Envelope, new_task_id

from . import crash_app
from .harness import Probe, Target, Workers, check_outcome, probe

GOOD = 200
ODD = 20


def _raw(body: bytes, task: str = "raw") -> Message:
    now = time.time()
    return Message(new_task_id(), task, "default", 2, now, now, body)


def _envelope(task: str, args: bytes = b"{}") -> bytes:
    return msgspec.json.encode(Envelope(id="x", task=task, args=msgspec.Raw(args)))


WORK = crash_app.work.name
W = re.escape(WORK)
OVERSIZE = b'{"n": 1, "pad": "' + b"a" * DEFAULT_MAX_PAYLOAD + b'"}'
MALFORMED, UNKNOWN, INVALID = "MalformedEnvelope", "UnknownTask", "InvalidArguments"
# (what, message, expected error type, pattern the error message must match)
BAD = [
    ("garbage bytes", _raw(b"\x00\xffnot json"), MALFORMED, r"^malformed envelope \(json\)"),
    ("JSON of the wrong shape", _raw(b'{"id": 5}'), MALFORMED, r"^malformed .*Expected `str`"),
    ("truncated envelope", _raw(_envelope(WORK, b'{"n": 1}')[:20]), MALFORMED, r"^malformed"),
    (
        "unknown task",
        _raw(_envelope("no.such.task")),
        UNKNOWN,
        r"^no task named 'no\.such\.task' is registered in worker .*; import its module",
    ),
    (
        "unknown task, odd name",
        _raw(_envelope("../{x}*?\u0007\u00e9")),
        UNKNOWN,
        r"^no task named '\.\./\{x\}\*\?\\x07\u00e9' is registered",
    ),
    (
        "argument of the wrong type",
        _raw(_envelope(WORK, b'{"n": "seven"}'), WORK),
        INVALID,
        rf"^task '{W}': cannot decode json payload: Expected `int`, got `str` - at `\$\.n`",
    ),
    (
        "unexpected argument",
        _raw(_envelope(WORK, b'{"n": 1, "colour": "red"}'), WORK),
        INVALID,
        rf"^task '{W}': .*colour",
    ),
    ("missing argument", _raw(_envelope(WORK, b"{}"), WORK), INVALID, rf"^task '{W}': .*`n`"),
    (
        "envelope over the size limit",
        _raw(_envelope(WORK, OVERSIZE), WORK),
        MALFORMED,
        rf"^envelope is \d+ bytes, over the limit of {DEFAULT_MAX_PAYLOAD}$",
    ),
]


def _refused_at_enqueue(p: Probe) -> None:
    """Each refused with a clear error before anything is stored."""
    before = sum(p.states().values())
    refused = rf"task '{W}': invalid arguments: Expected `int`, got `str` - at `\$\.n`; expected"
    with pytest.raises(TaskValidationError, match=refused):
        p.enqueue(crash_app.work, [("seven",)])
    with pytest.raises(PayloadTooLarge, match=r"over the limit of 1048576; pass a reference"):
        p.enqueue(crash_app.store, [(10**6, "x" * DEFAULT_MAX_PAYLOAD)])
    with pytest.raises(TaskValidationError, match=r"invalid queue name 'bad queue': use 1-200"):
        p.enqueue(crash_app.work, [(10**6,)], queue="bad queue")
    assert sum(p.states().values()) == before  # nothing was stored


def _bad_input(target: Target, log_dir: Path) -> str:
    good = list(range(GOOD))
    odd = list(range(GOOD, GOOD + ODD))
    big = GOOD + ODD  # a payload just under the limit runs normally
    with probe(target.url) as p, Workers(target, log_dir) as workers:
        _refused_at_enqueue(p)
        workers.start(1)
        good_ids = p.enqueue(crash_app.work, [(n, False) for n in good[: GOOD // 2]])
        p.call(p.app.backend.enqueue, [m for _, m, _, _ in BAD])
        [leaky] = p.enqueue(crash_app.unserialisable, [()])
        good_ids += p.enqueue(crash_app.work, [(n, False) for n in good[GOOD // 2 :]])
        good_ids += p.enqueue(crash_app.oddly_named, [(n,) for n in odd])
        good_ids += p.enqueue(crash_app.store, [(big, "x" * (DEFAULT_MAX_PAYLOAD - 1000))])
        total = len(good_ids) + len(BAD) + 1
        p.wait_terminal(total, 60, workers)
        workers.assert_alive()  # bad input never takes the worker down

        records = {r.id: r for r in p.records([m.id for _, m, _, _ in BAD] + [leaky])}
        for what, msg, kind, pattern in BAD:
            rec = records[msg.id]
            assert (rec.state, rec.attempt) == (State.DEAD, 1), (what, rec.state)
            [error] = rec.errors
            assert error.type == kind, (what, error)
            assert re.search(pattern, error.message), (what, error.message)
        [error] = records[leaky].errors
        assert (records[leaky].state, error.type) == (State.DEAD, "ResultNotSerializable")
        assert re.match(r"task '.*unserialisable': cannot encode lock as json", error.message)
        dead = {r.id for r in p.call(p.app.dead_letters, None, 100)}
        assert dead == {m.id for _, m, _, _ in BAD} | {leaky}

        assert {r.state for r in p.records(good_ids)} == {State.SUCCEEDED}
        odd_names = {(r.task, r.queue) for r in p.records(good_ids[-ODD - 1 : -1])}
        assert odd_names == {(crash_app.ODD_TASK, crash_app.ODD_QUEUE)}
        assert workers.stop() == [0], workers.logs()
        summary = check_outcome(
            p, target.ledger, [*good, *odd, big], in_flight=0, succeeded=len(good_ids)
        )
    return summary.line("bad-input", target.kind, dead_lettered=len(BAD) + 1)


def test_bad_input_redis(redis_target: Target, tmp_path: Path) -> None:
    print(_bad_input(redis_target, tmp_path))  # noqa: T201


def test_bad_input_postgres(pg_target: Target, tmp_path: Path) -> None:
    print(_bad_input(pg_target, tmp_path))  # noqa: T201
