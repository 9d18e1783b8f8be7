"""Settings: one typed object from defaults, a file, the environment and arguments.

Layers, lowest first::

    defaults < file < environment < explicit arguments

- **file**: TOML (``taskcore.toml``, or the ``[tool.taskcore]`` table of a
  ``pyproject.toml``), JSON, or YAML (with PyYAML: ``pip install "taskcore[config]"``),
  named by ``path`` or by the ``TASKCORE_CONFIG`` environment variable;
- **environment**: ``TASKCORE_<SETTING>`` for the app's settings (``TASKCORE_URL``,
  ``TASKCORE_RESULT_TTL``; ``TASKCORE_QUEUES``, ``TASKCORE_CIRCUITS`` and
  ``TASKCORE_FLAGS`` hold JSON objects) and ``TASKCORE_WORKER__<SETTING>`` for the
  worker's (``TASKCORE_WORKER__CONCURRENCY=8``, ``TASKCORE_WORKER__QUEUES=a,b``). Other
  ``TASKCORE_`` variables without a double underscore are left alone (other tools use
  the prefix); an unknown ``TASKCORE_WORKER__`` name is an error;
- **explicit arguments**: ``overrides`` (a mapping shaped like the file).

Inside ``worker`` a layer replaces single settings; inside ``queues``, ``circuits`` and
``flags`` it replaces whole entries (a queue's policy, a circuit, a flag). Every value
is checked where it comes from, so an error names the setting, the value, its source
(file, environment variable, argument) and what to do.

The settings are msgspec Structs rather than attrs classes: they are decoded from
files and environment variables, which is what msgspec's typed conversion (with the
path of a bad value) is for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import attrs
import msgspec

from taskcore.circuit import Circuit
from taskcore.envelope import DEFAULT_MAX_PAYLOAD
from taskcore.errors import ConfigurationError
from taskcore.scheduling import DEFAULT_BATCH_HORIZON, SchedulingPolicy

from .flags import Flag

__all__ = [
    "CircuitSettings",
    "QueuePolicy",
    "Resolved",
    "Settings",
    "Source",
    "WorkerSettings",
    "load",
    "resolve",
]

CONFIG_ENV = "TASKCORE_CONFIG"
ENV_PREFIX = "TASKCORE_"

_Positive = Annotated[int, msgspec.Meta(ge=1)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_Seconds = Annotated[float, msgspec.Meta(gt=0)]


class QueuePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A queue's scheduling policy (see :class:`taskcore.SchedulingPolicy`)."""

    kind: Literal["fifo", "priority", "fair", "deadline"] = "deadline"
    weights: dict[str, Annotated[float, msgspec.Meta(gt=0)]] | None = None
    by: Literal["priority", "key"] = "priority"
    default_weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    batch_horizon: Annotated[float, msgspec.Meta(ge=0)] = DEFAULT_BATCH_HORIZON

    def policy(self) -> SchedulingPolicy:
        weights = self.weights
        if weights is None and self.kind == "fair" and self.by == "key":
            weights = {}
        return SchedulingPolicy(
            self.kind, weights, self.by, self.default_weight, self.batch_horizon
        )


class CircuitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A circuit breaker's settings (see :class:`taskcore.Circuit`; ``ignore``, a list
    of exception types, can only be given in code)."""

    failures: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    window: _Seconds = 60.0
    cooldown: _Seconds = 30.0

    def circuit(self) -> Circuit:
        return Circuit(self.failures, self.window, self.cooldown)


class WorkerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A worker's options, named as :class:`taskcore.Worker`'s arguments (see there)."""

    queues: list[str] | None = None
    concurrency: _Positive = 100
    min_concurrency: _Positive | None = None
    max_concurrency: _Positive | None = None
    threads: _Positive = 16
    processes: _Positive | None = None
    reserved_critical: _Count = 0
    prefetch: _Count | Literal["auto"] = 0
    lease_seconds: _Seconds = 30.0
    grace_period: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    poll_interval: _Seconds = 1.0
    maintenance_interval: _Seconds = 5.0
    max_tasks: _Positive | None = None
    max_rss: Annotated[int, msgspec.Meta(ge=1)] | str | None = None
    lost_lease_allowance: _Count = 3
    freeze_heap: bool = True
    carry: _Count = 0
    capture_logs: bool = True

    def options(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`taskcore.App.worker`."""
        return msgspec.structs.asdict(self)


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything configurable outside code: the app's settings, a ``worker`` section
    and feature ``flags``. Build one with :func:`load`."""

    url: str = "memory://"
    serializer: Literal["json", "msgpack"] = "json"
    max_payload_bytes: _Positive = DEFAULT_MAX_PAYLOAD
    result_ttl: float = 90 * 86400.0
    dead_ttl: float = 60 * 86400.0
    log_ttl: float = 30 * 86400.0
    metrics_ttl: float = 365 * 86400.0
    audit_ttl: float = 730 * 86400.0
    queues: dict[str, QueuePolicy] = {}
    circuits: dict[str, CircuitSettings] = {}
    worker: WorkerSettings = WorkerSettings()
    flags: dict[str, Flag] = {}

    def app_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`taskcore.App`."""
        return {
            "url": self.url,
            "serializer": self.serializer,
            "max_payload_bytes": self.max_payload_bytes,
            "result_ttl": self.result_ttl,
            "dead_ttl": self.dead_ttl,
            "log_ttl": self.log_ttl,
            "metrics_ttl": self.metrics_ttl,
            "audit_ttl": self.audit_ttl,
            "queues": {name: q.policy() for name, q in self.queues.items()},
            "circuits": {name: c.circuit() for name, c in self.circuits.items()},
        }


APP_SCALARS = (
    "url",
    "serializer",
    "max_payload_bytes",
    "result_ttl",
    "dead_ttl",
    "log_ttl",
    "metrics_ttl",
    "audit_ttl",
)
ENTRY_TYPES: dict[str, type[msgspec.Struct]] = {
    "queues": QueuePolicy,
    "circuits": CircuitSettings,
    "flags": Flag,
}
WORKER_FIELDS = WorkerSettings.__struct_fields__


@attrs.frozen
class Source:
    """Where a setting came from: ``kind`` and its name (a path, a variable)."""

    kind: Literal["default", "app", "file", "env", "argument", "remote"]
    name: str = ""

    def __str__(self) -> str:
        return {
            "default": "the default",
            "app": "the app's settings",
            "file": f"file {self.name}",
            "env": f"environment variable {self.name}",
            "argument": "an explicit argument",
            "remote": f"the remote configuration ({self.name})",
        }[self.kind]

    def fix(self) -> str:
        return {
            "default": "report this as a bug",
            "app": "fix the settings the app was built from",
            "file": f"edit it in {self.name}",
            "env": f"change or unset {self.name}",
            "argument": "pass a valid value",
            "remote": "write a valid value with 'taskcore config set' (or app.config.set_remote)",
        }[self.kind]


DEFAULT = Source("default")


def invalid(key: str, value: object, source: Source, problem: str) -> ConfigurationError:
    """The error for a bad value: setting, value, source, problem and fix."""
    return ConfigurationError(
        f"setting {key} = {value!r} from {source} is invalid: {problem}; {source.fix()}"
    )


def unknown(key: str, known: Any, source: Source) -> ConfigurationError:
    import difflib  # only on this error path

    prefix, _, name = key.rpartition(".")
    dotted = [f"{prefix}.{k}" if prefix else k for k in known]
    close = difflib.get_close_matches(name, list(known), n=1) or [
        k for k in known if k.startswith(name)
    ]
    hint = f"did you mean {(prefix + '.' if prefix else '') + close[0]}? " if close else ""
    return ConfigurationError(
        f"unknown setting {key} in {source}: {hint}known settings here: {', '.join(dotted)}; "
        f"{source.fix()}"
    )


def _problem(exc: msgspec.ValidationError, kind: type[msgspec.Struct]) -> tuple[str, str]:
    """(problem, path under ``$``) of a msgspec error converting to ``kind``."""
    text, _, where = str(exc).partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    problem = text[:1].lower() + text[1:]
    if problem.startswith("invalid enum value"):
        choices = _choices(kind, path.split("."))
        if choices:
            problem += f": use {' or '.join(map(repr, choices))}"
    return problem, path


def _choices(kind: Any, path: list[str]) -> list[object]:
    """The values of the Literal type at ``path`` in a Struct type."""
    import typing

    for name in path:
        hints = typing.get_type_hints(kind, include_extras=False)
        if name not in hints:
            return []
        kind = hints[name]
    found: list[object] = []
    stack = [kind]
    while stack:
        t = stack.pop()
        if typing.get_origin(t) is Literal:
            found.extend(typing.get_args(t))
        else:
            stack.extend(typing.get_args(t))
    return found


@attrs.frozen
class Layer:
    """One source's settings, shaped like the file, with the source of each key
    (``url``, ``worker.concurrency``, ``queues.emails``); keys not listed come from
    ``source``."""

    data: Mapping[str, Any]
    source: Source
    sources: Mapping[str, Source] = attrs.field(factory=dict)

    def source_of(self, key: str) -> Source:
        return self.sources.get(key, self.source)

    def checked(self, *, strict: bool) -> Layer:
        """This layer with every value checked (flags given as true/false made
        Flags); raises the error naming the first bad value's setting and source."""
        if not isinstance(self.data, Mapping):
            raise ConfigurationError(
                f"{self.source} holds {type(self.data).__name__}, not a table of settings; "
                f"{self.source.fix()}"
            )
        data = dict(self.data)
        for key in data:
            if key not in Settings.__struct_fields__:
                raise unknown(key, Settings.__struct_fields__, self.source_of(key))
        worker = data.get("worker", {})
        if not isinstance(worker, Mapping):
            raise invalid("worker", worker, self.source_of("worker"), "expected a table")
        for key in worker:
            if key not in WORKER_FIELDS:
                raise unknown(f"worker.{key}", WORKER_FIELDS, self.source_of(f"worker.{key}"))
        plain = {k: v for k, v in data.items() if k not in ENTRY_TYPES}
        try:
            msgspec.convert(plain, Settings, strict=strict)
        except msgspec.ValidationError as exc:
            problem, key = _problem(exc, Settings)
            raise invalid(key, _lookup(plain, key), self.source_of(key), problem) from None
        for section, kind in ENTRY_TYPES.items():
            entries = data.get(section, {})
            if not isinstance(entries, Mapping):
                raise invalid(section, entries, self.source_of(section), "expected a table")
            checked = {}
            for name, value in entries.items():
                key = f"{section}.{name}"
                if section == "flags" and isinstance(value, bool):
                    value = {"enabled": value}
                try:
                    msgspec.convert(value, kind, strict=strict)
                except msgspec.ValidationError as exc:
                    problem, sub = _problem(exc, kind)
                    where, bad = (f"{key}.{sub}", _lookup(value, sub)) if sub else (key, value)
                    if section == "flags":
                        problem += "; a flag is true, false or {percent = 0-100}"
                    raise invalid(where, bad, self.source_of(key), problem) from None
                checked[name] = value
            if section in data:
                data[section] = checked
        return Layer(data, self.source, self.sources)


def _lookup(data: Mapping[str, Any], key: str) -> Any:
    value: Any = data
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@attrs.frozen
class Resolved:
    """Settings and the source of each of them (``sources["worker.concurrency"]``);
    settings not listed have their defaults."""

    settings: Settings
    sources: Mapping[str, Source]

    def source(self, key: str) -> Source:
        return self.sources.get(key, DEFAULT)

    def set_here(self, key: str) -> bool:
        """Whether ``key`` was set by a file, the environment or an argument (not
        taken from defaults or from the app's own settings)."""
        return self.source(key).kind in ("file", "env", "argument")


def merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, Source]]:
    """The layers' data merged, later layers winning, and the source of each key."""
    data: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for layer in layers:
        for key, value in layer.data.items():
            if key == "worker" or key in ENTRY_TYPES:
                section = data.setdefault(key, {})
                for name, item in value.items():
                    section[name] = item
                    sources[f"{key}.{name}"] = layer.source_of(f"{key}.{name}")
            else:
                data[key] = value
                sources[key] = layer.source_of(key)
    return data, sources


def resolve(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Settings | None = None,
) -> Resolved:
    """Settings from ``base`` (or the defaults) < file < environment < ``overrides``,
    with the source of each.

    Args:
        path: the settings file; default: the file ``TASKCORE_CONFIG`` names, if any.
        env: the environment (default ``os.environ``).
        overrides: explicit settings, shaped like the file.
        base: settings to start from instead of the defaults.

    Raises:
        ConfigurationError: a file that cannot be read or parsed, an unknown setting or
            a bad value; the message names the setting, its value and its source.
    """
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    layers: list[Layer] = []
    if base is not None:
        layers.append(Layer(msgspec.to_builtins(base), Source("app")))
    if path is not None or any(k.startswith(ENV_PREFIX) for k in env):
        from . import sources  # file parsers only when there is something to read

        if path is not None:
            layers.append(sources.file_layer(Path(path)).checked(strict=True))
        layers.append(sources.env_layer(env).checked(strict=False))
    if overrides:
        layers.append(Layer(dict(overrides), Source("argument")).checked(strict=True))
    data, where = merge(layers)
    settings = msgspec.convert(data, Settings, strict=False)
    resolved = Resolved(settings, where)
    _check(resolved)
    return resolved


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the defaults < file < environment < ``overrides``.

    Args:
        path: a ``.toml`` (``pyproject.toml``: its ``[tool.taskcore]`` table),
            ``.json``, ``.yaml`` or ``.yml`` file; default: the file named by the
            ``TASKCORE_CONFIG`` environment variable, if set.
        env: the environment to read ``TASKCORE_...`` variables from (default
            ``os.environ``; pass ``{}`` to ignore it).
        overrides: explicit settings, shaped like the file
            (``{"worker": {"concurrency": 4}}``).

    Raises:
        ConfigurationError: the message names the setting, its value, its source and
            the fix.
    """
    return resolve(path, env=env, overrides=overrides).settings


def _check(resolved: Resolved) -> None:
    """The checks that involve several settings or taskcore's own validation."""
    from taskcore.app import RETENTION_BOUNDS, _check_name, _check_retention
    from taskcore.recycle import parse_size

    s, w = resolved.settings, resolved.settings.worker

    def fail(key: str, value: object, problem: str) -> ConfigurationError:
        return invalid(key, value, resolved.source(key), problem)

    for key in RETENTION_BOUNDS:
        try:
            _check_retention(key, getattr(s, key))
        except ConfigurationError as exc:
            raise fail(key, getattr(s, key), str(exc)) from None
    for section, entries in (("queues", s.queues), ("circuits", s.circuits)):
        for name, entry in entries.items():
            try:
                _check_name(name, "queue name" if section == "queues" else "circuit name")
                if isinstance(entry, QueuePolicy):
                    entry.policy()
                else:
                    entry.circuit()
            except ConfigurationError as exc:
                raise fail(f"{section}.{name}", name, str(exc)) from None
    for name in w.queues or ():
        try:
            _check_name(name, "queue name")
        except ConfigurationError as exc:
            raise fail("worker.queues", w.queues, str(exc)) from None
    if w.reserved_critical >= w.concurrency:
        raise fail(
            "worker.reserved_critical",
            w.reserved_critical,
            f"must be below worker.concurrency = {w.concurrency} "
            f"(from {resolved.source('worker.concurrency')})",
        )
    if w.min_concurrency is not None and w.max_concurrency is not None:
        if w.min_concurrency > w.max_concurrency:
            raise fail(
                "worker.min_concurrency",
                w.min_concurrency,
                f"must be at most max_concurrency={w.max_concurrency} "
                f"(from {resolved.source('worker.max_concurrency')})",
            )
    if w.max_rss is not None:
        try:
            parse_size(w.max_rss)
        except ConfigurationError as exc:
            raise fail("worker.max_rss", w.max_rss, str(exc)) from None
