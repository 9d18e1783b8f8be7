"""How values are stored: messages as MessagePack, attempt errors as JSON lines."""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from taskcore.backend import AttemptError, FollowUp, Message, TaskRecord, WorkerInfo
from taskcore.states import State

__all__ = [
    "decode_message",
    "decode_outbox",
    "decode_record",
    "decode_worker",
    "encode_error",
    "encode_message",
    "encode_outbox",
    "encode_worker",
    "fnum",
    "opt",
    "pack",
    "raw_str",
]

_msg_enc = msgspec.msgpack.Encoder()
_msg_dec = msgspec.msgpack.Decoder(Message)
_outbox_dec = msgspec.msgpack.Decoder(tuple[float, tuple[FollowUp, ...]])
_follow_dec = msgspec.msgpack.Decoder(tuple[FollowUp, ...])
_json_enc = msgspec.json.Encoder()
_err_dec = msgspec.json.Decoder(tuple[int, str, str, str, float])
_worker_dec = msgspec.msgpack.Decoder(tuple[str, str, int, tuple[str, ...], int, int, float, float])


def fnum(x: float | None) -> str:
    """A number as a script argument ('' for None); repr round-trips every float."""
    return "" if x is None else repr(x)


def opt(s: str | None) -> str:
    """An optional string as a script argument: '' is None, '=' marks a value."""
    return "" if s is None else "=" + s


_HEADS = [bytes((0xA0 | n,)) for n in range(32)] + [b"\xd9" + bytes((n,)) for n in range(32, 256)]


def raw_str(data: bytes) -> msgspec.Raw:
    """Bytes for :func:`pack`, as a MessagePack *str*: Redis's cmsgpack predates the
    bin types, and its strings are byte strings anyway."""
    n = len(data)
    if n < 0x100:
        return msgspec.Raw(_HEADS[n] + data)
    elif n < 0x10000:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return msgspec.Raw(head + data)


def pack(items: object) -> bytes:
    """A batch of script arguments as one MessagePack value (unpacked by cmsgpack):
    one argument instead of thousands keeps the client's command packing cheap."""
    return _msg_enc.encode(items)


def encode_message(m: Message) -> bytes:
    return _msg_enc.encode(m)


def decode_message(data: bytes) -> Message:
    return _msg_dec.decode(data)


def encode_outbox(keep_until: float, then: tuple[FollowUp, ...]) -> bytes:
    """A workflow step's follow-ups as they wait in an outbox (opaque to the scripts),
    with how long a join they start is kept (the step's result expiry; inf: forever)."""
    return _msg_enc.encode((keep_until, then))


def decode_outbox(data: bytes) -> tuple[float, tuple[FollowUp, ...]]:
    try:
        return _outbox_dec.decode(data)
    except msgspec.ValidationError:
        # an entry written before joins expired (the follow-ups alone): kept forever
        return math.inf, _follow_dec.decode(data)


def encode_error(e: AttemptError) -> bytes:
    return _json_enc.encode((e.attempt, e.type, e.message, e.traceback, e.at))


def _decode_errors(data: bytes | None) -> tuple[AttemptError, ...]:
    if not data:
        return ()
    return tuple(AttemptError(*_err_dec.decode(line)) for line in data.split(b"\n"))


def _f(v: bytes | None) -> float | None:
    return None if v is None else float(v)


def decode_record(h: Mapping[bytes, bytes]) -> TaskRecord:
    """A task hash (HGETALL) as a :class:`TaskRecord`."""
    m = decode_message(h[b"m"])
    w = h.get(b"w")
    return TaskRecord(
        id=m.id,
        task=m.task,
        queue=m.queue,
        priority=m.priority,
        state=State(h[b"s"].decode()),
        attempt=int(h.get(b"a", 0)),  # no attempt field before the first claim
        enqueued_at=m.enqueued_at,
        eligible_at=float(h[b"e"]),
        updated_at=float(h[b"u"]),
        body=m.body,
        deadline=m.deadline,
        unique_key=m.unique_key,
        fairness_key=m.fairness_key,
        # The worker is kept in the hash after the lease ends; it is only reported
        # while the task runs, as the memory backend does.
        worker=None if w is None or h[b"s"] != b"running" else w.decode(),
        result=h.get(b"r"),
        errors=_decode_errors(h.get(b"E")),
        cancel_requested=b"c" in h,
        started_at=_f(h.get(b"st")),
        finished_at=_f(h.get(b"f")),
    )


def encode_worker(info: WorkerInfo) -> bytes:
    return _msg_enc.encode(
        (
            info.id,
            info.hostname,
            info.pid,
            info.queues,
            info.concurrency,
            info.busy,
            info.started_at,
            info.heartbeat_at,
        )
    )


def decode_worker(data: bytes) -> WorkerInfo:
    return WorkerInfo(*_worker_dec.decode(data))
