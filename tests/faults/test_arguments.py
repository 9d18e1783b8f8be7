"""Hypothesis-generated arguments: each call either enqueues and round-trips exactly,
or is refused with TaskValidationError and nothing is stored."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import anyio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskcore import App, TaskValidationError
from taskcore.envelope import Envelope
from taskcore.memory import MemoryBackend

app = App(backend=MemoryBackend())


@app.task
def typed(
    n: int,
    label: str,
    ratio: float,
    flags: list[bool],
    scores: dict[str, int],
    blob: bytes = b"",
    when: dt.datetime | None = None,
) -> None:
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


anything = st.one_of(
    st.integers(),
    st.text(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(),
    st.lists(st.integers()),
    st.dictionaries(st.text(), st.integers()),
)


@settings(max_examples=300, deadline=None)
@example(n=1, label="a", ratio=0.5, flags=[True], scores={"x": 1}, blob=b"\x00", when=None)
@example(n="1", label="a", ratio=0.5, flags=[], scores={}, blob=b"", when=None)
@given(
    n=st.one_of(st.integers(), anything),
    label=st.one_of(st.text(), anything),
    ratio=st.one_of(st.floats(), anything),
    flags=st.one_of(st.lists(st.booleans()), anything),
    scores=st.one_of(st.dictionaries(st.text(), st.integers()), anything),
    blob=st.one_of(st.binary(), anything),
    when=st.one_of(st.none(), st.datetimes(timezones=st.just(dt.UTC)), anything),
)
def test_arguments_round_trip_or_are_refused(**kwargs: Any) -> None:
    async def run() -> None:
        before = len(await app.list_tasks(limit=10**6))
        try:
            handle = await typed.enqueue(**kwargs)
        except TaskValidationError as exc:
            assert str(exc).startswith(f"task {typed.name!r}")
            assert len(await app.list_tasks(limit=10**6)) == before  # nothing stored
            return
        rec = await handle.record()
        assert rec is not None
        env = app.codec.decode_envelope(rec.body)
        assert isinstance(env, Envelope)
        args, decoded = typed.decode_args(bytes(env.args))
        assert args == []
        for key, value in kwargs.items():
            assert _same(decoded[key], value), (key, value, decoded[key])

    anyio.run(run)
