"""Ingestion: records from files and streams, validated against a task, enqueued in
batches, and every record that does not fit kept with its reason.

:func:`ingest` takes any iterable or async iterable of mappings (a stream);
:func:`ingest_file` reads CSV, JSON Lines, a JSON array or XML (see
:mod:`taskcore.ingest.sources` for each format's mapping). Each record is one call of
the task with the record's fields as keyword arguments:

1. **validate**: the fields are checked against the task's type hints, as
   ``enqueue`` checks them. Text sources (CSV, XML) are converted first: ``"42"`` for
   an ``int``, ``"true"`` for a ``bool``, an ISO 8601 string for a ``datetime``
   (msgspec's lax mode), and an empty value counts as not given (the parameter's
   default applies).
2. **classify**: an optional callable ``record -> options`` picks per-record enqueue
   options (``priority``, ``queue``, ``delay``, ``deadline``, ``unique_key``...).
3. **queue**: valid records are stored ``batch_size`` at a time, one backend call per
   batch.

Nothing is lost: a record that cannot be read, does not fit the task, or gets invalid
options is a :class:`Reject` (its record number, line, reason and the record itself),
appended to the backend's journal (stream ``rejects``, kept ``App(dead_ttl=...)``)
before the batch it belongs to is enqueued. :func:`rejects` (or ``app.rejects()``)
lists them later. The returned :class:`IngestReport` counts what was read, enqueued
and rejected, per reason.

Runs: every record's task id is derived from the ingestion's ``run`` name, its
position and its call (:mod:`taskcore.ingest.runs`), so running a source again with
``run=`` the name of an earlier attempt (one that failed half-way, or rejected records
since fixed) enqueues only what that attempt did not: the rest are ``duplicates``.

Not imported by workers.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import attrs
import msgspec

from taskcore.backend import Backend, JournalEntry
from taskcore.envelope import new_task_id
from taskcore.errors import ConfigurationError, TaskcoreError

from .runs import record_id, run_name
from .sources import SOURCE_FORMATS, Item, SourceError, SourceFormat, format_of, records

if TYPE_CHECKING:
    from taskcore.app import App
    from taskcore.backend import Message
    from taskcore.envelope import Envelope
    from taskcore.task import Task

__all__ = [
    "DEFAULT_BATCH",
    "REJECTS_STREAM",
    "SOURCE_FORMATS",
    "Classifier",
    "IngestError",
    "IngestReport",
    "Reject",
    "ingest",
    "ingest_file",
    "rejects",
]

REJECTS_STREAM: Final = "rejects"
DEFAULT_BATCH: Final = 1000
MAX_RECORD_TEXT: Final = 4096
"""A rejected record is kept as JSON text cut to this many characters (the journal
holds small records)."""
_OPTIONS: Final = frozenset(
    {"delay", "eta", "priority", "deadline", "queue", "unique_key", "fairness_key", "headers"}
)

Classifier = Callable[[Mapping[str, Any]], Mapping[str, Any] | None]
"""``record -> options`` for one record (None: the defaults)."""


class Reject(msgspec.Struct, frozen=True):
    """A record that was not enqueued, and why."""

    run: str
    """The ingestion it came from (:attr:`IngestReport.run`)."""
    source: str
    """The file name, or ``stream``."""
    task: str
    number: int
    """1-based position of the record in the source."""
    line: int | None
    """The line it starts on (None for streams)."""
    kind: str
    """A short name of the reason, as counted in :attr:`IngestReport.reasons`."""
    reason: str
    """What was wrong, with what value, and what to do."""
    record: str
    """The record as read, as JSON text (cut to 4 KiB)."""
    at: float
    attempt: str = ""
    """The attempt of the run that rejected it (:attr:`IngestReport.attempt`): a run
    given again rejects a record that is still bad again (empty in rejects kept before
    attempts were recorded)."""


@attrs.frozen
class IngestReport:
    """What an ingestion did."""

    run: str
    """The run's name: the ``run`` given, else a new unique one. Give it as ``run=``
    to run the source again, enqueueing only what was not."""
    source: str
    task: str
    read: int
    """Records read (valid or not)."""
    enqueued: int
    """Records stored as new tasks."""
    duplicates: int
    """Valid records not stored again: their task exists already (an earlier attempt of
    the run enqueued it, and it is not yet forgotten) or their unique key matched a
    waiting task."""
    rejected: int
    batches: int
    """Backend calls that stored tasks."""
    reasons: Mapping[str, int]
    """Rejected records per :attr:`Reject.kind`."""
    rejects: tuple[Reject, ...]
    """The first 100 rejects (all of them are in the journal)."""
    stopped: str | None = None
    """Why reading stopped before the end of the source (also one reject), or None."""
    attempt: str = ""
    """This attempt's id (new each time; the run's name when no ``run`` was given): the
    :attr:`Reject.attempt` of its rejects."""

    @property
    def ok(self) -> bool:
        """Every record read was enqueued (or was a duplicate)."""
        return self.rejected == 0


class IngestError(TaskcoreError):
    """The ingestion failed part-way (the backend failed): ``report`` says what had
    been read, enqueued and rejected until then."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


_MISSING = re.compile(r"Object missing required field `(.+?)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(.+?)`")
_AT = re.compile(r"^(.*) - at `\$\.([^`.\[]+)(.*)`$")


@attrs.define
class _Pipeline:
    app: App
    task: Task[Any, Any]
    source: str
    lax: bool
    options: dict[str, Any]
    classify: Classifier | None
    batch_size: int
    run: str
    attempt: str
    read: int = 0
    enqueued: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    stopped: str | None = None
    reasons: dict[str, int] = attrs.field(factory=dict)
    first: list[Reject] = attrs.field(factory=list)
    _names: frozenset[str] = frozenset()
    _var_kw: str | None = None
    _positional: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        params = self.task.signature.parameters.values()
        self._names = frozenset(p.name for p in params if p.kind is not p.VAR_POSITIONAL)
        self._var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        self._positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_ONLY)

    def report(self) -> IngestReport:
        return IngestReport(
            run=self.run,
            source=self.source,
            task=self.task.name,
            read=self.read,
            enqueued=self.enqueued,
            duplicates=self.duplicates,
            rejected=self.rejected,
            batches=self.batches,
            reasons=dict(self.reasons),
            rejects=tuple(self.first),
            stopped=self.stopped,
            attempt=self.attempt,
        )

    # -- one record -----------------------------------------------------------------
    def reject(self, item: Item, kind: str, reason: str) -> Reject:
        try:
            text = msgspec.json.encode(item.value).decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(item.value)
        self.rejected += 1
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        where = f"record {item.number}" + (f" (line {item.line})" if item.line else "")
        rej = Reject(
            run=self.run,
            source=self.source,
            task=self.task.name,
            number=item.number,
            line=item.line,
            kind=kind,
            reason=f"{where}: {reason}",
            record=text[:MAX_RECORD_TEXT],
            at=self.app.clock.now(),
            attempt=self.attempt,
        )
        if len(self.first) < 100:
            self.first.append(rej)
        return rej

    def kwargs_of(self, item: Item) -> tuple[dict[str, Any] | None, str, str]:
        """The record's keyword arguments, or None with the reason's kind and text."""
        value = item.value
        if item.error is not None:
            return None, item.kind or "unreadable", item.error
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            return (
                None,
                "not an object",
                f"a {type(value).__name__} is not a record; give an object of "
                f"argument names to values for {self._expected()}",
            )
        data = {k: v for k, v in value.items() if not (self.lax and (v == "" or v is None))}
        if self._var_kw is not None:  # the fields the signature does not name: **kwargs
            extra = {k: data.pop(k) for k in list(data) if k not in self._names}
            if extra:
                data[_VAR_KWARGS] = extra
        try:
            converted = msgspec.convert(data, self.task.args_type, strict=not self.lax)
        except msgspec.ValidationError as exc:
            kind, reason = self.explain(str(exc), data)
            return None, kind, reason
        kwargs = {k: getattr(converted, k) for k in data if k != _VAR_KWARGS}
        if _VAR_KWARGS in data:
            kwargs.update(getattr(converted, _VAR_KWARGS))
        return kwargs, "", ""

    def explain(self, message: str, data: Mapping[str, Any]) -> tuple[str, str]:
        if m := _MISSING.search(message):
            name = m.group(1)
            return (
                f"missing argument {name}",
                f"the required argument {name!r} is missing (or empty); add a field "
                f"{name!r} for {self._expected()}",
            )
        if m := _UNKNOWN.search(message):
            name = m.group(1)
            return (
                f"unknown argument {name}",
                f"{name!r} is not an argument of {self._expected()}; rename or drop the field",
            )
        if m := _AT.match(message):
            problem, name, rest = m.groups()
            got = data.get(name, data.get(_VAR_KWARGS, {}).get(name))
            return (
                f"argument {name}: {problem.replace('`', '')}",
                f"argument {name}{rest}={got!r}: {problem.replace('`', '')}; expected "
                f"{self._expected()}",
            )
        return f"invalid: {message}", f"{message}; expected {self._expected()}"

    def _expected(self) -> str:
        return f"{self.task.name}{self.task.signature}"

    def build(self, item: Item) -> tuple[tuple[Envelope, Message] | None, Reject | None]:
        kwargs, kind, reason = self.kwargs_of(item)
        if kwargs is None:
            return None, self.reject(item, kind, reason)
        options = self.options
        if self.classify is not None:
            try:
                extra = self.classify(item.value) or {}
                unknown = set(extra) - _OPTIONS
                if unknown:
                    raise ValueError(
                        f"unknown option(s) {sorted(unknown)}; valid: {sorted(_OPTIONS)}"
                    )
            except Exception as exc:
                return None, self.reject(
                    item, "classify failed", f"the classify hook raised {exc!r}"
                )
            options = {**options, **extra}
        # positional-only parameters are passed by position (a leading run of them)
        args = []
        for name in self._positional:
            if name not in kwargs:
                break
            args.append(kwargs.pop(name))
        try:
            env, msg = self.app.build_message(self.task, tuple(args), kwargs, **options)
        except TaskcoreError as exc:
            return None, self.reject(item, "invalid options", str(exc))
        # the id a rerun of this run gives the same record: found, it is not stored again
        tid = record_id(self.run, self.task.name, item.number, env.args)
        return (replace(env, id=tid), replace(msg, id=tid)), None

    # -- one batch ------------------------------------------------------------------
    async def store(self, items: Sequence[Item]) -> None:
        """Validate a batch; append its rejects to the journal, then enqueue the rest
        in one backend call."""
        self.read += len(items)
        built = []
        bad: list[Reject] = []
        for item in items:
            ok, rej = self.build(item)
            if ok is not None:
                built.append((self.task, *ok))
            elif rej is not None:
                bad.append(rej)
        await self.keep(bad)
        if built:
            try:
                results = await self.app.enqueue_built(built)
            except Exception as exc:
                raise IngestError(
                    f"ingestion of {self.source} into {self.task.name!r} stopped after "
                    f"{self.read - len(items)} records: enqueueing records "
                    f"{items[0].number}-{items[-1].number} failed ({exc!r}); those before "
                    f"were enqueued: {self.resume()}",
                    self.report(),
                ) from exc
            self.batches += 1
            created = sum(1 for r in results if r.created)
            self.enqueued += created
            self.duplicates += len(results) - created

    async def keep(self, bad: Sequence[Reject]) -> None:
        if not bad:
            return
        entries = [JournalEntry(REJECTS_STREAM, r.at, _encode(r), self.run) for r in bad]
        try:
            await self.app.backend.journal_append(entries)
        except Exception as exc:
            raise IngestError(
                f"ingestion of {self.source} into {self.task.name!r} stopped: "
                f"{len(bad)} rejected records could not be stored ({exc!r}); "
                f"first: {bad[0].reason}; {self.resume()}",
                self.report(),
            ) from exc

    def resume(self) -> str:
        return (
            f"run it again with run={self.run!r} (taskcore ingest --run {self.run}) to "
            "enqueue only the records not enqueued yet"
        )

    async def stop(self, error: SourceError, number: int) -> None:
        """Reading ended early: record why, as a reject of the record that follows."""
        item = Item(number, error.line, None)
        self.stopped = error.message
        await self.keep([self.reject(item, error.kind, f"{error.message}; reading stopped")])


_VAR_KWARGS = "star_kwargs__"  # the args Struct's field of **kwargs (taskcore.task)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Reject).decode
replace = msgspec.structs.replace


def _check(batch_size: int, options: Mapping[str, Any]) -> None:
    if batch_size < 1:
        raise ConfigurationError(f"batch_size={batch_size}: give at least 1 record per batch")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown enqueue option(s) {sorted(unknown)} for ingestion; valid: {sorted(_OPTIONS)}"
        )


async def ingest(
    app: App,
    task: Task[Any, Any] | str,
    records: Iterable[Any] | AsyncIterable[Any],
    *,
    batch_size: int = DEFAULT_BATCH,
    classify: Classifier | None = None,
    lax: bool = False,
    source: str = "stream",
    run: str | None = None,
    **options: Any,
) -> IngestReport:
    """Enqueue one call of ``task`` per record of a stream.

    Args:
        app: the app (opened if it is not).
        task: the task, or its registered name.
        records: mappings of argument names to values: an iterable, or an async
            iterable (use one for a source that blocks, e.g. a socket or a queue).
        batch_size: records per backend call.
        classify: ``record -> options`` (``priority``, ``queue``, ``delay``, ``eta``,
            ``deadline``, ``unique_key``, ``fairness_key``, ``headers``) for each
            record, over ``options``; an exception it raises rejects the record.
        lax: convert text values to the parameters' types (``"42"`` -> 42) and treat
            empty strings as not given, as for CSV and XML.
        source: the name the rejects carry.
        run: the run's name (1-200 printable characters), to run the same records
            again later: an earlier attempt's records that were enqueued (and are not
            yet forgotten, ``result_ttl`` after they finished) are counted as
            ``duplicates``, not stored again. None: a new name
            (:attr:`IngestReport.run`, which can be given later just the same).
        **options: enqueue options for every record (as for ``with_options``); they
            are no part of the records' ids, so a rerun does not move or re-prioritise
            what is in already.

    Returns:
        The report; the rejects are in the journal (:func:`rejects`).

    Raises:
        UnknownTask: no task of that name.
        ConfigurationError: a bad batch size, an unknown option or a bad run name.
        IngestError: the backend failed part-way (its ``report`` says how far it got).
    """
    pipe = _start(app, task, source, lax, options, classify, batch_size, run)
    await app.open()
    batch: list[Item] = []
    number = 0
    if isinstance(records, AsyncIterable):
        async for value in records:
            number += 1
            batch.append(Item(number, None, value))
            if len(batch) >= batch_size:
                await pipe.store(batch)
                batch = []
    else:
        for value in records:
            number += 1
            batch.append(Item(number, None, value))
            if len(batch) >= batch_size:
                await pipe.store(batch)
                batch = []
    if batch:
        await pipe.store(batch)
    return pipe.report()


def _start(
    app: App,
    task: Task[Any, Any] | str,
    source: str,
    lax: bool,
    options: Mapping[str, Any],
    classify: Classifier | None,
    batch_size: int,
    run: str | None,
) -> _Pipeline:
    _check(batch_size, options)
    name = run_name(run)
    resolved = app.get_task(task) if isinstance(task, str) else task
    # a run not named is a one-off: its attempt goes by the run's name
    attempt = name if run is None else new_task_id()
    return _Pipeline(app, resolved, source, lax, dict(options), classify, batch_size, name, attempt)


async def ingest_file(
    app: App,
    task: Task[Any, Any] | str,
    file: str | Path | IO[bytes],
    *,
    format: SourceFormat | None = None,
    batch_size: int = DEFAULT_BATCH,
    classify: Classifier | None = None,
    record_tag: str | None = None,
    run: str | None = None,
    **options: Any,
) -> IngestReport:
    """Enqueue one call of ``task`` per record of a file.

    Args:
        file: a path, or a binary file object (``source`` is then its ``name``).
        format: ``csv``, ``jsonl``, ``json`` or ``xml``; by default from the file
            name's suffix (``.csv``, ``.jsonl``/``.ndjson``, ``.json``, ``.xml``).
        record_tag: XML: only the document element's children with this tag are
            records.
        batch_size, classify, run, options: as for :func:`ingest`. CSV and XML values are
            text, converted to the parameters' types (``lax``); JSON values are taken
            as they are, as ``enqueue`` takes them.

    The file is read in a worker thread, one batch at a time (the event loop stays
    free); an unreadable record is rejected and the next one read, and a problem that
    ends the reading (a JSON array or XML document that does not parse, an XML
    document declaring entities) is one more reject, with :attr:`IngestReport.stopped`
    saying why.

    Raises:
        ConfigurationError: no format given or implied, or an unknown one.
        OSError: the file cannot be opened.
        UnknownTask, IngestError: as for :func:`ingest`.
    """
    name = str(file) if isinstance(file, (str, Path)) else str(getattr(file, "name", "stream"))
    fmt = format or format_of(name)
    if fmt is None or fmt not in SOURCE_FORMATS:
        raise ConfigurationError(
            f"{name}: give the format ({', '.join(SOURCE_FORMATS)})"
            + (f"; {format!r} is not one" if format else ", the file name does not imply one")
        )
    pipe = _start(app, task, name, fmt in ("csv", "xml"), options, classify, batch_size, run)
    await app.open()
    if isinstance(file, (str, Path)):
        stream: IO[bytes] = await anyio.to_thread.run_sync(Path(file).open, "rb")
    else:
        stream = file
    try:
        items = records(stream, fmt, record_tag=record_tag)
        while True:
            batch, error = await anyio.to_thread.run_sync(_take, items, batch_size)
            if batch:
                await pipe.store(batch)
            if error is not None:
                await pipe.stop(error, pipe.read + 1)
                break
            if len(batch) < batch_size:
                break
    finally:
        if isinstance(file, (str, Path)):
            await anyio.to_thread.run_sync(stream.close)
    return pipe.report()


def _take(items: Iterator[Item], n: int) -> tuple[list[Item], SourceError | None]:
    batch: list[Item] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) >= n:
                break
    except SourceError as exc:
        return batch, exc
    return batch, None


async def rejects(
    backend: Backend,
    *,
    run: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[Reject]:
    """The rejected records kept in the journal, oldest first: the latest ``limit``
    with ``since <= at < until``, only those of ingestion ``run`` if given."""
    stored = await backend.journal_read(
        REJECTS_STREAM, since=since, until=until, key=run, limit=limit
    )
    return [_decode(e.payload) for e in reversed(stored)]
