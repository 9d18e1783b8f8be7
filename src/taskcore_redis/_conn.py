"""The connection: a redis-py asyncio client, scripts, error translation and retries."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import select
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskcore.errors import BackendError, BackendUnavailable

from ._config import RedisConfig
from ._scripts import Call, Scripts, evalsha

__all__ = ["Connection"]

T = TypeVar("T")

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C, ~8x faster than redis-py's Python packer
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis < 2.1, or redis-py without it
    _hiredis_pack = None

# Connections kept out of the pool for execute(), at most one per this many of the
# pool's (they count as in use there, so the pool's limit holds).
_KEEP_PER = 8


class Connection:
    """One pool of connections to one Redis server.

    redis-py's own retries are switched off: a script that ran on the server but
    whose reply was lost must not run again when running it twice changes the
    result (claim, settle, take_tokens...). :meth:`call` retries only what the
    caller marks idempotent.
    """

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.pool = BlockingConnectionPool(
            max_connections=config.max_connections,
            timeout=config.pool_timeout,
            retry=Retry(NoBackoff(), 0),
            **config.connection,
        )
        self.redis = Redis(connection_pool=self.pool)
        self.scripts = Scripts()
        self._backoff = ExponentialBackoff(cap=1.0, base=0.05)
        self._kept: list[str] = []  # reply keys whose replies arrived
        get = inspect.signature(self.pool.get_connection).parameters.get("command_name")
        self._legacy_get = get is not None and get.default is inspect.Parameter.empty
        # Idle connections execute() keeps for itself (see _take()).
        self._idle: deque[Any] = deque()
        self._keep = config.max_connections // _KEEP_PER
        kwargs = self.pool.connection_kwargs
        utf8 = str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-") in ("utf-8", "utf8")
        strict = kwargs.get("encoding_errors", "strict") == "strict"
        self._hiredis = _hiredis_pack if utf8 and strict else None

    async def open(self) -> None:
        await self.call("load scripts", lambda: self.scripts.load(self.redis))

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies, a refused command's
        ``ResponseError`` in its place: one round trip, as a redis-py pipeline,
        without the pipeline's per-command bookkeeping (response callbacks, retry
        wrapper, operation metrics), which costs about as much client CPU as the rest
        of the round trip (docs/redis.md, Latency).

        The connection comes from :meth:`_take`, which checks it itself: callers need
        no checkpoint first (``call(..., checked=True)``). A connection that fails or
        is cancelled mid-way is disconnected (by redis-py, or here) before it goes
        back to the pool, so no reply is left unread on it.
        """
        conn = await self._take()
        try:
            await self._send(conn, self._pack(conn, commands))
            out: list[Any] = []
            for _ in commands:
                try:
                    out.append(await conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
        except BaseException:
            await conn.disconnect(nowait=True)
            await self.pool.release(conn)
            raise
        await self._give_back(conn)
        return out

    async def _take(self) -> Any:
        """A connection for one request: a kept one if it is fit, else the pool's.

        redis-py's ``BlockingConnectionPool`` costs ~50 µs of client CPU per get and
        release (a condition, a timeout, metrics and events). A kept connection is
        used as it is if its socket has nothing to read (an idle connection has no
        reply pending, so anything there is an EOF or an error the server sent before
        closing it): one ``select()`` of it, no turn of the event loop. Otherwise it
        goes back to the pool, which checks it as it checks any (reconnected if the
        server closed it).
        """
        while self._idle:
            conn = self._idle.pop()
            if _quiet(conn):
                return conn
            await self.pool.release(conn)
        # From the pool: one turn of the event loop first, so that connections the
        # server closed while they sat there are seen closed and replaced.
        await anyio.lowlevel.checkpoint()
        return await self._get_connection()

    async def _give_back(self, conn: Any) -> None:
        """Keep ``conn`` for :meth:`_take` if there is room, else release it to the pool."""
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            await self.pool.release(conn)

    def _pack(self, conn: Any, commands: Sequence[Sequence[Any]]) -> Any:
        pack = self._hiredis
        if pack is not None:
            try:
                return b"".join([pack(tuple(c)) for c in commands])
            except TypeError:  # a type hiredis does not take: redis-py says which
                pass
        return conn.pack_commands(commands)

    @staticmethod
    async def _send(conn: Any, packed: Any, health: bool = True) -> None:
        """Write ``packed`` on ``conn``: redis-py's ``send_packed_command`` without its
        ``asyncio.wait_for`` (on Python 3.11 a new task and a turn of the event loop
        per write) when the kernel takes the whole write at once, the usual case; the
        same errors, and the same disconnect on any failure.

        ``health``: PING first if the connection sat idle beyond redis-py's
        ``health_check_interval`` (only while no reply is pending on it).
        """
        writer = getattr(conn, "_writer", None)
        if (
            writer is None
            or writer.transport.is_closing()
            or (health and conn.health_check_interval and _now() > conn.next_health_check)
        ):  # not connected, or a PING is due: redis-py's own path
            await conn.send_packed_command(packed, health)
            return
        try:
            if isinstance(packed, bytes):
                writer.write(packed)
            else:
                writer.writelines(packed)
            if writer.transport.get_write_buffer_size():  # the kernel's buffer is full
                with anyio.fail_after(conn.socket_timeout or float("inf")):
                    await writer.drain()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise

    def _get_connection(self) -> Any:
        get: Any = self.pool.get_connection  # untyped in redis-py
        # redis-py < 5.3 wants a command name (and ignores it); later ones warn about it
        return get("EVALSHA") if self._legacy_get else get()

    async def close(self) -> None:
        while self._idle:
            await self.pool.release(self._idle.pop())
        if self._kept:
            with contextlib.suppress(RedisError, OSError):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key in self._kept:
                        pipe.unlink(key)
                    await pipe.execute()
            self._kept = []
        await self.redis.aclose()
        await self.pool.disconnect()

    async def call(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = True,
        task_id: str | None = None,
        checked: bool = False,
    ) -> T:
        """Run ``fn`` translating driver errors; retry with backoff if idempotent.

        ``checked``: ``fn`` sends through :meth:`execute`, which checks its
        connection itself, so the turn of the event loop that lets the pool see
        closed connections is not needed.
        """
        attempts = self.config.retries + 1 if idempotent else 1
        for attempt in range(attempts):
            if not checked:
                # One turn of the event loop first, so that connections the server
                # closed while they sat in the pool are seen closed and replaced.
                await anyio.lowlevel.checkpoint()
            try:
                return await fn()
            except _UNAVAILABLE as exc:
                if attempt + 1 >= attempts:
                    raise BackendUnavailable(
                        f"Redis at {self._where()} is unavailable during {what}: {exc}; "
                        + (
                            f"gave up after {attempts} attempts"
                            if idempotent
                            else "not retried because running it twice could change the "
                            "result; the caller may retry"
                        ),
                        task_id=task_id,
                    ) from exc
                await anyio.sleep(self._backoff.compute(attempt + 1))
            except RedisError as exc:
                raise BackendError(f"Redis refused {what}: {exc}", task_id=task_id) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(
        self,
        what: str,
        calls: Sequence[Call],
        *,
        idempotent: bool = True,
        task_id: str | None = None,
        again: bool = False,
    ) -> list[Any]:
        """Run script calls in one pipeline (see :meth:`Scripts.run`).

        Kept replies (see ``_REPLAY`` in :mod:`._scripts`) are only needed until the
        reply arrives; they are deleted in the next round trip, so they cost memory
        only for the few that are in flight. A retry sends the calls marked as sent
        again (so do callers whose first sending lost its reply: ``again``), and only
        then do the scripts look for a kept reply.
        """
        unlink, self._kept = self._kept[:256], self._kept[256:]
        sent = again

        async def send() -> list[Any]:
            nonlocal sent
            resend, sent = sent, True
            return await self.scripts.run(self, calls, unlink, resend)

        try:
            result = await self.call(
                what,
                send,
                idempotent=idempotent,
                task_id=task_id,
                checked=True,
            )
        except BaseException:
            self._kept += unlink
            raise
        self._kept += [keys[1] for _, keys, _ in calls if len(keys) > 1]
        return result

    async def run_streamed(
        self, what: str, calls: Iterable[Call], take: Callable[[int, Any], None]
    ) -> None:
        """Run script calls in order on one connection, each sent as soon as ``calls``
        yields it: the caller builds call k+1 while the server runs call k (Redis runs
        one connection's commands in order, so they run in the order given). Call k's
        reply goes to ``take(k, reply)`` as soon as it is read, while the server may
        still run the calls after it.

        Every call must carry a request id (its reply key, see :meth:`run`). If the
        connection is lost or a script is refused (NOSCRIPT), whatever has not answered
        yet is sent again through :meth:`run`, with its retries: a call that did run
        returns its kept reply, so nothing runs twice.
        """
        it = iter(calls)
        sent: list[Call] = []
        replies: list[Any] = []
        unlink, self._kept = self._kept[:256], self._kept[256:]
        try:
            conn = await self._take()
            try:
                health = True  # the health check, before the first command only
                if unlink:  # one key per command: they may be in different slots
                    await self._send(conn, self._pack(conn, [("UNLINK", k) for k in unlink]))
                    health = False
                for call in it:
                    sent.append(call)
                    await self._send(conn, self._pack(conn, [evalsha(call)]), health)
                    health = False
                for _ in unlink:
                    await conn.read_response()
                unlink = []
                while len(replies) < len(sent):
                    replies.append(await conn.read_response())
                    take(len(replies) - 1, replies[-1])
            except BaseException:
                # Replies may be left unread: the connection must not be used again.
                await conn.disconnect(nowait=True)
                await self.pool.release(conn)
                raise
            await self._give_back(conn)
        except (*_UNAVAILABLE, RedisError):
            # Lost, timed out, or refused (NOSCRIPT, or an error that run() raises
            # again): send what has not answered through run(), which retries.
            self._kept += unlink
            self._kept += [keys[1] for _, keys, _ in sent[: len(replies)]]
            rest = [*sent[len(replies) :], *it]  # (the first ones may have run)
            for k, reply in enumerate(await self.run(what, rest, again=True), len(replies)):
                take(k, reply)
            return
        except BaseException:
            self._kept += unlink
            raise
        self._kept += [keys[1] for _, keys, _ in sent]

    def _where(self) -> str:
        c = self.config.connection
        if "path" in c:
            return str(c["path"])
        return f"{c.get('host', '127.0.0.1')}:{c.get('port', 6379)}/{c.get('db', 0)}"


def _now() -> float:
    """The event loop's time, as redis-py's health checks read it (anyio's
    ``current_time()`` costs several times more)."""
    return asyncio.get_running_loop().time()


def _quiet(conn: Any) -> bool:
    """True if ``conn`` is connected and its socket has nothing to read."""
    writer = getattr(conn, "_writer", None)
    if writer is None or writer.transport.is_closing():
        return False
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return not readable
