"""Registration, enqueue-time validation, options, handles, codecs and discovery."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import msgspec
import pytest

from taskcore import (
    App,
    ConfigurationError,
    FakeClock,
    PayloadTooLarge,
    Priority,
    RetryPolicy,
    SerializationError,
    State,
    TaskError,
    TaskValidationError,
)
from taskcore.discovery import backend_from_url, redact_url
from taskcore.envelope import Codec, Envelope, new_task_id
from taskcore.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class Point(msgspec.Struct):
    x: int
    y: int


def make_app(clock: FakeClock, **kw: Any) -> App:
    return App(backend=MemoryBackend(clock=clock), clock=clock, **kw)


async def test_enqueue_validates_types_and_enqueues_nothing_on_error(clock: FakeClock) -> None:
    app = make_app(clock)

    @app.task
    async def resize(image_id: int, width: int = 640, *, point: Point | None = None) -> str:
        return ""

    async with app:
        with pytest.raises(
            TaskValidationError, match=r"Expected `int`, got `str` - at `\$.image_id`"
        ):
            await resize.enqueue("x")
        with pytest.raises(TaskValidationError, match="missing a required argument"):
            await resize.enqueue()  # type: ignore[call-arg]
        with pytest.raises(TaskValidationError, match="multiple values for argument 'image_id'"):
            await resize.enqueue(1, image_id=2)  # type: ignore[misc]
        with pytest.raises(TaskValidationError, match="too many positional arguments"):
            await resize.enqueue(1, 2, 3)  # type: ignore[call-arg]
        with pytest.raises(TaskValidationError, match="unexpected keyword"):
            await resize.enqueue(1, height=3)  # type: ignore[call-arg]
        with pytest.raises(TaskValidationError, match="cannot be encoded"):
            await resize.enqueue(1, width=object())  # type: ignore[arg-type]
        assert await app.list_tasks() == []
        h = await resize.enqueue(1, point=Point(1, 2))
        rec = await h.record()
        assert rec is not None and rec.state is State.QUEUED and rec.priority == 2
        args, kwargs = resize.decode_args(msgspec.json.decode(rec.body, type=Envelope).args)
        assert args == [] and kwargs == {"image_id": 1, "width": 640, "point": Point(1, 2)}


async def test_var_and_positional_only_arguments(clock: FakeClock) -> None:
    app = make_app(clock)

    @app.task
    def f(a: int, /, *rest: str, flag: bool = False, **extra: float) -> None:
        return None

    body = f.encode_args((1, "x", "y"), {"flag": True, "z": 1.5})
    assert f.decode_args(body) == ([1, "x", "y"], {"flag": True, "z": 1.5})
    with pytest.raises(TaskValidationError):
        f.encode_args((1, 2), {})


async def test_per_call_options(clock: FakeClock) -> None:
    app = make_app(clock)

    @app.task(priority="low", queue="media")
    async def job(n: int) -> None: ...

    async with app:
        h = await job.with_options(priority=Priority.CRITICAL, delay=30, fairness_key="t1").enqueue(
            1
        )
        rec = await h.record()
        assert rec is not None
        assert (rec.priority, rec.state, rec.queue, rec.fairness_key) == (
            0,
            State.SCHEDULED,
            "media",
            "t1",
        )
        assert rec.eligible_at == clock.now() + 30
        eta = dt.datetime.fromtimestamp(clock.now() + 60, dt.UTC)
        rec2 = await (
            await job.with_options(eta=eta, deadline=clock.now() + 90).enqueue(2)
        ).record()
        assert (
            rec2 is not None
            and rec2.eligible_at == clock.now() + 60
            and rec2.deadline == clock.now() + 90
        )
        with pytest.raises(TaskValidationError, match="unknown enqueue option"):
            job.with_options(colour="red")
        with pytest.raises(TaskValidationError, match="either delay or eta"):
            await job.with_options(delay=1, eta=eta).enqueue(3)
        with pytest.raises(TaskValidationError, match="invalid priority"):
            await job.with_options(priority="P7").enqueue(3)
        with pytest.raises(TaskValidationError, match="invalid queue name"):
            await job.with_options(queue="has space").enqueue(3)
        with pytest.raises(TaskValidationError, match="delay"):
            await job.with_options(delay=-1).enqueue(3)


async def test_calls_without_options_follow_the_tasks_options(clock: FakeClock) -> None:
    """A call without options uses the task's options (their validation is kept per
    task), again after the options are replaced; a per-call option (headers too) does
    not stick to the calls after it."""
    app = make_app(clock)

    @app.task(priority="low", queue="media")
    async def job(n: int) -> None: ...

    async with app:
        first = await (await job.enqueue(1)).record()
        urgent = await (
            await job.with_options(priority="critical", headers={"a": "1"}).enqueue(2)
        ).record()
        plain = await (await job.enqueue(3)).record()
        job.options = attrs.evolve(job.options, queue="thumbs", priority=Priority.HIGH)
        moved = await (await job.enqueue(4)).record()
        assert first is not None and urgent is not None and plain is not None and moved is not None
        assert [(r.queue, r.priority) for r in (first, urgent, plain, moved)] == [
            ("media", 3),
            ("media", 0),
            ("media", 3),
            ("thumbs", 1),
        ]
        envs = [app.codec.decode_envelope(r.body) for r in (urgent, plain)]
        assert [e.headers for e in envs] == [{"a": "1"}, {}]


async def test_unique_keys(clock: FakeClock) -> None:
    app = make_app(clock)

    @app.task(unique=True)
    async def sync_user(user_id: int) -> None: ...

    @app.task
    async def mail(to: str) -> None: ...

    async with app:
        a = await sync_user.enqueue(1)
        b = await sync_user.enqueue(1)
        c = await sync_user.enqueue(2)
        assert a.created and not b.created and b.id == a.id and c.id != a.id
        m1 = await mail.with_options(unique_key="welcome:7").enqueue("a@example.com")
        m2 = await mail.with_options(unique_key="welcome:7").enqueue("a@example.com")
        assert m2.id == m1.id and not m2.created


async def test_enqueue_many_is_all_or_nothing(clock: FakeClock) -> None:
    app = make_app(clock)

    @app.task
    async def add(x: int, y: int = 0) -> int:
        return x + y

    async with app:
        handles = await app.enqueue_many(add, [(1,), ((2,), {"y": 3}), [4, 5]])
        assert len(handles) == 3 and len({h.id for h in handles}) == 3
        with pytest.raises(TaskValidationError):
            await app.enqueue_many(add, [(1,), ("bad",)])
        assert len(await app.list_tasks()) == 3


async def test_payload_limit(clock: FakeClock) -> None:
    app = make_app(clock, max_payload_bytes=1024)

    @app.task
    async def store(blob: str) -> None: ...

    async with app:
        with pytest.raises(PayloadTooLarge, match="over the limit of 1024"):
            await store.enqueue("x" * 2000)
        assert await app.list_tasks() == []


def test_registration_errors(clock: FakeClock) -> None:
    app = make_app(clock)

    @app.task(name="dup")
    def one() -> None: ...

    with pytest.raises(ConfigurationError, match="already registered"):
        app.task(name="dup")(lambda: None)
    with pytest.raises(ConfigurationError, match="complexity"):
        app.task(complexity="huge")(lambda: None)
    with pytest.raises(ConfigurationError, match="invalid priority"):
        app.task(priority=9)(lambda: None)
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        app.task(queue="a b")(lambda: None)
    with pytest.raises(ConfigurationError, match="timeout"):
        app.task(timeout=0)(lambda: None)
    with pytest.raises(ConfigurationError, match="is not a retry policy"):
        app.task(retry=3)(lambda: None)
    with pytest.raises(ConfigurationError, match=r"give delays in seconds"):
        app.task(retry=[1, "soon"])(lambda: None)
    with pytest.raises(ConfigurationError, match=r"give delays in seconds"):
        app.task(retry=[-1])(lambda: None)
    listed = app.task(name="listed", retry=[0.5, 2])(lambda: None)
    assert listed.options.retry == RetryPolicy.explicit([0.5, 2])
    with pytest.raises(ConfigurationError, match="rate limit"):
        app.task(rate_limit="fast")(lambda: None)
    with pytest.raises(ConfigurationError, match="invalid cron"):
        app.periodic("every minute")(lambda: None)
    with pytest.raises(ConfigurationError, match="time zone"):
        app.periodic("* * * * *", tz="Mars/Olympus", name="x")(lambda: None)
    with pytest.raises(ConfigurationError, match="result_ttl=1 s is outside"):
        App(result_ttl=1)
    with pytest.raises(ConfigurationError, match="dead_ttl"):
        App(dead_ttl=365 * 86400 * 2)
    assert one.name == "dup" and app.get_task("dup") is one
    with pytest.raises(TaskError, match="no task named"):
        app.get_task("missing")


async def test_handle_of_unknown_task(clock: FakeClock) -> None:
    app = make_app(clock)
    async with app:
        with pytest.raises(TaskError, match="unknown"):
            await app.handle("nope").result(timeout=0)


def test_codec() -> None:
    for fmt in ("json", "msgpack"):
        codec = Codec(fmt)  # type: ignore[arg-type]
        env = Envelope(id=new_task_id(), task="t", args=msgspec.Raw(codec.encode({"a": 1})))
        body = codec.encode_envelope(env)
        back = codec.decode_envelope(body)
        assert back.id == env.id and codec.decode(bytes(back.args)) == {"a": 1}
        with pytest.raises(SerializationError, match="malformed envelope"):
            codec.decode_envelope(b"\xff\x00garbage")
        with pytest.raises(SerializationError, match="cannot encode"):
            codec.encode(object())
    with pytest.raises(SerializationError, match="unknown serializer"):
        Codec("pickle")  # type: ignore[arg-type]


def test_task_ids_sort_by_creation() -> None:
    ids = [new_task_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000 and all(len(i) == 26 for i in ids)


def test_backend_discovery() -> None:
    assert isinstance(backend_from_url("memory://"), MemoryBackend)
    with pytest.raises(ConfigurationError, match="no scheme"):
        backend_from_url("localhost:6379")
    with pytest.raises(ConfigurationError, match="no taskcore backend for URL scheme 'kafka'"):
        backend_from_url("kafka://broker")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@h:6379/0?prefix=a", "redis://:***@h:6379/0?prefix=a"),
        (
            "postgresql://app:hunter2@db/x?password=hunter2",
            "postgresql://app:***@db/x?password=***",
        ),
        ("host=db password='hunter 2' user=app", "host=db password=*** user=app"),
        ("redis://app@h/0", "redis://app@h/0"),
        ("rediss://u:hunter2@[::1", "rediss://..."),  # unparseable: only the scheme
    ],
)
def test_urls_in_messages_hide_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    with pytest.raises(ConfigurationError) as info:
        backend_from_url(url.partition("://")[2] or url)  # no scheme: an error naming it
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(App(url))


def test_fake_clock() -> None:
    clock = FakeClock(100.0)
    seen: list[float] = []
    clock.subscribe(lambda: seen.append(clock.now()))
    clock.advance(5)
    clock.set(110)
    clock.set(50)  # never backwards
    assert clock.now() == 110 and seen == [105, 110, 110]
    with pytest.raises(ValueError):
        clock.advance(-1)


@pytest.mark.parametrize(
    ("name", "default_days", "low", "high"),
    [
        ("result_ttl", 90, 30, 365),
        ("dead_ttl", 60, 30, 180),
        ("log_ttl", 30, 7, 90),
        ("metrics_ttl", 365, 90, 730),
        ("audit_ttl", 730, 365, 2555),
    ],
)
def test_retention_of_every_data_class_has_the_specified_default_and_bounds(
    name: str, default_days: int, low: int, high: int
) -> None:
    day = 86400
    assert getattr(App(), name) == default_days * day
    assert getattr(App(**{name: low * day}), name) == low * day
    assert getattr(App(**{name: high * day}), name) == high * day
    for bad in (low * day - 1, high * day + 1):
        with pytest.raises(ConfigurationError, match=rf"{name}=.* outside .* {low}-{high} days"):
            App(**{name: bad})


async def test_trim_journal_applies_each_streams_retention() -> None:
    from taskcore.backend import JournalEntry

    clock = FakeClock()
    day = 86400.0
    app = App(
        backend=MemoryBackend(clock=clock),
        clock=clock,
        log_ttl=7 * day,
        metrics_ttl=90 * day,
        audit_ttl=365 * day,
    )
    assert app.journal_retention == {
        "logs": 7 * day,
        "metrics": 90 * day,
        "audit": 365 * day,
        "rejects": app.dead_ttl,
    }
    async with app:
        t0 = clock.now()
        await app.backend.journal_append(
            [JournalEntry(s, t0, s.encode()) for s in ("logs", "metrics", "audit", "other")]
        )
        clock.advance(7 * day)
        assert await app.trim_journal() == 0  # a record exactly log_ttl old stays
        clock.advance(1)
        assert await app.trim_journal() == 1
        clock.advance(83 * day)
        assert await app.trim_journal() == 1
        clock.advance(275 * day)
        assert await app.trim_journal() == 1
        assert [e.stream for e in await app.backend.journal_read("other")] == ["other"]
