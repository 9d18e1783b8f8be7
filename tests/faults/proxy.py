"""A TCP proxy that tests break on purpose, between clients and a Redis or PostgreSQL
server. Used by tests/redis (in the test's own event loop) and by tests/faults (in a
thread of its own, in front of worker processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from anyio.from_thread import BlockingPortal, start_blocking_portal

__all__ = ["TcpProxy", "proxy_in_thread"]

T = TypeVar("T")


class TcpProxy:
    """Forwards TCP connections to ``host:port`` until told to break them.

    ``drop()`` cuts every open connection; ``swallow_next_reply()`` forwards the next
    request but cuts the connection instead of delivering its reply (the command ran,
    the client never hears back); ``refuse_requests()`` cuts the connection on chosen
    requests (they never reach the server); ``stop()``/``start()`` simulate an outage (new
    connections are refused); ``blackhole()``/``forward()`` simulate a peer that vanished
    silently (a firewall dropping packets, a dead host): connections stay open and new
    ones are accepted, but no byte gets through either way and nothing is closed.
    ``round_trips`` counts the times bytes came back after bytes went out (over all
    connections: count on a client that uses one). ``url`` is ``upstream_url`` pointed at the proxy
    (default: a Redis URL for database 0).
    """

    def __init__(self, host: str, port: int, upstream_url: str | None = None) -> None:
        self.host, self.port = host, port
        self.upstream_url = upstream_url or f"redis://{host}:{port}/0"
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._swallow = False
        self._skip = 0
        self.swallowed = 0
        self._refuse: bytes | None = None
        self._refusals = 0
        self.refused = 0  # requests cut by refuse_requests()
        self.dropped = 0  # client connections cut by drop() or stop()
        self._blackhole = False
        self.swallowed_bytes = 0  # bytes lost in a blackhole
        self.round_trips = 0
        self._asked = False  # bytes went out since bytes last came back

    @classmethod
    def for_url(cls, upstream_url: str) -> TcpProxy:
        parts = urlsplit(upstream_url)
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        return cls(parts.hostname or "127.0.0.1", port, upstream_url)

    @property
    def url(self) -> str:
        parts = urlsplit(self.upstream_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@" if user else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.listen_port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port or 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.drop()

    def drop(self) -> int:
        """Cut every open connection; returns how many client connections that was."""
        cut = len(self._conns) // 2
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        self.dropped += cut
        return cut

    def blackhole(self) -> None:
        """From now on lose every byte, both ways, and close nothing."""
        self._blackhole = True

    def forward(self) -> None:
        """End :meth:`blackhole`: bytes get through again."""
        self._blackhole = False

    def swallow_next_reply(self, skip: int = 0) -> None:
        """Cut the connection instead of delivering a reply, after ``skip`` replies."""
        self._swallow = True
        self._skip = skip

    def refuse_requests(self, containing: bytes, times: int) -> None:
        """Cut the connection instead of forwarding the next ``times`` requests that
        contain ``containing`` (one call fails, whichever server is behind)."""
        self._refuse, self._refusals = containing, times

    def _refuses(self, request: bytes) -> bool:
        if self._refuse is None or self._refuse not in request:
            return False
        self._refusals -= 1
        self.refused += 1
        if self._refusals <= 0:
            self._refuse = None
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._conns |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if self._blackhole:
                        self.swallowed_bytes += len(data)
                        continue
                    if not replies and self._refuses(data):
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    if replies and self._swallow and self._skip > 0:
                        self._skip -= 1
                    elif replies and self._swallow:
                        self._swallow = False
                        self.swallowed += 1
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    if not replies:
                        self._asked = True
                    elif self._asked:
                        self._asked = False
                        self.round_trips += 1
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        self._conns -= {writer, up_writer}


_DEFAULT_PORTS = {"redis": 6379, "postgresql": 5432, "postgres": 5432}


class ThreadedProxy:
    """A :class:`TcpProxy` on an event loop in a thread of its own (an anyio portal),
    driven from synchronous test code whose clients are other processes."""

    def __init__(self, proxy: TcpProxy, portal: BlockingPortal) -> None:
        self.proxy = proxy
        self._portal = portal

    @property
    def url(self) -> str:
        return self.proxy.url

    def drop(self) -> int:
        """Cut every open connection now; returns how many client connections."""
        return self._portal.call(_sync, self.proxy.drop)

    def refuse_requests(self, containing: bytes, times: int) -> None:
        self._portal.call(_sync, lambda: self.proxy.refuse_requests(containing, times))

    def blackhole(self) -> None:
        """Stop forwarding bytes, silently (see :meth:`TcpProxy.blackhole`)."""
        self._portal.call(_sync, self.proxy.blackhole)

    def forward(self) -> None:
        """Forward bytes again."""
        self._portal.call(_sync, self.proxy.forward)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (an outage)."""
        self._portal.call(self.proxy.stop)

    def start(self) -> None:
        """Accept connections again, on the same port."""
        self._portal.call(self.proxy.start)


async def _sync(fn: Callable[[], T]) -> T:
    return fn()


@contextmanager
def proxy_in_thread(upstream_url: str) -> Iterator[ThreadedProxy]:
    """A running proxy in front of ``upstream_url``; ``.url`` is where clients connect."""
    with start_blocking_portal("asyncio") as portal:
        threaded = ThreadedProxy(TcpProxy.for_url(upstream_url), portal)
        threaded.start()
        try:
            yield threaded
        finally:
            threaded.stop()
