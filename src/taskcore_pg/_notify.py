"""Wake-ups: a dedicated LISTEN connection and the waiters it wakes.

Writers ``NOTIFY`` three channels per schema: ``<schema>.ready`` (payload: a queue
name) when tasks become ready, ``<schema>.done`` (comma-separated task ids) when tasks
end (settles: only while some process waits for results, see
``PostgresBackend._want_done``), and ``<schema>.cancel`` (a task id) when cancellation
of a running task is asked for; and an enqueue that took an idle waiter's registration
(migration 0009) notifies that backend's own channel, ``<schema>.w.<id>`` (payload: a
queue name) instead of ``ready``. One connection per backend listens, from its first
wait on, to what it waits for, and wakes the matching waiters. Lost notifications are
harmless: every waiter also polls (see ``poll_interval``), and the listener wakes
everybody whenever it reconnects.

A LISTEN connection is silent when nothing happens, so a peer that vanished without a
FIN or RST would go unnoticed: every ``check_every`` seconds the listener runs a
trivial query, and reconnects if no answer comes within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import psycopg
from psycopg import sql
from psycopg.pq import ConnStatus

__all__ = ["Channels", "Listener", "Waiters"]

log = logging.getLogger("taskcore_pg")


class Channels:
    """The schema's channels, and ``waiter``: the one only this backend LISTENs on, which
    an enqueue that took its registration as an idle waiter notifies (migration 0009);
    its payload is a queue name, as on ``ready``."""

    def __init__(self, schema: str, uid: str = "") -> None:
        self.ready = f"{schema}.ready"
        self.done = f"{schema}.done"
        self.cancel = f"{schema}.cancel"
        self.waiter = f"{schema}.w.{uid}"  # at most 63 bytes: schema 48, uid 12


class Waiters:
    """Events of coroutines waiting for a queue to get work or a task to end."""

    def __init__(self) -> None:
        self._ready: dict[str, set[anyio.Event]] = {}
        self._done: dict[str, set[anyio.Event]] = {}
        self._cancel_callbacks: list[Callable[[str], None]] = []
        self._unheard: Callable[[str], None] | None = None

    @contextlib.contextmanager
    def ready(self, queues: Iterable[str]) -> Iterator[anyio.Event]:
        event = anyio.Event()
        names = list(queues)
        for name in names:
            self._ready.setdefault(name, set()).add(event)
        try:
            yield event
        finally:
            for name in names:
                self._discard(self._ready, name, event)

    @contextlib.contextmanager
    def done(self, task_id: str) -> Iterator[anyio.Event]:
        event = anyio.Event()
        self._done.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            self._discard(self._done, task_id, event)

    @staticmethod
    def _discard(table: dict[str, set[anyio.Event]], key: str, event: anyio.Event) -> None:
        events = table.get(key)
        if events is not None:
            events.discard(event)
            if not events:
                del table[key]

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    def on_unheard(self, callback: Callable[[str], None]) -> None:
        """``callback(queue)`` when this backend's own channel names a queue nobody here
        waits for any more (its registration outlived its wait): the backend passes
        the wake-up on to every waiter."""
        self._unheard = callback

    def dispatch(self, channel: str, payload: str, channels: Channels) -> None:
        if channel == channels.ready:
            for event in self._ready.get(payload, ()):
                event.set()
        elif channel == channels.waiter:
            events = self._ready.get(payload)
            if events:
                for event in events:
                    event.set()
            elif self._unheard is not None:
                self._unheard(payload)
        elif channel == channels.done:
            for task_id in payload.split(","):
                for event in self._done.get(task_id, ()):
                    event.set()
        elif channel == channels.cancel:
            for callback in self._cancel_callbacks:
                callback(payload)

    def wake_all(self) -> None:
        """Wake every waiter (the clock moved, or notifications may have been lost)."""
        for table in (self._ready, self._done):
            for events in table.values():
                for event in events:
                    event.set()


class Listener:
    """Owns the LISTEN connection; reconnects with backoff if it breaks or stops
    answering.

    Nothing is connected until a channel is wanted: a process that only enqueues never
    waits, and a listener of ``ready`` there would be woken by every enqueue of every
    process (the server signals each listening session at each commit that notifies).
    :meth:`listen` LISTENs on channels (once per connection) before it returns, so
    a waiter that listens before it looks misses no notification; :meth:`want` asks for
    one without waiting (the cancel callbacks).
    """

    def __init__(
        self,
        conninfo: str,
        kwargs: dict[str, Any],
        channels: Channels,
        waiters: Waiters,
        *,
        check_every: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        self._check_every = check_every
        self._timeout = timeout  # for a connect, and for listen() to wait for it
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._channels = channels
        self._waiters = waiters
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted: set[str] = set()
        self._listening: set[str] = set()  # LISTENed on the current connection
        self._failing = False  # the last attempt to connect or LISTEN failed
        self._closed = False
        self._changed: asyncio.Event | None = None  # set when the two above change
        self._wakeup: asyncio.Future[None] | None = None  # the dispatcher's wait

    def want(self, channel: str) -> None:
        """Ask for ``channel`` without waiting: LISTENed as soon as the connection is
        free (at once if the dispatcher is waiting)."""
        if self._closed or channel in self._wanted:
            return
        self._wanted.add(channel)
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not in the event loop: the next listen() starts it
                return
            self._task = loop.create_task(self._run(), name="taskcore_pg.listen")
        elif self._wakeup is not None:
            _resolve(self._wakeup)

    async def listen(self, *channels: str) -> None:
        """LISTEN on ``channels``; returns once the server confirmed it, or at once while
        the listener cannot connect (it keeps trying; waiters poll meanwhile)."""
        if self._listening.issuperset(channels):
            return
        for channel in channels:
            self.want(channel)
        if self._task is None and not self._closed:  # want() ran outside the loop
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="taskcore_pg.listen"
            )
        with anyio.move_on_after(self._timeout):
            while not (self._listening.issuperset(channels) or self._failing or self._closed):
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    def hears(self, channel: str) -> bool:
        """Whether ``channel`` is LISTENed on the current connection."""
        return channel in self._listening

    def _signal(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        with anyio.fail_after(self._timeout):
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, **self._kwargs
            )

    async def _run(self) -> None:
        backoff = 0.1
        connected_before = False
        while True:
            conn = self._conn
            try:
                if conn is None or conn.closed:
                    self._listening = set()
                    conn = self._conn = await self._connect()
                    backoff = 0.1
                    if connected_before:
                        self._waiters.wake_all()  # notifications may have been missed
                    connected_before = True
                missing = sorted(self._wanted - self._listening)
                for channel in missing:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if missing or self._failing:
                    self._listening.update(missing)
                    self._failing = False
                    self._signal()
                if await self._dispatch_for(conn, self._check_every):
                    continue  # asked for another channel
                with anyio.fail_after(self._check_every):
                    await conn.execute("SELECT 1")
            except (psycopg.Error, OSError, TimeoutError) as exc:
                what = str(exc) or f"no answer within {self._check_every:g} s"
                log.warning("taskcore_pg: LISTEN connection lost (%s); reconnecting", what)
                self._listening = set()
                self._failing = True
                self._signal()
                self._waiters.wake_all()
                if self._conn is not None:
                    await self._conn.close()
                self._conn = None
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _dispatch_for(self, conn: psycopg.AsyncConnection[Any], seconds: float) -> bool:
        """Dispatch the notifications that arrive within ``seconds``; True if it stopped
        early because another channel is wanted.

        Waits for the socket to become readable and reads with libpq, the textbook
        pattern: psycopg's ``notifies()`` wakes every 0.1 s to check for interrupts,
        ten wake-ups a second of a worker that has nothing to do. Nothing else runs on
        this connection meanwhile; what came during its other commands (LISTEN, the
        check) psycopg kept, and ``notifies(timeout=0)`` returns it first.
        """
        async for note in conn.notifies(timeout=0):
            self._waiters.dispatch(note.channel, note.payload, self._channels)
        loop = asyncio.get_running_loop()
        pgconn, encoding = conn.pgconn, conn.info.encoding
        fd = pgconn.socket
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            if not self._wanted <= self._listening:
                return True
            readable = self._wakeup = loop.create_future()
            loop.add_reader(fd, _resolve, readable)
            try:
                with anyio.move_on_after(remaining):
                    await readable
            finally:
                loop.remove_reader(fd)
                self._wakeup = None
            if not readable.done():
                return False
            pgconn.consume_input()  # psycopg.OperationalError if the connection broke
            if pgconn.status != ConnStatus.OK:  # (not to spin on a socket left readable)
                raise psycopg.OperationalError("the LISTEN connection was closed")
            while (n := pgconn.notifies()) is not None:
                self._waiters.dispatch(
                    n.relname.decode(encoding), n.extra.decode(encoding), self._channels
                )
        return False

    @property
    def backend_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def aclose(self) -> None:
        self._closed = True
        self._signal()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
