"""Helpers for the Redis service tests (prefixes, key cleanup, a TCP proxy)."""

from __future__ import annotations

import asyncio
import uuid

import redis as redis_sync


def new_prefix() -> str:
    return f"tctest-{uuid.uuid4().hex[:12]}"


def prefix_keys(client: redis_sync.Redis, prefix: str) -> list[bytes]:
    """Every key a backend with ``prefix`` created."""
    keys: list[bytes] = []
    for pattern in (f"{{{prefix}:*", f"{{{prefix}}}:*"):
        keys += client.scan_iter(match=pattern, count=1000)
    return keys


def delete_prefix(client: redis_sync.Redis, prefix: str) -> int:
    """Delete every key a backend with ``prefix`` created; returns how many."""
    keys = prefix_keys(client, prefix)
    n = 0
    for i in range(0, len(keys), 1000):
        n += int(client.delete(*keys[i : i + 1000]))
    return n


class TcpProxy:
    """A TCP proxy in front of the Redis server that tests can break on purpose.

    ``drop()`` cuts every open connection; ``swallow_next_reply()`` forwards the next
    request but cuts the connection instead of delivering its reply (the command ran,
    the client never hears back); ``stop()``/``start()`` simulate an outage.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._swallow = False
        self._skip = 0
        self.swallowed = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listen_port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port or 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.drop()

    def drop(self) -> None:
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    def swallow_next_reply(self, skip: int = 0) -> None:
        """Cut the connection instead of delivering a reply, after ``skip`` replies."""
        self._swallow = True
        self._skip = skip

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
                    if replies and self._swallow and self._skip > 0:
                        self._skip -= 1
                    elif replies and self._swallow:
                        self._swallow = False
                        self.swallowed += 1
                        writer.transport.abort()
                        up_writer.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        self._conns -= {writer, up_writer}
