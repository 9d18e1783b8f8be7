"""The wire message. Only what crosses the wire is a msgspec Struct; never pickle."""

from __future__ import annotations

import os
import threading
import time
from typing import Literal

import msgspec

from .errors import PayloadTooLarge, SerializationError

__all__ = ["Codec", "Envelope", "Step", "new_task_id", "new_task_ids"]

DEFAULT_MAX_PAYLOAD = 1024 * 1024


class Step(msgspec.Struct, frozen=True, omit_defaults=True):
    """A workflow step not enqueued yet: what the worker that runs its parent needs to
    build its message when the parent succeeds (options resolved by the producer, so
    the worker need not have the step's task registered)."""

    id: str
    task: str
    args: msgspec.Raw  # the call; with ``needs``: {"a": [...], "k": {...}}, results go first
    queue: str
    priority: int
    delay: float = 0.0
    eta: float | None = None
    deadline: float | None = None
    timeout: float | None = None
    result_ttl: float | None = None
    fairness_key: str | None = None
    rate_key: str | None = None
    headers: dict[str, str] = {}
    needs: list[str] = []
    gather: bool = False
    after: int = 1  # parents that must succeed first (a join when > 1)
    then: list[Step] = []


class Envelope(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a producer hands a worker: the task to run and its encoded arguments.

    The scheduling metadata (queue, priority, times, keys) travels beside it in
    :class:`taskcore.backend.Message` so backends never decode the envelope.
    """

    id: str
    task: str
    args: msgspec.Raw = msgspec.Raw(b"{}")
    queue: str = "default"
    priority: int = 2
    enqueued_at: float = 0.0
    deadline: float | None = None
    timeout: float | None = None
    result_ttl: float | None = None
    trace: dict[str, str] = {}
    headers: dict[str, str] = {}
    rate_key: str | None = None  # per-call rate-limit bucket key
    # workflows: the steps whose results are passed in first (``args`` is then a
    # partial call, see Step), as one list (``gather``) or one value; the steps this
    # task's success releases
    needs: list[str] = []
    gather: bool = False
    then: list[Step] = []


_lock = threading.Lock()
_last = [0, 0]
_node = os.urandom(5).hex()


def new_task_id() -> str:
    """A 26-character id that sorts by creation time (ms, counter, random node)."""
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last[0]:
            ms = _last[0]
            _last[1] += 1
        else:
            _last[0] = ms
            _last[1] = 0
        seq = _last[1]
    return f"{ms:012x}{seq:04x}{_node}"


def new_task_ids(n: int) -> list[str]:
    """``n`` ids as :func:`new_task_id` would make them one after the other."""
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last[0]:
            ms = _last[0]
            first = _last[1] + 1
        else:
            _last[0] = ms
            first = 0
        _last[1] = first + n - 1
    return [f"{ms:012x}{seq:04x}{_node}" for seq in range(first, first + n)]


class Codec:
    """Encodes envelopes, arguments and results as JSON (default) or MessagePack."""

    def __init__(
        self,
        format: Literal["json", "msgpack"] = "json",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if format == "json":
            self._enc: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder()
            self._env_dec: msgspec.json.Decoder[Envelope] | msgspec.msgpack.Decoder[Envelope] = (
                msgspec.json.Decoder(Envelope)
            )
            self._module: object = msgspec.json
        elif format == "msgpack":
            self._enc = msgspec.msgpack.Encoder()
            self._env_dec = msgspec.msgpack.Decoder(Envelope)
            self._module = msgspec.msgpack
        else:
            raise SerializationError(f"unknown serializer {format!r}: use 'json' or 'msgpack'")
        self.format = format
        self.max_payload_bytes = max_payload_bytes

    def encode(self, value: object) -> bytes:
        try:
            return self._enc.encode(value)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise SerializationError(
                f"cannot encode {type(value).__name__} as {self.format}: {exc}; "
                "return/pass JSON-compatible values, msgspec Structs, dataclasses or attrs "
                "classes"
            ) from exc

    def decode(self, data: bytes, type: object = object) -> object:
        try:
            return self._module.decode(data, type=type)  # type: ignore[attr-defined]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SerializationError(f"cannot decode {self.format} payload: {exc}") from exc

    def encode_envelope(self, env: Envelope) -> bytes:
        body = self.encode(env)
        if len(body) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"task {env.task!r} envelope is {len(body)} bytes, over the limit of "
                f"{self.max_payload_bytes}; pass a reference (URL, object key) instead of "
                "the data, or raise App(max_payload_bytes=...)"
            )
        return body

    def decode_envelope(self, body: bytes) -> Envelope:
        if len(body) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"envelope is {len(body)} bytes, over the limit of {self.max_payload_bytes}"
            )
        try:
            return self._env_dec.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SerializationError(f"malformed envelope ({self.format}): {exc}") from exc
