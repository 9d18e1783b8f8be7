"""Event fan-out and workflows (chain, group, chord) end to end, through real workers,
on memory (asyncio and trio), Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from taskcore import (
    App,
    FakeClock,
    State,
    TaskCancelled,
    TaskFailed,
    TaskValidationError,
    Worker,
    chain,
    chord,
    group,
)
from taskcore.backend import Outcome, OutcomeKind
from taskcore.workflow import follow_ups

from .conftest import POLL, settled, until

pytestmark = pytest.mark.anyio

MakeApp = Callable[..., contextlib.AbstractAsyncContextManager[App]]


def worker(app: App, **options: Any) -> Worker:
    options.setdefault("poll_interval", POLL)
    return app.worker(**options)


# -- events ----------------------------------------------------------------------------


async def test_emit_fans_out_to_every_subscriber_in_one_enqueue(app: App) -> None:
    seen: list[tuple[str, int]] = []

    @app.task(on="order.created")
    async def bill(order_id: int, amount: float = 0.0) -> str:
        seen.append(("bill", order_id))
        return f"billed {order_id} {amount}"

    @app.task(on=("order.created", "order.paid"), queue="mail")
    def notify(order_id: int, amount: float = 0.0) -> int:
        seen.append(("notify", order_id))
        return order_id

    @app.task(on="order.paid")
    async def ship(order_id: int) -> None:
        seen.append(("ship", order_id))

    calls: list[int] = []
    enqueue = app.backend.enqueue

    async def counting(messages: Any) -> Any:
        calls.append(len(messages))
        return await enqueue(messages)

    app.backend.enqueue = counting  # type: ignore[method-assign]
    handles = await app.emit("order.created", 7, amount=9.5)
    assert calls == [2]  # both subscribers in one backend call
    assert [(await h.record()).task for h in handles] == [bill.name, notify.name]  # type: ignore[union-attr]
    assert (await handles[1].record()).queue == "mail"  # type: ignore[union-attr]
    # arguments that do not fit one subscriber: nothing is enqueued
    with pytest.raises(TaskValidationError, match="ship"):
        await app.emit("order.paid", 8, amount=1.0)
    assert calls == [2]
    assert await app.emit("nobody.listens", 1) == []
    async with worker(app, queues=["default", "mail"], concurrency=4):
        assert [await h.result(timeout=5) for h in handles] == ["billed 7 9.5", 7]
    assert sorted(seen) == [("bill", 7), ("notify", 7)]


def test_subscription_names_are_checked() -> None:
    app = App()
    with pytest.raises(Exception, match="event name"):

        @app.task(on="has space")
        async def bad() -> None: ...


# -- signatures --------------------------------------------------------------------------


async def test_signatures_validate_at_creation_and_by_place(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def only_kw(*, x: int) -> int:
        return x

    add.s(1, 2)  # complete
    add.s(2)  # partial: the previous result comes first
    with pytest.raises(TaskValidationError, match="add"):
        add.s(1, 2, 3)  # too many, whatever comes first
    with pytest.raises(TaskValidationError, match="invalid"):
        add.s("not an int")  # wrong type for y (and for x)
    with pytest.raises(TaskValidationError, match="missing arguments"):
        await chain(add.s(2), add.s(3)).enqueue()  # the first step gets nothing
    with pytest.raises(TaskValidationError, match="cannot take the previous result"):
        await chain(add.s(1, 2), only_kw.s(x=1)).enqueue()
    with pytest.raises(TaskValidationError, match="unknown enqueue option"):
        add.with_options(colour="red").s(1, 2)
    # nothing was enqueued by the refused workflows
    assert await app.list_tasks() == []


async def test_unique_steps_are_refused_when_made(app: App) -> None:
    """A deduplicated step would not be stored, and the task it matched does not carry
    the workflow's next steps: refused with the way out, rather than a workflow that
    waits forever."""

    @app.task(unique=True)
    async def once(x: int) -> int:
        return x

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TaskValidationError, match=r"declared unique=True.*cannot be dedup"):
        once.s(1)
    with pytest.raises(TaskValidationError, match=r"unique_key='k'.*task_id"):
        add.with_options(unique_key="k").si(1, 2)
    # the way out the message names: fixed step ids make a second enqueue a no-op
    first, second = add.with_options(task_id="wf-1").s(1, 2), add.with_options(task_id="wf-2")
    h = await chain(first, second.s(10)).enqueue()
    again = await chain(first, second.s(10)).enqueue()
    assert again.ids == h.ids == ["wf-1", "wf-2"]
    async with worker(app):
        assert await h.result(timeout=10) == 13
    assert len(await app.list_tasks(task=add.name)) == 2
    assert await app.list_tasks(task=once.name) == []


# -- chain -------------------------------------------------------------------------------


async def test_chain_passes_each_result_to_the_next_step(app: App) -> None:
    order: list[str] = []

    @app.task
    async def add(x: int, y: int) -> int:
        order.append("add")
        return x + y

    @app.task(queue="other")
    def times(x: int, factor: int) -> int:
        order.append("times")
        return x * factor

    @app.task
    async def label(value: int, *, prefix: str = "=") -> str:
        order.append("label")
        return f"{prefix}{value}"

    @app.task
    async def ping() -> str:
        order.append("ping")
        return "pong"

    wf = chain(add.s(1, 2), times.s(10), label.s(prefix="total "), ping.si())
    async with worker(app, queues=["default", "other"], concurrency=2):
        h = await wf.enqueue()
        assert len(h.ids) == 4 and h.id == h.ids[-1]
        assert await h.result(timeout=10) == "pong"
    assert order == ["add", "times", "label", "ping"]
    label_rec = await app.backend.get(h.ids[2])
    assert label_rec is not None and label_rec.state is State.SUCCEEDED
    assert app.codec.decode(label_rec.result or b"") == "total 30"
    times_rec = await app.backend.get(h.ids[1])
    assert times_rec is not None and times_rec.queue == "other"


async def test_failed_step_stops_the_chain(app: App, clock: FakeClock) -> None:
    ran: list[str] = []

    @app.task
    async def first(x: int) -> int:
        ran.append("first")
        return x

    @app.task(give_up_on=ValueError)
    async def breaks(x: int) -> int:
        ran.append("breaks")
        raise ValueError(f"bad {x}")

    @app.task
    async def never(x: int) -> int:
        ran.append("never")
        return x

    async with worker(app):
        h = await chain(first.s(4), breaks.s(), never.s()).enqueue()
        with pytest.raises(TaskFailed, match="bad 4") as info:
            await h.result(timeout=10)
    assert info.value.task_id == h.ids[1]
    assert ran == ["first", "breaks"]
    rec = await app.backend.get(h.ids[1])
    assert rec is not None and rec.state is State.DEAD
    assert await app.backend.get(h.ids[2]) is None  # never released


async def test_cancelled_step_stops_the_chain(app: App) -> None:
    @app.task
    async def step(x: int) -> int:
        return x

    h = await chain(step.s(1), step.s()).enqueue()
    assert await h.cancel() == [True, False]  # the second does not exist yet
    async with worker(app):
        with pytest.raises(TaskCancelled):
            await h.result(timeout=5)
    assert await app.backend.get(h.ids[1]) is None


# -- group and chord ---------------------------------------------------------------------


async def test_group_gathers_results_in_order(app: App) -> None:
    @app.task
    async def square(x: int) -> int:
        return x * x

    @app.task(queue="other")
    async def neg(x: int) -> int:
        return -x

    async with worker(app, queues=["default", "other"], concurrency=4):
        h = await group(*(square.s(i) for i in range(5)), neg.s(3)).enqueue()
        assert await h.result(timeout=10) == [0, 1, 4, 9, 16, -3]


async def test_chord_callback_gets_all_results_then_the_chain_goes_on(app: App) -> None:
    @app.task
    async def square(x: int) -> int:
        return x * x

    @app.task(queue="other")
    async def total(values: list[int], offset: int = 0) -> int:
        return sum(values) + offset

    @app.task
    async def double(x: int) -> int:
        return 2 * x

    wf = chain(
        square.s(1),
        group(double.s(), chain(square.s(), double.s())),  # each member gets 1
        total.s(offset=100),
        double.s(),
    )
    async with worker(app, queues=["default", "other"], concurrency=4):
        assert await wf.enqueue() is not None
        h = await chord([square.s(i) for i in range(1, 4)], total.s()).enqueue()
        assert await h.result(timeout=10) == 1 + 4 + 9
        h2 = await wf.enqueue()
        assert await h2.result(timeout=10) == 2 * (2 + 2 + 100)


async def test_failed_member_stops_the_chord(app: App) -> None:
    calls: list[Any] = []

    @app.task(give_up_on=RuntimeError)
    async def maybe(x: int) -> int:
        if x == 2:
            raise RuntimeError("member 2 broke")
        return x

    @app.task
    async def total(values: list[int]) -> int:
        calls.append(values)
        return sum(values)

    async with worker(app, concurrency=3):
        h = await chord(group(maybe.s(1), maybe.s(2), maybe.s(3)), total.s()).enqueue()
        with pytest.raises(TaskFailed, match="member 2 broke") as info:
            await h.result(timeout=10)
        assert info.value.task_id == h.ids[1]
        await settled(app, h.ids[2], State.SUCCEEDED)
    assert calls == []
    assert await app.backend.get(h.id) is None  # the callback was never released


async def test_members_finishing_concurrently_fire_the_callback_once(
    app: App, make_app: MakeApp
) -> None:
    n = 6
    started: list[int] = []
    all_started = anyio.Event()
    callbacks: list[list[int]] = []

    def register(a: App) -> None:
        @a.task(name="member")
        async def member(x: int) -> int:
            started.append(x)
            if len(started) == n:
                all_started.set()
            await all_started.wait()  # every member finishes at the same moment
            return x

        @a.task(name="collect")
        async def collect(values: list[int]) -> int:
            callbacks.append(values)
            return len(values)

    register(app)
    async with make_app() as a2, make_app() as a3:
        register(a2)
        register(a3)
        # three workers on three connections: the members' settles race each other
        async with worker(app, concurrency=2), worker(a2, concurrency=2), worker(a3, concurrency=2):
            sigs = [app.tasks["member"].s(i) for i in range(n)]
            h = await chord(group(*sigs), app.tasks["collect"].s()).enqueue()
            assert await h.result(timeout=15) == n
            await until(lambda: len(callbacks) >= 1)
        assert callbacks == [list(range(n))]
        recs = await app.list_tasks(task="collect")
        assert [r.id for r in recs] == [h.id] and recs[0].attempt == 1


# -- crashes and stale settles -------------------------------------------------------------


async def test_stale_settle_of_a_step_releases_nothing(app: App, clock: FakeClock) -> None:
    runs: list[str] = []

    @app.task
    async def first(x: int) -> int:
        runs.append("first")
        return x + 1

    @app.task
    async def second(x: int) -> int:
        runs.append("second")
        return x * 10

    h = await chain(first.s(1), second.s()).enqueue()
    # a worker claims the first step, then vanishes past its lease
    [lost] = await app.backend.claim(["default"], 1, 30, "crashed-worker")
    clock.advance(31)
    assert await app.backend.reap() == [h.ids[0]]
    # the vanished worker comes back and settles as it would have: refused, and the
    # follow-up it carries is not released
    env = app.codec.decode_envelope(lost.message.body)
    stale = Outcome(
        h.ids[0],
        lost.token,
        OutcomeKind.SUCCEEDED,
        clock.now(),
        result=app.codec.encode(99),
        then=follow_ups(env, clock.now(), app.codec),
    )
    assert len(stale.then) == 1 and stale.then[0].message.id == h.ids[1]
    assert await app.backend.settle([stale]) == [False]
    assert await app.backend.get(h.ids[1]) is None
    async with worker(app):
        assert await h.result(timeout=10) == 20  # (1 + 1) * 10: the re-run's result
    assert runs == ["first", "second"]


async def test_worker_settle_failure_keeps_follow_ups_until_a_retry_lands(app: App) -> None:
    """A settle that fails (the backend unreachable for a moment) is retried by the
    worker; the follow-ups ride on the outcome, so they land with it, once."""

    @app.task
    async def a(x: int) -> int:
        return x + 1

    @app.task
    async def b(x: int) -> int:
        return x * 2

    settle = app.backend.settle
    failures: list[int] = []

    async def flaky(outcomes: Any) -> Any:
        if not failures and any(o.then for o in outcomes):
            failures.append(len(outcomes))
            from taskcore import BackendUnavailable

            raise BackendUnavailable("injected outage")
        return await settle(outcomes)

    app.backend.settle = flaky  # type: ignore[method-assign]
    async with worker(app):
        h = await chain(a.s(1), b.s()).enqueue()
        assert await h.result(timeout=10) == 4
    assert failures == [1]
    assert len(await app.list_tasks(task=b.name)) == 1
