"""PostgreSQL-specific behaviour: migrations, transactions, concurrency, wake-ups,
connection loss, retention. Everything runs against a real server, no mocks."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import psycopg
import pytest
from tests.e2e.conftest import until
from tests.faults.proxy import TcpProxy

from taskcore.backend import Message, Outcome, OutcomeKind, QueueSpec
from taskcore.clock import Clock, FakeClock, SystemClock
from taskcore.errors import BackendError, BackendUnavailable, ConfigurationError
from taskcore.memory import MemoryBackend
from taskcore.scheduling import SchedulingPolicy
from taskcore.states import State
from taskcore.testing import make_message, settle_half_a_chord
from taskcore_pg import LATEST_VERSION, PostgresBackend, check, check_async, migrate, migrate_async
from taskcore_pg._sql import Statements, strip_comments
from taskcore_pg.backend import _COUNT_LATE, _PUNCTUAL
from taskcore_pg.cli import main as cli_main

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def open_backend(
    dsn: str, schema: str, clock: Clock | None = None, **kw: Any
) -> AsyncIterator[PostgresBackend]:
    kw.setdefault("min_size", 1)
    kw.setdefault("max_size", 4)
    async with PostgresBackend(dsn, clock=clock or FakeClock(), schema=schema, **kw) as backend:
        yield backend


def _claim_params(now: float, limit: int) -> dict[str, Any]:
    """claim.sql's parameters for queue "q", to EXPLAIN it."""
    return {
        "queues": ["q"],
        "limit": limit,
        "max_priority": 4,
        "now": now,
        "expires_at": now + 30,
        "worker": "w",
        "promote_limit": 100,
        "synchronous_commit": "off",
    }


async def _scalar(dsn: str, query: str, params: Sequence[Any] = ()) -> Any:
    """The one value ``query`` returns, read on a connection of its own."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        assert row is not None
        return row[0]


async def _count(dsn: str, schema: str, where: str = "true", table: str = "tasks") -> int:
    return int(await _scalar(dsn, f'SELECT count(*) FROM "{schema}".{table} WHERE {where}'))


# -- migrations ----------------------------------------------------------------------
async def test_migrations_are_idempotent_and_checked(pg_dsn: str, pg_schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        assert not await check_async(conn, pg_schema)
        assert await migrate_async(conn, pg_schema) == list(range(1, LATEST_VERSION + 1))
        assert await migrate_async(conn, pg_schema) == []
        assert await check_async(conn, pg_schema)
        cur = await conn.execute(f'SELECT version FROM "{pg_schema}".schema_version')
        assert [r[0] for r in await cur.fetchall()] == list(range(1, LATEST_VERSION + 1))
        # Every file is idempotent on its own, too: re-running it changes nothing.
        from taskcore_pg._sql import migrations, render

        for _, _, text in migrations():
            await conn.execute(render(text, pg_schema))


async def test_concurrent_migrations_apply_once(pg_dsn: str, pg_schema: str) -> None:
    async def run(results: list[list[int]]) -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            results.append(await migrate_async(conn, pg_schema))

    results: list[list[int]] = []
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(run, results)
    assert sorted(results, key=len) == [[], [], [], list(range(1, LATEST_VERSION + 1))]


def test_blocking_helpers_and_cli(pg_dsn: str, pg_schema: str, capsys: Any) -> None:
    url = f"{pg_dsn}?schema={pg_schema}"
    assert not check(pg_dsn, pg_schema)
    assert cli_main(["migrate", "--check", "--url", url]) == 1
    assert cli_main(["migrate", "--url", url]) == 0
    assert cli_main(["migrate", "--check", "--url", url]) == 0
    assert check(pg_dsn, pg_schema)
    migrate(pg_dsn, pg_schema)  # again: nothing to do
    assert "up to date" in capsys.readouterr().out
    capsys.readouterr()
    assert cli_main(["migrate", "--url", "postgresql://postgres:hunter2@127.0.0.1:1/test"]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "port 1 failed: Connection refused" in err and "TASKCORE_PG_DSN" in err, err
    assert cli_main(["migrate", "--url", "mysql://root:hunter2@db/x"]) == 2
    err = capsys.readouterr().err
    assert "root:***@db" in err and "hunter2" not in err, err


@pytest.mark.anyio
async def test_no_migrate_on_start_requires_a_migrated_schema(pg_dsn: str, pg_schema: str) -> None:
    with pytest.raises(ConfigurationError, match="taskcore pg migrate"):
        async with open_backend(pg_dsn, pg_schema, migrate_on_start=False):
            pass


# -- configuration -------------------------------------------------------------------
def test_from_url_strips_taskcore_parameters() -> None:
    backend = PostgresBackend.from_url(
        "postgresql://u@h:5432/db?schema=app_1&sslmode=disable&listen=0&max_size=3&plan_guard=0"
    )
    assert backend.schema == "app_1"
    assert not backend.settings.listen and backend.settings.max_size == 3
    assert not backend.settings.plan_guard
    assert backend._dsn == "postgresql://u@h:5432/db?sslmode=disable"
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresBackend.from_url("postgresql://u@h/db?schema=bad;name")
    with pytest.raises(ConfigurationError, match="poll_interval"):
        PostgresBackend("postgresql://u@h/db", poll_interval=5)


def test_statements_are_sent_without_comments_and_fit_psycopgs_parse_cache() -> None:
    # psycopg caches the parsing of a query's text only up to 4 KiB
    # (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH): a longer claim.sql was parsed
    # again on every call, even with the longest schema name allowed
    assert strip_comments("a -- x\n\n  'b -- c'  -- d\n-- e\n\"f--\" g") == "a\n'b -- c'\n\"f--\" g"
    statements = Statements("s" * 48)
    texts = {name: statements[name] for name in ("claim", "settle", "extend", "ready", "reap")}
    for variant in (_COUNT_LATE, _PUNCTUAL):
        texts[f"settle_final {variant}"] = statements.variant("settle_final", **variant)
    for name, text in texts.items():
        assert "--" not in text and "@" not in text and len(text.encode()) <= 4096, name


async def test_late_outcomes_are_counted_whichever_variant_settles_them(
    pg_dsn: str, pg_schema: str
) -> None:
    """A batch with a late outcome takes settle_final.sql with the late counts' upsert,
    a punctual one the variant without it; the counts are those of the late ones."""
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        await backend.enqueue([make_message(clock) for _ in range(5)])
        leases = await backend.claim(["q"], 5, 30, "w")

        def out(i: int, late: bool) -> Outcome:
            x = leases[i]
            return Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, clock.now(), late=late)

        assert await backend.settle([out(0, False), out(1, True), out(2, False)]) == [True] * 3
        assert await backend.settle([out(3, False), out(4, False)]) == [True] * 2
        [stats] = await backend.stats(["q"])
        assert stats.late == 1 and stats.states[State.SUCCEEDED] == 5


async def test_unreachable_server_is_backend_unavailable_with_the_cause() -> None:
    backend = PostgresBackend("postgresql://postgres:hunter2@127.0.0.1:1/test", timeout=1.0)
    with pytest.raises(BackendUnavailable) as info:
        async with backend:
            pass
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    message = str(info.value)
    assert message.startswith("cannot open PostgreSQL at 127.0.0.1:1 (schema 'taskcore'): ")
    assert 'server at "127.0.0.1", port 1 failed: Connection refused' in message
    assert "check that the server is running" in message and "TASKCORE_PG_DSN" in message
    assert "pool initialization incomplete" not in message and "hunter2" not in message


def test_url_errors_do_not_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend.from_url("mysql://app:hunter2@h/db")
    assert "hunter2" not in str(info.value) and "app:***@h" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        PostgresBackend.from_url("postgresql://app:hunter2@h/db?timeout=soon")
    assert "hunter2" not in str(info.value)


def test_dead_peer_defaults_yield_to_the_url() -> None:
    libpq = PostgresBackend("postgresql://u@h/db")._libpq()
    assert libpq["connect_timeout"] == "10" and libpq["keepalives"] == "1"
    assert libpq["tcp_user_timeout"] == "30000" and libpq["keepalives_idle"] == "15"
    libpq = PostgresBackend("postgresql://u@h/db?connect_timeout=3&keepalives=0")._libpq()
    assert "connect_timeout" not in libpq and "keepalives" not in libpq
    assert PostgresBackend.from_url("postgresql://u@h/db").settings.operation_timeout == 30.0
    with pytest.raises(ConfigurationError, match="operation_timeout=0"):
        PostgresBackend.from_url("postgresql://u@h/db?operation_timeout=0")


async def test_silent_server_is_noticed_and_left_behind(pg_dsn: str, pg_schema: str) -> None:
    """A server that stops answering without closing anything (blackhole): operations
    fail after operation_timeout instead of hanging, the LISTEN connection is replaced,
    and everything works again once bytes flow."""
    proxy = TcpProxy.for_url(pg_dsn)
    await proxy.start()
    try:
        url = f"{proxy.url.split('?')[0]}?connect_timeout=2"
        clock = FakeClock()
        bounds = {"operation_timeout": 1.0, "timeout": 2.0}  # per statement, per checkout
        async with open_backend(url, pg_schema, clock, **bounds) as backend:
            await backend.enqueue([make_message(clock) for _ in range(3)])
            await backend.wait(["q"], 0)  # listens (the listener connects at a first wait)
            listener = backend._listener
            assert listener is not None
            first_pid = listener.backend_pid
            assert first_pid is not None
            proxy.blackhole()
            with anyio.fail_after(10), pytest.raises(BackendUnavailable, match="unavailable"):
                await backend.stats(["q"])  # read-only: tried twice, 1 s + at most 2 s
            proxy.forward()
            assert proxy.swallowed_bytes > 0 and proxy.dropped == 0
            [stats] = await backend.stats(["q"])
            assert stats.states[State.QUEUED] == 3
            # a claim carrying outcomes (a pipeline) is bounded the same way, and
            # leaves nothing half done: the outcome is settled by the next claim
            [lease] = await backend.claim(["q"], 1, 30, "w")
            done = Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())
            proxy.blackhole()
            with anyio.fail_after(10), pytest.raises(BackendUnavailable, match="unavailable"):
                await backend.claim(["q"], 1, 30, "w", settle=[done])
            proxy.forward()
            assert len(await backend.claim(["q"], 1, 30, "w", settle=[done])) == 1
            record = await backend.get(lease.message.id)
            assert record is not None and record.state is State.SUCCEEDED
            # the listener noticed too and reconnected (polled, with a deadline)
            with anyio.fail_after(30):
                while listener.backend_pid in (None, first_pid):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
    finally:
        await proxy.stop()


# -- enqueue -------------------------------------------------------------------------
async def test_enqueue_in_caller_transaction_commit_and_rollback(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        kept = make_message(clock, unique_key="order-1")
        dropped = make_message(clock, unique_key="order-2")
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            async with conn.transaction():
                await conn.execute("SELECT 1")  # the caller's own work
                [res] = await backend.enqueue_in(conn, [kept])
                assert res.created
                assert await backend.get(kept.id) is None  # not visible before commit
            assert (await backend.get(kept.id)) is not None

            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    [res] = await backend.enqueue([dropped], connection=conn)
                    assert res.created
                    raise RuntimeError("the caller's transaction fails")
        assert await backend.get(dropped.id) is None
        leases = await backend.claim(["q"], 10, 30, "w")
        assert [lease.message.id for lease in leases] == [kept.id]
        # The rolled-back task's unique key was never taken.
        [again] = await backend.enqueue([make_message(clock, unique_key="order-2")])
        assert again.created


async def test_concurrent_enqueues_of_one_unique_key_create_exactly_one(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock, max_size=10) as backend:
        msgs = [make_message(clock, unique_key="only-one") for _ in range(50)]
        results: list[Any] = [None] * 50

        async def one(i: int) -> None:
            [results[i]] = await backend.enqueue([msgs[i]])

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        created = [r for r in results if r.created]
        assert len(created) == 1
        assert {r.id for r in results} == {created[0].id}
        assert await _count(pg_dsn, pg_schema) == 1


async def test_bulk_enqueue_with_duplicates_in_the_batch(pg_dsn: str, pg_schema: str) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock, enqueue_chunk=1000) as backend:
        msgs = [make_message(clock, priority=i % 5) for i in range(2500)]
        twice = msgs[:10]
        keyed = [make_message(clock, unique_key="k") for _ in range(3)]
        results = await backend.enqueue([*msgs, *twice, *keyed])
        assert [r.created for r in results] == [True] * 2500 + [False] * 10 + [True, False, False]
        assert [r.id for r in results[2500:2510]] == [m.id for m in twice]
        assert {r.id for r in results[-3:]} == {keyed[0].id}
        [stats] = await backend.stats(["q"])
        assert stats.states[State.QUEUED] == 2501 and stats.depth_by_priority[0] == 500


async def test_batch_naming_an_existing_id_is_answered_in_and_out_of_a_transaction(
    pg_dsn: str, pg_schema: str
) -> None:
    # A batch without unique keys is first stored without ON CONFLICT; an id that
    # already exists fails that statement and the batch is stored the careful way.
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        old = make_message(clock)
        [first] = await backend.enqueue([old])
        assert first.created
        batch = [make_message(clock), old, make_message(clock)]
        results = await backend.enqueue(batch)
        assert [(r.id, r.created) for r in results] == [
            (batch[0].id, True),
            (old.id, False),
            (batch[2].id, True),
        ]
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            async with conn.transaction():
                await conn.execute(f'CREATE TABLE "{pg_schema}".caller_work (x int)')
                again = [make_message(clock), old]
                results = await backend.enqueue_in(conn, again)
                assert [r.created for r in results] == [True, False]
                # the failed first attempt did not break the caller's transaction
                await conn.execute(f'INSERT INTO "{pg_schema}".caller_work VALUES (1)')
            cur = await conn.execute(f'SELECT count(*) FROM "{pg_schema}".caller_work')
            assert await cur.fetchone() == (1,)
        assert await backend.get(again[0].id) is not None
        assert await _count(pg_dsn, pg_schema) == 4


async def test_batch_across_fair_and_other_queues_scores_every_task(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        await backend.declare([QueueSpec("fair", SchedulingPolicy.weighted_fair())])
        msgs = [make_message(clock, queue=("fair", "q")[i % 2], priority=i % 2) for i in range(40)]
        results = await backend.enqueue(msgs)
        assert [(r.id, r.created, r.state) for r in results] == [
            (m.id, True, State.QUEUED) for m in msgs
        ]
        assert await _count(pg_dsn, pg_schema, "score IS NULL") == 0
        plain = [m.id for m in msgs if m.queue == "q"]
        leases = await backend.claim(["q"], 100, 30, "w")
        assert [lease.message.id for lease in leases] == plain
        leases = await backend.claim(["fair"], 100, 30, "w")
        assert sorted(lease.message.id for lease in leases) == sorted(
            m.id for m in msgs if m.queue == "fair"
        )


@pytest.mark.parametrize("sync", [False, True], ids=["async-claim", "sync-claim"])
async def test_claim_commit_mode_is_local_to_the_claim(
    pg_dsn: str, pg_schema: str, sync: bool
) -> None:
    # The claim turns off synchronous_commit for its own transaction only (unless
    # claim_sync_commit): the pooled connection's next statement runs as configured.
    clock = FakeClock()
    async with open_backend(
        pg_dsn, pg_schema, clock, min_size=1, max_size=1, claim_sync_commit=sync
    ) as backend:
        msg = make_message(clock)
        await backend.enqueue([msg])
        [lease] = await backend.claim(["q"], 10, 30, "w")
        assert lease.message.id == msg.id

        async def setting(conn: Any) -> str:
            cur = await conn.execute("SHOW synchronous_commit")
            row = await cur.fetchone()
            return str(row[0])

        assert backend._pool is not None
        async with backend._pool.connection() as conn:
            assert await setting(conn) == "on"
        record = await backend.get(msg.id)
        assert record is not None and record.state == State.RUNNING


async def _xmin_and_state(dsn: str, schema: str, ids: list[str]) -> dict[str, tuple[str, str]]:
    """``id -> (xmin, state)``: xmin names the transaction that last wrote the row."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            f'SELECT id, xmin::text, state FROM "{schema}".tasks WHERE id = ANY(%s)', [ids]
        )
        return {tid: (xmin, state) for tid, xmin, state in await cur.fetchall()}


@pytest.mark.parametrize("guard", [True, False], ids=["plan_guard", "plan_guard=0"])
async def test_carried_outcomes_and_the_claim_are_one_round_trip_and_one_transaction(
    pg_dsn: str, pg_schema: str, guard: bool
) -> None:
    """claim(settle=...) sends the settle statements (one per round of repeated ids) and
    the claim together: one round trip, one transaction, which sees what it released."""
    proxy = TcpProxy.for_url(pg_dsn)
    await proxy.start()
    try:
        clock = FakeClock()
        async with open_backend(
            proxy.url, pg_schema, clock, min_size=1, max_size=1, listen=False, plan_guard=guard
        ) as backend:
            a, b, c = (make_message(clock) for _ in range(3))
            await backend.enqueue([a, b, c])
            la, lb = await backend.claim(["q"], 2, 30, "w")
            now = clock.now()
            done = Outcome(a.id, la.token, OutcomeKind.SUCCEEDED, now, result=b"1")
            released = Outcome(b.id, lb.token, OutcomeKind.RELEASED, now)
            # a named twice: two settle statements, the second refused (already settled)
            carried = [done, released, done]
            before = proxy.round_trips
            leases = await backend.claim(["q"], 2, 30, "w", settle=carried)
            assert proxy.round_trips - before == 1
            assert [lease.message.id for lease in leases] == [b.id, c.id]  # b kept its place
            rows = await _xmin_and_state(pg_dsn, pg_schema, [a.id, b.id, c.id])
            assert {state for _, state in rows.values()} == {"succeeded", "running"}
            assert rows[a.id][1] == "succeeded"
            assert len({xmin for xmin, _ in rows.values()}) == 1  # one transaction
            # without outcomes to carry, a claim is one round trip as before
            await backend.enqueue([make_message(clock)])
            before = proxy.round_trips
            assert len(await backend.claim(["q"], 2, 30, "w")) == 1
            assert proxy.round_trips - before == 1
    finally:
        await proxy.stop()


async def test_a_carried_outcome_that_fails_fails_the_claim_and_records_nothing(
    pg_dsn: str, pg_schema: str
) -> None:
    """An error in a carried settle statement rolls back the whole round trip (nothing
    settled, nothing leased) and raises, so the worker keeps the outcomes to retry."""
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        a, b = make_message(clock), make_message(clock)
        await backend.enqueue([a, b])
        [la] = await backend.claim(["q"], 1, 30, "w")
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute(
                f'CREATE FUNCTION "{pg_schema}".refuse() RETURNS trigger LANGUAGE plpgsql'
                " AS $$ BEGIN RAISE EXCEPTION 'no settling today'; END $$"
            )
            await conn.execute(
                f'CREATE TRIGGER refuse BEFORE UPDATE ON "{pg_schema}".tasks FOR EACH ROW'
                f" WHEN (NEW.state = 'succeeded') EXECUTE FUNCTION \"{pg_schema}\".refuse()"
            )
        done = Outcome(a.id, la.token, OutcomeKind.SUCCEEDED, clock.now())
        with pytest.raises(BackendError, match="no settling today"):
            await backend.claim(["q"], 1, 30, "w", settle=[done])
        rows = await _xmin_and_state(pg_dsn, pg_schema, [a.id, b.id])
        assert {tid: state for tid, (_, state) in rows.items()} == {
            a.id: "running",
            b.id: "queued",
        }
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP TRIGGER refuse ON "{pg_schema}".tasks')
        # the pooled connection is usable again, and the same outcome goes through
        [lb] = await backend.claim(["q"], 1, 30, "w", settle=[done])
        assert lb.message.id == b.id
        record = await backend.get(a.id)
        assert record is not None and record.state is State.SUCCEEDED


async def test_stats_and_purge_match_memory_backend(pg_dsn: str, pg_schema: str) -> None:
    """Every state is counted (each through its own partial index) and purged as the
    reference backend does; the settle batch is all terminal, then mixed."""
    mem_clock, pg_clock = FakeClock(), FakeClock()
    async with open_backend(pg_dsn, pg_schema, pg_clock) as pg:
        mem = MemoryBackend(clock=mem_clock)
        seen: list[list[Any]] = [[], []]
        for k, (b, clock) in enumerate([(mem, mem_clock), (pg, pg_clock)]):
            await b.enqueue(
                [make_message(clock, task_id=f"t{i}", priority=i % 5) for i in range(12)]
                + [make_message(clock, task_id="later", delay=60)]
            )
            leases = await b.claim(["q"], 7, 30, "w")
            kinds = [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.DEAD]
            final = [
                Outcome(lease.message.id, lease.token, kinds[j % 3], clock.now())
                for j, lease in enumerate(leases[:3])
            ]
            mixed = [
                Outcome(leases[3].message.id, leases[3].token, OutcomeKind.SUCCEEDED, clock.now()),
                Outcome(
                    leases[4].message.id,
                    leases[4].token,
                    OutcomeKind.RETRY,
                    clock.now(),
                    retry_at=clock.now() + 30,
                ),
            ]
            assert await b.settle(final) == [True] * 3
            assert await b.settle(mixed) == [True] * 2
            assert await b.cancel(["t11"]) == [True]
            [stats] = await b.stats(["q"])
            seen[k].append((stats.states, stats.depth_by_priority))
            purged = await b.purge("q", [State.QUEUED, State.RETRYING, State.SUCCEEDED])
            [stats] = await b.stats(["q"])
            seen[k].append((purged, stats.states, stats.depth_by_priority))
        assert seen[1] == seen[0]
        states = seen[1][0][0]
        assert states[State.RUNNING] == 2 and states[State.QUEUED] == 5
        assert states[State.SCHEDULED] == 1 and states[State.RETRYING] == 1


async def test_hot_statements_read_indexes_not_the_finished_rows(
    pg_dsn: str, pg_schema: str
) -> None:
    """With many finished rows stored before the live ones (the layout of a long-lived
    queue), the claim, the idle worker's readiness probe and a purge batch read the
    partial indexes: no sequential scan of the table."""
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        await backend.enqueue([make_message(clock) for _ in range(10)])
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute(
                f"""INSERT INTO "{pg_schema}".tasks (id, task, queue, priority, state, score,
                        enqueued_at, msg_eligible_at, eligible_at, updated_at, body, attempt,
                        finished_at)
                    SELECT 'f' || g, 'noop', 'q', g % 5, 'succeeded', 0, g, g, g, g, '', 1, g
                      FROM generate_series(1, 50000) g"""
            )
            # a backlog after them, as large a share of the table as in a busy queue
            await backend.enqueue([make_message(clock) for _ in range(5000)])
            await conn.execute(f'VACUUM ANALYZE "{pg_schema}".tasks')
            now = clock.now()
            statements = {
                "claim": _claim_params(now, limit=5),
                "ready": {"queues": ["q"], "now": now},
                "purge": {
                    "queue": "q",
                    "states": ["queued", "scheduled", "succeeded"],
                    "batch": 100,
                    "done_channel": "x",
                },
            }
            for name, params in statements.items():
                async with conn.transaction(force_rollback=True):
                    cur = await conn.execute("EXPLAIN (COSTS OFF) " + backend._sql[name], params)
                    plan = "\n".join(row[0] for row in await cur.fetchall())
                assert "Seq Scan on tasks" not in plan, f"{name}:\n{plan}"
                assert "tasks_ready" in plan, f"{name}:\n{plan}"


async def test_claim_reads_the_backlog_in_index_order_under_stale_statistics(
    pg_dsn: str, pg_schema: str
) -> None:
    """A backlog that arrives faster than autovacuum analyzes the table (here: a new
    table, never analyzed) and is partly drained: the planner expects one queued row
    and, without ``plan_guard``, picks a bitmap scan that reads and sorts the whole
    backlog on every claim (a throughput collapse, 7,900 -> 2,200 tasks/s, with 200,000
    queued). The backend's own sessions read ``tasks_ready`` in order instead."""
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        for _ in range(200):
            await backend.enqueue([make_message(clock) for _ in range(1000)])
        for _ in range(20):
            leases = await backend.claim(["q"], 1000, 30, "w")
            await backend.settle(
                [Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, clock.now()) for x in leases]
            )
        now = clock.now()
        params = _claim_params(now, limit=10)
        query = "EXPLAIN (COSTS OFF) " + backend._sql["claim"]

        async def explain(conn: psycopg.AsyncConnection[Any]) -> str:
            async with conn.transaction(force_rollback=True):
                cur = await conn.execute(query, params)
                return "\n".join(row[0] for row in await cur.fetchall())

        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            unguarded = await explain(conn)
        guarded = await backend._run(explain)
    # the trap is real on this server (PostgreSQL 15): a plain session falls into it
    assert "Bitmap Heap Scan on tasks" in unguarded, unguarded
    assert "Bitmap" not in guarded, guarded
    assert "Index Scan using tasks_ready" in guarded, guarded


async def test_claim_runs_on_a_pinned_generic_plan_that_reads_the_indexes(
    pg_dsn: str, pg_schema: str
) -> None:
    """With the plan guard the claim is planned once per session (generic plan, no
    custom planning per call), and pinned to index reads even where the unpinned
    generic plan would scan the table: analyzed statistics of a large backlog."""
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock, min_size=1, max_size=1) as backend:
        for _ in range(20):
            await backend.enqueue([make_message(clock) for _ in range(1000)])
        leases = await backend.claim(["q"], 1000, 30, "w")
        for _ in range(8):
            done = [Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, 0.0) for x in leases]
            leases = await backend.claim(["q"], 10, 30, "w", settle=done)

        async def plans(conn: Any) -> list[tuple[int, int]]:
            cur = await conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%%commit_mode%%'"
            )
            return [tuple(row) for row in await cur.fetchall()]

        [(generic, custom)] = await backend._run(plans, claims=True)
        assert generic > 0 and custom == 0

        async def pins(conn: Any) -> list[str]:
            cur = await conn.execute(
                "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan'),"
                " current_setting('enable_hashjoin'), current_setting('enable_bitmapscan')"
            )
            row = await cur.fetchone()
            return list(row)

        # pinned for the whole claim session; the other sessions plan as usual
        assert await backend._run(pins, claims=True) == ["force_generic_plan", "off", "off", "off"]
        assert await backend._run(pins) == ["auto", "on", "on", "off"]
    # the generic plan itself, under the pins and without them
    order: list[str] = []

    def number(match: Any) -> str:
        if match[1] not in order:
            order.append(match[1])
        return f"${order.index(match[1]) + 1}"

    text = re.sub(r"%\((\w+)\)[sb]", number, backend._sql["claim"])
    params = _claim_params(clock.now(), limit=10)
    values = [params[name] for name in order]
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f'ANALYZE "{pg_schema}".tasks')
        await conn.execute("SET enable_bitmapscan = off")
        await conn.execute("PREPARE claim AS " + text)
        explain = "EXPLAIN (COSTS OFF) EXECUTE claim({})".format(", ".join(["%s"] * len(values)))
        found = {}
        for pinned in (False, True):
            async with conn.transaction(force_rollback=True):
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                if pinned:
                    await conn.execute(backend._sql["claim_plan"])
                cur = psycopg.AsyncClientCursor(conn)
                await cur.execute(explain, values)
                found[pinned] = "\n".join(row[0] for row in await cur.fetchall())
            await conn.execute("DEALLOCATE claim")
            await conn.execute("PREPARE claim AS " + text)
    assert "Seq Scan on tasks" in found[False], found[False]  # the trap is real
    plan = found[True]
    assert "Seq Scan on tasks" not in plan, plan
    assert "Index Scan using tasks_ready" in plan and "Tid Scan on tasks" in plan, plan


async def test_a_claim_that_waits_for_a_connection_dates_its_lease_after_the_wait(
    pg_dsn: str, pg_schema: str
) -> None:
    """A lease starts when the claim gets its connection, not before a wait for one:
    the clock moves past the lease while the claim waits for the only claim session,
    and the lease still lasts lease_seconds from then."""
    clock = FakeClock(1_000.0)
    async with open_backend(pg_dsn, pg_schema, clock, max_size=1) as backend:
        await backend.enqueue([make_message(clock, queue="q")])
        assert await backend.claim(["q"], 0, 30.0, "w") == []  # opens the claim sessions
        pool = backend._claims if backend._claims is not None else backend._pool
        assert pool is not None
        release = anyio.Event()
        held = anyio.Event()
        leases: list[Any] = []

        async def hold(conn: Any) -> None:
            held.set()
            await release.wait()

        async def claim() -> None:
            leases.extend(await backend.claim(["q"], 1, 30.0, "w"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: backend._run(hold, claims=True, bounded=False))
            await held.wait()
            tg.start_soon(claim)
            # the claim is queued for the held session
            await until(lambda: pool.get_stats().get("requests_waiting", 0) >= 1)
            clock.advance(100.0)
            release.set()
        [lease] = leases
        assert lease.claimed_at == 1_100.0
        assert lease.expires_at == 1_130.0  # not 1_030: lapsed before it was handed out


async def test_concurrent_claimers_lease_each_task_once(pg_dsn: str, pg_schema: str) -> None:
    """Producers, claimers and a canceller race on one queue: every task is leased at
    most once, every settle of a lease is accepted, and each task ends succeeded or
    cancelled (the claim leases the rows it locked, through their row address)."""
    clock = FakeClock()
    n = 1200
    async with open_backend(pg_dsn, pg_schema, clock, max_size=10) as backend:
        msgs = [make_message(clock) for _ in range(n)]
        claimed: list[str] = []
        cancelled: list[str] = []
        produced = anyio.Event()

        async def produce(part: list[Any]) -> None:
            for start in range(0, len(part), 50):
                await backend.enqueue(part[start : start + 50])

        async def claimer() -> None:
            while True:
                leases = await backend.claim(["q"], 20, 30, "w")
                if not leases:
                    if produced.is_set():
                        return
                    await backend.wait(["q"], 0.05)
                    continue
                claimed.extend(lease.message.id for lease in leases)
                outcomes = [
                    Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())
                    for lease in leases
                ]
                assert await backend.settle(outcomes) == [True] * len(leases)

        async def canceller() -> None:
            for m in msgs[::10]:
                [ok] = await backend.cancel([m.id])
                if ok:
                    cancelled.append(m.id)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(claimer)
            async with anyio.create_task_group() as producers:
                for k in range(3):
                    producers.start_soon(produce, msgs[k::3])
                producers.start_soon(canceller)
            produced.set()
        assert len(claimed) == len(set(claimed))
        records = {m.id: await backend.get(m.id) for m in msgs}
        ended = {tid: r.state for tid, r in records.items() if r is not None}
        assert set(ended.values()) <= {State.SUCCEEDED, State.CANCELLED}
        assert {tid for tid, st in ended.items() if st is State.SUCCEEDED} == set(claimed)
        assert len(ended) == n


# -- scheduling: the same observable order as the reference backend ------------------
POLICIES = [
    SchedulingPolicy.fifo(),
    SchedulingPolicy.strict_priority(),
    SchedulingPolicy.deadline_aware(batch_horizon=100.0),
    SchedulingPolicy.weighted_fair(),
    SchedulingPolicy.weighted_fair({"a": 3.0, "b": 0.7}, by="key", default_weight=1.3),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.kind}-{p.by}")
async def test_claim_order_matches_memory_backend(
    pg_dsn: str, pg_schema: str, policy: SchedulingPolicy
) -> None:
    """Drive both backends through the same script (enqueue, delays, deadlines,
    releases, retries, lease expiry) and compare every claim."""
    mem_clock, pg_clock = FakeClock(), FakeClock()
    async with open_backend(pg_dsn, pg_schema, pg_clock) as pg:
        mem = MemoryBackend(clock=mem_clock)
        backends: list[tuple[Any, FakeClock]] = [(mem, mem_clock), (pg, pg_clock)]
        for b, _ in backends:
            await b.declare([QueueSpec("q", policy)])
        orders: list[list[str]] = [[], []]
        for step in range(12):
            batch = []
            for i in range(25):
                n = step * 25 + i
                batch.append(
                    {
                        "task_id": f"t{n:04d}",
                        "priority": (n * 7) % 5,
                        "delay": float((n * 13) % 4 * 3) if n % 3 == 0 else 0.0,
                        "deadline": 1_700_000_000.0 + step * 10 + (n % 17) * 20
                        if n % 4 == 0
                        else None,
                        "fairness_key": "abc"[n % 3],
                    }
                )
            for k, (b, clock) in enumerate(backends):
                await b.enqueue([make_message(clock, **kw) for kw in batch])  # type: ignore[arg-type]
                leases = await b.claim(["q"], 9, 10.0, "w")
                orders[k] += [lease.message.id for lease in leases]
                outcomes = []
                for j, lease in enumerate(leases):
                    kind = [OutcomeKind.RELEASED, OutcomeKind.RETRY, OutcomeKind.SUCCEEDED][j % 3]
                    if j == 4:
                        continue  # left running: its lease expires and reap requeues it
                    outcomes.append(
                        Outcome(
                            lease.message.id,
                            lease.token,
                            kind,
                            clock.now(),
                            retry_at=clock.now() + 4 if kind is OutcomeKind.RETRY else None,
                        )
                    )
                await b.settle(outcomes)
                clock.advance(5.5)
                await b.reap()
        for k, (b, _) in enumerate(backends):
            while leases := await b.claim(["q"], 7, 10.0, "w"):
                orders[k] += [lease.message.id for lease in leases]
                await b.settle(
                    [
                        Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, 0.0)
                        for lease in leases
                    ]
                )
        assert len(orders[0]) > 300
        assert orders[1] == orders[0]


# -- wake-ups ------------------------------------------------------------------------
async def test_notify_from_another_process_wakes_waiters(pg_dsn: str, pg_schema: str) -> None:
    clock = SystemClock()
    async with (
        open_backend(pg_dsn, pg_schema, clock) as consumer,
        open_backend(pg_dsn, pg_schema, clock) as producer,
    ):
        cancelled: list[str] = []
        got_cancel = anyio.Event()

        def on_cancel(task_id: str) -> None:
            cancelled.append(task_id)
            got_cancel.set()

        consumer.on_cancel(on_cancel)
        assert consumer._listener is not None
        for channel in ("ready", "done", "cancel"):  # what wait(), wait_done() do first
            await consumer._listener.listen(f"{pg_schema}.{channel}")
        # Only a NOTIFY sets these events (the system clock never wakes waiters).
        with consumer._waiters.ready(["q"]) as ready, anyio.fail_after(5):
            msg = make_message(clock)  # type: ignore[arg-type]
            await producer.enqueue([msg])
            await ready.wait()
        [lease] = await consumer.claim(["q"], 1, 30, "w")
        assert await producer.cancel([msg.id]) == [True]
        with anyio.fail_after(5):
            await got_cancel.wait()
        assert cancelled == [msg.id]
        await consumer._want_done()  # what wait_done does first: settles notify while any does
        with consumer._waiters.done(msg.id) as done, anyio.fail_after(5):
            out = Outcome(msg.id, lease.token, OutcomeKind.CANCELLED, clock.now())
            assert await producer.settle([out]) == [True]
            await done.wait()
        # And end to end: a worker blocked in wait() wakes on another process's enqueue.
        woke = anyio.Event()

        async def waiter() -> None:
            await consumer.wait(["q"], 60)
            woke.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await producer.enqueue([make_message(clock)])  # type: ignore[arg-type]
                await woke.wait()


async def test_the_listener_loses_no_notification_that_came_during_its_check(
    pg_dsn: str, pg_schema: str
) -> None:
    # a check every 10 ms: many notifications arrive while the listener's SELECT 1 is
    # out, which psycopg keeps aside; the listener must dispatch those too
    from taskcore_pg._notify import Channels, Listener, Waiters

    channels, waiters = Channels(pg_schema), Waiters()
    got: list[str] = []
    all_in = anyio.Event()

    def on_cancel(payload: str) -> None:
        got.append(payload)
        if len(got) == 300:
            all_in.set()

    waiters.on_cancel(on_cancel)
    listener = Listener(pg_dsn, {}, channels, waiters, check_every=0.01)
    await listener.listen(channels.cancel)
    try:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            for i in range(300):
                await conn.execute("SELECT pg_notify(%s, %s)", [channels.cancel, str(i)])
        with anyio.fail_after(10):
            await all_in.wait()
    finally:
        await listener.aclose()
    assert sorted(got, key=int) == [str(i) for i in range(300)]


async def _listening_sessions(dsn: str, application_name: str) -> int:
    """Sessions of ``application_name`` whose last statement was a LISTEN or the
    listener's check (pg_stat_activity keeps each session's last query)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND (query LIKE 'LISTEN %%' OR query = 'SELECT 1')"
    )
    return int(await _scalar(dsn, query, [application_name]))


async def test_a_backend_that_only_enqueues_listens_to_nothing(pg_dsn: str, pg_schema: str) -> None:
    # a producer's listener would be woken by every enqueue of every process (the
    # server signals each listening session at every commit that notifies): it
    # connects only once something waits, and then LISTENs on what that waits for
    name = f"tc-test-{uuid.uuid4().hex[:8]}"
    clock = SystemClock()
    async with open_backend(pg_dsn, pg_schema, clock, application_name=name) as backend:
        await backend.enqueue([make_message(clock) for _ in range(3)])  # type: ignore[arg-type]
        assert await backend.stats(["q"])
        assert backend._listener is not None and backend._listener.backend_pid is None
        assert await _listening_sessions(pg_dsn, name) == 0
        await backend.wait(["q"], 0)
        assert backend._listener.backend_pid is not None
        last = await _scalar(
            pg_dsn,
            "SELECT query FROM pg_stat_activity WHERE pid = %s",
            [backend._listener.backend_pid],
        )
        assert last.startswith(f'LISTEN "{pg_schema}.')


async def test_a_channel_wanted_later_is_listened_to_on_the_running_connection(
    pg_dsn: str, pg_schema: str
) -> None:
    # the listener already waits on the connection for "cancel"; a waiter then asks for
    # "ready": the listener must stop waiting, LISTEN (listen() returns only then, or
    # after operation_timeout, 30 s), and deliver the next enqueue's NOTIFY
    clock = SystemClock()
    async with (
        open_backend(pg_dsn, pg_schema, clock) as consumer,
        open_backend(pg_dsn, pg_schema, clock) as producer,
    ):
        heard = anyio.Event()
        consumer.on_cancel(lambda task_id: heard.set())
        assert consumer._listener is not None
        await consumer._listener.listen(f"{pg_schema}.cancel")
        pid = consumer._listener.backend_pid
        # a notification dispatched: the listener is back in its wait on the socket
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify(%s, 'x')", [f"{pg_schema}.cancel"])
        with anyio.fail_after(10):
            await heard.wait()
        # what wait() does: register, listen, look (here: nothing to look at), block
        with consumer._waiters.ready(["q"]) as ready, anyio.fail_after(10):
            await consumer._listener.listen(f"{pg_schema}.ready")
            await producer.enqueue([make_message(clock)])  # type: ignore[arg-type]
            await ready.wait()
        assert consumer._listener.backend_pid == pid  # the same connection


async def _registering_wait(backend: PostgresBackend, seconds: float = 0.05) -> None:
    """A wait that registers as an idle waiter (nothing is ready) and then times out.
    The listener is connected first: a wait whose time went on connecting it (a loaded
    machine) would have no time left to register."""
    assert backend._listener is not None
    await backend._listener.listen(backend._channels.ready, backend._channels.waiter)
    await backend.wait(["q"], seconds)


async def _registrations(dsn: str, schema: str) -> int:
    return await _count(dsn, schema, table="ready_waiters")


# how tasks become ready in each step, and how many of the three waiters are awake after
_READY_STEPS = {
    "enqueue": [("enqueue", 1, 1), ("enqueue", 2, 3)],  # a batch of two wakes two
    "release": [("release", 1, 1), ("release", 1, 2), ("enqueue", 1, 3)],
    "retry": [("retry", 1, 1), ("retry", 1, 2), ("enqueue", 1, 3)],
}


@pytest.mark.parametrize("how", sorted(_READY_STEPS))
async def test_ready_work_wakes_one_idle_worker_per_task_not_all(
    pg_dsn: str, pg_schema: str, how: str
) -> None:
    # three idle workers (three backends, as three processes would have): a task that
    # becomes ready (enqueued, released by a settle, retried by hand) wakes one of them
    # (before migration 0009 every NOTIFY of <schema>.ready woke all three, and each
    # ran a claim). The queue is paused: a look (each second) finds nothing, so only a
    # notification ends a wait.
    clock = FakeClock()  # registrations are judged by it: none expires
    async with contextlib.AsyncExitStack() as stack:
        consumers = [
            await stack.enter_async_context(open_backend(pg_dsn, pg_schema, clock))
            for _ in range(3)
        ]
        producer = await stack.enter_async_context(open_backend(pg_dsn, pg_schema, clock))
        held: list[Any] = []
        if how != "enqueue":  # two running tasks, failed for good to be retried
            await producer.enqueue([make_message(clock) for _ in range(2)])  # type: ignore[arg-type]
            held = await producer.claim(["q"], 2, 30, "w")
            assert len(held) == 2
            if how == "retry":
                failed = [
                    Outcome(x.message.id, x.token, OutcomeKind.FAILED, clock.now()) for x in held
                ]
                assert await producer.settle(failed) == [True, True]
        await producer.pause("q")
        synced = [anyio.Event() for _ in consumers]
        for i, consumer in enumerate(consumers):  # a channel to know what a listener read
            consumer.on_cancel(lambda task_id, i=i: synced[i].set())
        woke: list[int] = []

        async def waiter(i: int) -> None:
            await consumers[i].wait(["q"], 60)
            woke.append(i)

        async def all_read() -> None:
            # every listener has dispatched what was notified before this (in order),
            # and every waiter so woken has returned
            synced[:] = [anyio.Event() for _ in consumers]
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
                await conn.execute("SELECT pg_notify(%s, 'sync')", [f"{pg_schema}.cancel"])
            for event in synced:
                await event.wait()
            await anyio.wait_all_tasks_blocked()

        async def registered(n: int) -> bool:
            return await _registrations(pg_dsn, pg_schema) == n

        async def make_ready(step: str, n: int) -> None:
            if step == "enqueue":
                await producer.enqueue([make_message(clock) for _ in range(n)])  # type: ignore[arg-type]
                return
            mine, held[:n] = held[:n], []
            if step == "release":
                back = [
                    Outcome(x.message.id, x.token, OutcomeKind.RELEASED, clock.now()) for x in mine
                ]
                assert await producer.settle(back) == [True] * n
            else:
                assert await producer.retry([x.message.id for x in mine]) == [True] * n

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(waiter, i)
                await until(lambda: registered(3), timeout=10)
                for step, n, awake in _READY_STEPS[how]:
                    await make_ready(step, n)
                    await until(lambda awake=awake: len(woke) == awake)
                    await all_read()
                    assert len(woke) == awake, (step, n)
                    assert await _registrations(pg_dsn, pg_schema) == 3 - awake
                assert sorted(woke) == [0, 1, 2]


async def test_a_waiter_on_several_queues_is_woken_by_an_enqueue_to_any(
    pg_dsn: str, pg_schema: str
) -> None:
    # its registration names both queues; the enqueue to the second takes it and
    # names that queue in the notification, which wakes the waiter itself: nothing is
    # passed on to <schema>.ready (paused: only a notification ends the wait)
    clock = FakeClock()
    ready = f"{pg_schema}.ready"
    async with (
        open_backend(pg_dsn, pg_schema, clock) as consumer,
        open_backend(pg_dsn, pg_schema, clock) as producer,
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as ear,
    ):
        await ear.execute(f'LISTEN "{ready}"')
        for queue in ("a", "b"):
            await producer.pause(queue)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consumer.wait, ["a", "b"], 60)

                async def registered() -> bool:
                    return await _registrations(pg_dsn, pg_schema) == 1

                await until(registered, timeout=10)
                await producer.enqueue([make_message(clock, queue="b")])  # type: ignore[arg-type]
            assert await _registrations(pg_dsn, pg_schema) == 0
            await producer._fetchall("notify", {"channel": ready, "payload": "end"})
            heard = []
            async for note in ear.notifies():
                heard.append(note.payload)
                if note.payload == "end":
                    break
        assert heard == ["end"]


async def test_a_wake_up_for_a_waiter_that_moved_on_is_passed_to_all(
    pg_dsn: str, pg_schema: str
) -> None:
    # A's wait ended (its registration lives on for its slack; the fake clock does not
    # move, so it does not expire); an enqueue takes A's registration; A, with nobody
    # waiting, notifies <schema>.ready, which wakes B, waiting without a registration
    clock = FakeClock()
    async with (
        open_backend(pg_dsn, pg_schema, clock) as a,
        open_backend(pg_dsn, pg_schema, clock) as b,
        open_backend(pg_dsn, pg_schema, clock) as producer,
    ):
        await _registering_wait(a)
        assert await _registrations(pg_dsn, pg_schema) == 1
        assert b._listener is not None
        with b._waiters.ready(["q"]) as ready, anyio.fail_after(10):
            await b._listener.listen(f"{pg_schema}.ready")
            await producer.enqueue([make_message(clock)])  # type: ignore[arg-type]
            await ready.wait()
        assert await _registrations(pg_dsn, pg_schema) == 0


async def test_a_waiters_look_does_not_wait_for_a_transaction_that_took_its_registration(
    pg_dsn: str, pg_schema: str
) -> None:
    # an enqueue inside a caller's transaction takes (locks) the waiter's registration
    # until that transaction ends; the waiter's next look, which renews its
    # registration, must not wait for it (an upsert would: for operation_timeout)
    clock = FakeClock()
    async with (
        open_backend(pg_dsn, pg_schema, clock) as consumer,
        open_backend(pg_dsn, pg_schema, clock) as producer,
        await psycopg.AsyncConnection.connect(pg_dsn) as conn,
    ):
        await _registering_wait(consumer)
        msg = make_message(clock)  # type: ignore[arg-type]
        async with conn.transaction():
            await producer.enqueue_in(conn, [msg])
            with anyio.fail_after(5):
                await consumer.wait(["q"], 0.05)  # looks: nothing committed yet
        [lease] = await consumer.claim(["q"], 1, 30, "w")
        assert lease.message.id == msg.id


async def test_a_closed_backend_leaves_no_idle_registration_and_the_reaper_forgets_old_ones(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        await _registering_wait(backend)
        assert await _registrations(pg_dsn, pg_schema) == 1
    assert await _registrations(pg_dsn, pg_schema) == 0
    # one left by a process that vanished: enqueues skip it once it expired (its wait
    # plus 0.5 s), the reaper forgets it a minute later
    async with open_backend(pg_dsn, pg_schema, clock) as reaper:
        async with open_backend(pg_dsn, pg_schema, clock) as vanished:
            await _registering_wait(vanished)
            vanished._registered.clear()  # as if it died: aclose forgets nothing
        assert await _registrations(pg_dsn, pg_schema) == 1
        clock.advance(60.5)
        await reaper.reap()
        assert await _registrations(pg_dsn, pg_schema) == 1
        clock.advance(0.1)
        await reaper.reap()
        assert await _registrations(pg_dsn, pg_schema) == 0


async def test_poll_fallback_without_listen(pg_dsn: str, pg_schema: str) -> None:
    clock = SystemClock()
    async with (
        open_backend(pg_dsn, pg_schema, clock, listen=False, poll_interval=0.2) as consumer,
        open_backend(pg_dsn, pg_schema, clock) as producer,
    ):
        assert consumer._listener is None
        msg = make_message(clock)  # type: ignore[arg-type]
        done = anyio.Event()

        async def waiter() -> None:
            await consumer.wait(["q"], 60)
            [lease] = await consumer.claim(["q"], 1, 30, "w")
            out = Outcome(msg.id, lease.token, OutcomeKind.SUCCEEDED, clock.now(), result=b"1")
            await consumer.settle([out])
            done.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await producer.enqueue([msg])
                rec = await consumer.wait_done(msg.id, 60)
                assert rec is not None and rec.state is State.SUCCEEDED and rec.result == b"1"
                await done.wait()


async def test_a_wait_stopped_during_its_read_lets_the_read_finish(
    pg_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's stop() cancels its wait(); a read in flight then finishes instead of
    being cancelled on the server, which costs psycopg the connection (and warnings)."""
    async with open_backend(pg_dsn, pg_schema, SystemClock(), min_size=1, max_size=1) as backend:
        in_read = anyio.Event()
        real = backend._fetchall

        async def slow_ready(name: str, params: dict[str, Any], **kw: Any) -> Any:
            if name != "ready":
                return await real(name, params, **kw)
            in_read.set()

            async def op(conn: Any) -> Any:  # the read, held on the server a moment
                await conn.execute("SELECT pg_sleep(0.3)")
                return [(False,)]

            return await backend._run(op)

        backend._fetchall = slow_ready  # type: ignore[method-assign]
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(backend.wait, ["q"], 60)
                await in_read.wait()
                tg.cancel_scope.cancel()
        assert backend._pool is not None
        stats = backend._pool.get_stats()
        assert stats.get("connections_lost", 0) == 0, stats
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
        backend._fetchall = real  # type: ignore[method-assign]
        await backend.enqueue([make_message(backend.clock)])  # type: ignore[arg-type]
        assert len(await backend.claim(["q"], 1, 30, "w")) == 1  # the connection still works


# -- connection loss -----------------------------------------------------------------
async def _terminate(dsn: str, app: str) -> int:
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s"
    )
    return int(await _scalar(dsn, query, [app]))


async def test_recovers_after_connections_are_terminated(pg_dsn: str, pg_schema: str) -> None:
    clock = FakeClock()
    app = f"taskcore-test-{uuid.uuid4().hex[:8]}"
    async with open_backend(
        pg_dsn, pg_schema, clock, application_name=app, min_size=2, max_size=4
    ) as backend:
        ids = [r.id for r in await backend.enqueue([make_message(clock) for _ in range(100)])]
        assert await _terminate(pg_dsn, app) >= 2  # pool connections and the listener

        # Reads retry once on a fresh connection: no error at all.
        rec = await backend.get(ids[0])
        assert rec is not None and rec.state is State.QUEUED

        assert await _terminate(pg_dsn, app) >= 1
        # Writes surface at most one BackendUnavailable per dead connection, chained to
        # the driver's error, and then work again.
        failures = 0
        leases = []
        while len(leases) < 100:
            try:
                leases += await backend.claim(["q"], 25, 30, "w")
            except BackendUnavailable as exc:
                assert isinstance(exc.__cause__, psycopg.OperationalError)
                failures += 1
                assert failures <= 4
        assert sorted(lease.message.id for lease in leases) == sorted(ids)
        outcomes = [
            Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())
            for lease in leases
        ]
        # (claims run on sessions of their own: the settle meets the pool's dead ones)
        while True:
            try:
                assert await backend.settle(outcomes) == [True] * 100
                break
            except BackendUnavailable as exc:
                assert isinstance(exc.__cause__, psycopg.OperationalError)
                failures += 1
                assert failures <= 4
        [stats] = await backend.stats(["q"])
        assert stats.states[State.SUCCEEDED] == 100 and stats.depth == 0

        # The claim sessions recover the same way (the claim connection dies too)
        more = [r.id for r in await backend.enqueue([make_message(clock) for _ in range(3)])]
        assert await _terminate(pg_dsn, app) >= 2
        claim_failures = 0
        got: list[str] = []
        while len(got) < 3:
            try:
                got += [x.message.id for x in await backend.claim(["q"], 3, 30, "w")]
            except BackendUnavailable as exc:
                assert isinstance(exc.__cause__, psycopg.OperationalError)
                claim_failures += 1
                assert claim_failures <= 2
        assert claim_failures >= 1 and sorted(got) == sorted(more)
        assert await backend.get(more[0]) is not None  # (a read: retried, the pool checked)

        # The listener reconnects by itself and wakes waiters again.
        woke = anyio.Event()

        async def waiter() -> None:
            await backend.wait(["q"], 60)
            woke.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await backend.enqueue([make_message(clock)])
                await woke.wait()


# -- retention -----------------------------------------------------------------------
async def test_retention_prunes_in_bounded_batches(pg_dsn: str, pg_schema: str) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock, batch_size=1000) as backend:
        await backend.enqueue([make_message(clock) for _ in range(2600)])
        leases = await backend.claim(["q"], 3000, 30, "w")
        ttl = list(leases[:2500])
        await backend.settle(
            [
                Outcome(
                    lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now(), result_ttl=10
                )
                for lease in ttl
            ]
        )
        await backend.settle(
            [
                Outcome(lease.message.id, lease.token, OutcomeKind.DEAD, clock.now())
                for lease in leases[2500:]
            ]
        )
        clock.advance(11)
        assert await backend.prune_expired(batch_size=1000, max_batches=1) == 1000
        assert await _count(pg_dsn, pg_schema) == 1600
        assert await backend.prune_expired(batch_size=600, max_batches=2) == 1200
        await backend.reap()  # the reaper expires the rest, batch by batch
        assert await _count(pg_dsn, pg_schema) == 100
        clock.advance(3600)
        assert await backend.prune_finished(older_than=3000, batch_size=30) == 100
        assert await _count(pg_dsn, pg_schema) == 0


async def test_settle_sends_at_most_batch_size_outcomes_per_statement(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's settle batch grows with the previous settle's round trip; the
    backend splits it so that no statement (and no connection buffer) grows with it,
    and each outcome still gets its own answer."""
    from taskcore_pg import _rows

    sizes: list[int] = []
    settle_params = _rows.settle_params

    def spy(outcomes: Any, now: float) -> dict[str, Any]:
        sizes.append(len(outcomes))
        return settle_params(outcomes, now)

    monkeypatch.setattr(_rows, "settle_params", spy)
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock, batch_size=3) as backend:
        await backend.enqueue([make_message(clock) for _ in range(8)])
        leases = await backend.claim(["q"], 8, 30, "w")
        assert len(leases) == 8
        outcomes = [
            Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())
            for lease in leases
        ]
        stale = leases[2]
        outcomes[2] = Outcome(stale.message.id, stale.token + 1, OutcomeKind.SUCCEEDED, clock.now())
        outcomes.append(outcomes[5])  # named twice: the second is refused
        accepted = await backend.settle(outcomes)
        assert accepted == [True, True, False, True, True, True, True, True, False]
        assert sizes == [3, 3, 2, 1]
        stored = [await backend.get(lease.message.id) for lease in leases]
        assert [r.state if r else None for r in stored] == [
            State.RUNNING if i == 2 else State.SUCCEEDED for i in range(8)
        ]


async def test_reaper_forgets_refilled_token_buckets(pg_dsn: str, pg_schema: str) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        for i in range(50):
            assert await backend.take_tokens(f"customer-{i}", 1.0, 5.0) == 0
        await backend.take_tokens("drained", 1.0, 5.0, n=5)
        clock.advance(2)
        await backend.reap()
        assert await _count(pg_dsn, pg_schema, table="buckets") == 1  # "drained" is not full yet
        clock.advance(3)
        await backend.reap()
        assert await _count(pg_dsn, pg_schema, table="buckets") == 0


async def test_reaper_forgets_joins_that_can_no_longer_complete(
    pg_dsn: str, pg_schema: str
) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        await settle_half_a_chord(backend, clock)  # a chord whose other member died
        assert await _count(pg_dsn, pg_schema, f"expires_at = {clock.now() + 100}", "joins") == 1
        clock.advance(99)
        await backend.reap()
        assert await _count(pg_dsn, pg_schema, table="joins") == 1
        clock.advance(1)
        await backend.reap()
        assert await _count(pg_dsn, pg_schema, table="joins") == 0


async def test_joins_from_before_migration_7_get_the_longest_result_retention(
    pg_dsn: str, pg_schema: str
) -> None:
    from taskcore_pg._sql import migrations, render

    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        for version, _, text in migrations():
            if version < 7:
                await conn.execute(render(text, pg_schema))
        await conn.execute(f"INSERT INTO \"{pg_schema}\".joins VALUES ('cb', '{{a}}')")
        [seven] = [text for version, _, text in migrations() if version == 7]
        await conn.execute(render(seven, pg_schema))
        cur = await conn.execute(
            f'SELECT expires_at - extract(epoch FROM now()) FROM "{pg_schema}".joins'
        )
        row = await cur.fetchone()
        assert row is not None and 365 * 86400 - 60 < row[0] <= 365 * 86400


async def test_purge_works_in_batches(pg_dsn: str, pg_schema: str) -> None:
    clock = FakeClock()
    async with open_backend(pg_dsn, pg_schema, clock, batch_size=100) as backend:
        await backend.enqueue([make_message(clock) for _ in range(250)])
        await backend.enqueue([make_message(clock, delay=100) for _ in range(5)])
        assert await backend.purge("q", [State.QUEUED, State.SCHEDULED]) == 255
        assert await _count(pg_dsn, pg_schema) == 0


async def _done_waiters(dsn: str, schema: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(f'SELECT id FROM "{schema}".done_waiters ORDER BY id')
        return [row[0] for row in await cur.fetchall()]


async def test_settles_notify_done_only_while_a_process_waits_for_results(
    pg_dsn: str, pg_schema: str
) -> None:
    """Nobody waiting for results: a settle sends no ``done`` notification (every
    LISTENing session of the database would be woken by one). A process that waits
    registers first; then settles notify, and closing it (or, for a process that
    vanished, the reaper once the registration expired) stops them again."""
    clock = FakeClock()
    async with (
        open_backend(pg_dsn, pg_schema, clock, listen=False) as worker,
        await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as ear,
    ):
        await ear.execute(f'LISTEN "{pg_schema}.done"')
        msgs = [make_message(clock) for _ in range(3)]
        await worker.enqueue(msgs)
        leases = {x.message.id: x for x in await worker.claim(["q"], 3, 30, "w")}

        async def settle(msg: Any) -> None:
            lease = leases[msg.id]
            out = Outcome(msg.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())
            assert await worker.settle([out]) == [True]

        await settle(msgs[0])  # nobody waits: no notification
        async with open_backend(pg_dsn, pg_schema, clock) as waiting:
            handle = await waiting.wait_done(msgs[0].id, 5)
            assert handle is not None and handle.state is State.SUCCEEDED
            assert await _done_waiters(pg_dsn, pg_schema) == [waiting._done_id]
            await settle(msgs[1])  # now it does
        assert await _done_waiters(pg_dsn, pg_schema) == []  # closed: forgotten
        await settle(msgs[2])
        # one more notification after that, to know that nothing else came before it
        await ear.execute(f"NOTIFY \"{pg_schema}.done\", 'end'")
        got = []
        with anyio.fail_after(5):
            async for note in ear.notifies():
                got.append(note.payload)
                if note.payload == "end":
                    break
        assert got == [msgs[1].id, "end"]

        # a registration left by a process that vanished lasts until it expires
        async with open_backend(pg_dsn, pg_schema, clock) as vanished:
            await vanished._want_done()
            vanished._done_until = -float("inf")  # as if it died: aclose forgets nothing
        assert len(await _done_waiters(pg_dsn, pg_schema)) == 1
        clock.advance(299)
        await worker.reap()
        assert len(await _done_waiters(pg_dsn, pg_schema)) == 1
        clock.advance(2)
        await worker.reap()
        assert await _done_waiters(pg_dsn, pg_schema) == []


@contextlib.asynccontextmanager
async def one_task_and_a_session(
    dsn: str, schema: str, clock: FakeClock
) -> AsyncIterator[tuple[PostgresBackend, Message, psycopg.AsyncConnection[Any]]]:
    """A backend (polling results every second) holding one queued task, and a session
    of the test's own for holding row locks in an open transaction."""
    async with (
        open_backend(dsn, schema, clock, poll_interval=1.0) as backend,
        await psycopg.AsyncConnection.connect(dsn) as session,
    ):
        msg = make_message(clock)
        await backend.enqueue([msg])
        yield backend, msg, session


async def test_a_result_waiter_sees_a_settle_that_committed_after_its_first_check(
    pg_dsn: str, pg_schema: str
) -> None:
    """The race of the lazy ``done`` notification: a settle decided not to notify (no
    waiter registered yet) and is still committing when a waiter registers and looks
    at the task. Its first look is a locking read: it waits for that settle to end and
    sees the task finished, instead of 'running' and then no notification. (The settle
    here is a transaction held open by hand, which sends no notification.)"""
    clock = FakeClock()
    async with one_task_and_a_session(pg_dsn, pg_schema, clock) as (backend, msg, settler):
        [lease] = await backend.claim(["q"], 1, 30, "w")
        await settler.execute(
            f'UPDATE "{pg_schema}".tasks SET state = %s, result = %s, finished_at = %s'
            " WHERE id = %s AND token = %s",
            ["succeeded", b"42", clock.now(), msg.id, lease.token],
        )  # in a transaction, not committed
        got: list[Any] = []

        async def waiter() -> None:
            # less than poll_interval: without the locking read it would return 'running'
            got.append(await backend.wait_done(msg.id, 0.5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            # the waiter's first read queues behind the settle's lock (server state,
            # observed: nothing to await)
            with anyio.fail_after(5):
                while not await _lock_waiters(pg_dsn, settler.info.backend_pid):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await settler.commit()
        [record] = got
        assert record is not None and record.state is State.SUCCEEDED and record.result == b"42"
        # later waits of the same registration read without locking (and still see it)
        again = await backend.wait_done(msg.id, 0.5)
        assert again is not None and again.state is State.SUCCEEDED


async def test_a_result_waiter_takes_no_lock_on_a_queued_task(pg_dsn: str, pg_schema: str) -> None:
    """Only a running task can have a settle in flight, so only a running task gets the
    locking read. A share lock on a queued row would make a claim's SKIP LOCKED pass it
    over for that moment, and the task behind it would start first; here a claim holds
    the row's lock, and the waiter's reads must not queue behind it."""
    async with one_task_and_a_session(pg_dsn, pg_schema, FakeClock()) as (backend, msg, claimer):
        await claimer.execute(
            f'SELECT id FROM "{pg_schema}".tasks WHERE id = %s FOR UPDATE', [msg.id]
        )  # a claim's lock, in a transaction left open
        with anyio.fail_after(5):  # a locking read would wait for the claimer's rollback
            record = await backend.wait_done(msg.id, 0.2)
        assert record is not None and record.state is State.QUEUED
        await claimer.rollback()


async def _lock_waiters(dsn: str, blocker: int) -> int:
    """How many sessions wait for a lock held by the session ``blocker``."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            [blocker],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_role_that_may_only_read_waits_for_results_by_polling(
    pg_dsn: str, pg_schema: str
) -> None:
    """Registering as a result waiter writes (and the locking read needs UPDATE): a
    process whose role may only read gets its results by polling, as before."""
    clock = FakeClock()
    role = f"tc_ro_{uuid.uuid4().hex[:8]}"
    async with open_backend(pg_dsn, pg_schema, clock) as backend:
        msg = make_message(clock)
        await backend.enqueue([msg])
        [lease] = await backend.claim(["q"], 1, 30, "w")
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            try:
                await admin.execute(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO {role}')
                await admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{pg_schema}" TO {role}')
                info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
                info["user"] = role
                reader_dsn = psycopg.conninfo.make_conninfo(**info)
                async with open_backend(
                    reader_dsn, pg_schema, clock, migrate_on_start=False, poll_interval=0.05
                ) as reader:
                    running = await reader.wait_done(msg.id, 0.01)
                    assert running is not None and running.state is State.RUNNING
                    out = Outcome(msg.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())
                    assert await backend.settle([out]) == [True]
                    done = await reader.wait_done(msg.id, 5)
                    assert done is not None and done.state is State.SUCCEEDED
                    assert reader._done_refused
            finally:
                await admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{pg_schema}" FROM {role}')
                await admin.execute(f'REVOKE ALL ON SCHEMA "{pg_schema}" FROM {role}')
                await admin.execute(f"DROP ROLE {role}")
