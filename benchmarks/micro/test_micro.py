"""Micro benches of hot paths (pytest-benchmark; not part of the default test run).

    .venv/bin/python -m pytest benchmarks/micro --benchmark-only --no-cov

(``--no-cov``: the project's pytest options turn on coverage with a gate meant for
``tests/``.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskcore import App
from taskcore.backend import Outcome, OutcomeKind
from taskcore.envelope import Codec, Envelope, new_task_id
from taskcore.memory import MemoryBackend
from taskcore.scheduling import FairState, SchedulingPolicy, static_score
from taskcore.testing import make_message

pytestmark = pytest.mark.benchmark(group="micro")


@pytest.fixture(params=["json", "msgpack"])
def codec(request: pytest.FixtureRequest) -> Codec:
    return Codec(request.param)


@pytest.fixture
def envelope(codec: Codec) -> Envelope:
    import msgspec

    args = codec.encode({"image_id": 42, "width": 320})
    return Envelope(
        id=new_task_id(),
        task="bench.resize",
        args=msgspec.Raw(args),
        enqueued_at=1.7e9,
        trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )


def test_envelope_encode(benchmark: Any, codec: Codec, envelope: Envelope) -> None:
    body = benchmark(codec.encode_envelope, envelope)
    assert codec.decode_envelope(body).id == envelope.id


def test_envelope_decode(benchmark: Any, codec: Codec, envelope: Envelope) -> None:
    body = codec.encode_envelope(envelope)
    assert benchmark(codec.decode_envelope, body).task == "bench.resize"


@pytest.fixture
def resize() -> Any:
    app = App()

    @app.task(name="bench.resize")
    async def resize(image_id: int, width: int = 640, *, crop: bool = False) -> str:
        return ""

    return resize


def test_encode_args(benchmark: Any, resize: Any) -> None:
    body = benchmark(resize.encode_args, (42,), {"width": 320})
    assert resize.decode_args(body) == ([], {"image_id": 42, "width": 320, "crop": False})


def test_decode_args(benchmark: Any, resize: Any) -> None:
    body = resize.encode_args((42,), {"width": 320})
    _, kwargs = benchmark(resize.decode_args, body)
    assert kwargs["image_id"] == 42


@pytest.mark.parametrize("kind", ["fifo", "priority", "deadline"])
def test_static_score(benchmark: Any, kind: str) -> None:
    policy = SchedulingPolicy(kind)  # type: ignore[arg-type]
    score = benchmark(static_score, policy, 3, 1.7e9, None)
    assert score >= 1.7e9


def test_fair_tag(benchmark: Any) -> None:
    policy = SchedulingPolicy.weighted_fair()
    state = FairState()
    tag = benchmark(state.tag, policy, "P2")
    assert tag > 0


def test_memory_claim_settle_100(benchmark: Any) -> None:
    """Claim and settle 100 ready tasks on the in-memory backend (enqueued in setup)."""
    backend = MemoryBackend()
    clock = backend.clock
    loop = asyncio.new_event_loop()

    def setup() -> None:
        loop.run_until_complete(
            backend.enqueue([make_message(clock) for _ in range(100)])  # type: ignore[arg-type]
        )

    async def cycle() -> int:
        leases = await backend.claim(["q"], 100, 30.0, "w")
        now = clock.now()
        ok = await backend.settle(
            [Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, now, b"null") for x in leases]
        )
        return sum(ok)

    try:
        settled = benchmark.pedantic(
            lambda: loop.run_until_complete(cycle()), setup=setup, rounds=300, warmup_rounds=5
        )
        assert settled == 100
    finally:
        loop.close()
