"""Registered tasks: a function, its options, and argument validation from type hints."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import attrs
import msgspec

from .complexity import Complexity, Pool
from .errors import ConfigurationError, SerializationError, TaskValidationError
from .priority import Priority
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .app import App
    from .handle import TaskHandle
    from .workflow import Signature

__all__ = ["RateLimit", "Task", "TaskOptions"]

P = ParamSpec("P")
R = TypeVar("R")

_VAR_ARGS = "star_args__"
_VAR_KWARGS = "star_kwargs__"
_PREVIOUS: Any = type("_Previous", (), {"__repr__": lambda self: "<previous result>"})()


@attrs.frozen
class RateLimit:
    """A token bucket: ``rate`` tasks per second with bursts up to ``burst``."""

    rate: float
    burst: float

    @classmethod
    def parse(cls, spec: str | RateLimit) -> RateLimit:
        """Accept ``"10/s"``, ``"600/m"``, ``"5000/h"`` (burst = one second's worth, >= 1)."""
        if isinstance(spec, RateLimit):
            return spec
        try:
            count, _, unit = spec.partition("/")
            per = {"s": 1.0, "m": 60.0, "h": 3600.0}[unit.strip() or "s"]
            rate = float(count) / per
        except (KeyError, ValueError):
            raise ConfigurationError(
                f"invalid rate limit {spec!r}: write it as '<count>/s', '<count>/m' or '<count>/h'"
            ) from None
        if rate <= 0:
            raise ConfigurationError(f"rate limit {spec!r} must allow at least one task")
        return cls(rate, max(1.0, rate))


@attrs.frozen
class TaskOptions:
    """A task's options; every one can be set on ``@app.task(...)``."""

    name: str
    queue: str = "default"
    priority: Priority = Priority.MEDIUM
    complexity: Complexity = Complexity.SIMPLE
    retry: RetryPolicy | None = None
    timeout: float | None = None
    unique: bool = False
    result_ttl: float | None = None
    pool: Pool | None = None
    rate_limit: RateLimit | None = None
    rate_key: str | None = None
    circuit: str | None = None
    dead_letter: bool = True


class _ArgsBase(msgspec.Struct, forbid_unknown_fields=True):
    pass


def _build_args_type(
    fn: Callable[..., Any], name: str
) -> tuple[type[msgspec.Struct], inspect.Signature]:
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # unresolvable forward references
        raise ConfigurationError(
            f"task {name!r}: cannot resolve its type hints ({exc}); import the names used "
            "in annotations at module level"
        ) from exc
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for param in sig.parameters.values():
        hint = hints.get(param.name, Any)
        if param.kind is param.VAR_POSITIONAL:
            fields.append((_VAR_ARGS, list[hint], []))  # type: ignore[valid-type]
        elif param.kind is param.VAR_KEYWORD:
            fields.append((_VAR_KWARGS, dict[str, hint], {}))  # type: ignore[valid-type]
        elif param.default is param.empty:
            fields.append((param.name, hint))
        else:
            fields.append((param.name, hint, param.default))
    # required fields must precede optional ones in a Struct; use kw_only to allow any order
    struct = msgspec.defstruct(f"{name}.args", fields, bases=(_ArgsBase,), kw_only=True)
    return struct, sig


class Task(Generic[P, R]):
    """A function registered with :meth:`App.task`. Call it to run it in-process;
    :meth:`enqueue` to run it on a worker."""

    def __init__(
        self, app: App, fn: Callable[P, R] | Callable[P, Awaitable[R]], options: TaskOptions
    ) -> None:
        self.app = app
        self.fn = fn
        self.options = options
        self.name = options.name
        self.is_async = inspect.iscoroutinefunction(fn)
        self.args_type, self.signature = _build_args_type(fn, options.name)
        try:
            ret = typing.get_type_hints(fn).get("return", Any)
        except Exception:
            ret = Any
        self.return_type: Any = Any if ret is None or ret is type(None) else ret
        self._positional = [
            p.name for p in self.signature.parameters.values() if p.kind is p.POSITIONAL_ONLY
        ]
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = list(self.signature.parameters.values())
        self._simple_names: list[str] | None = (
            [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
            if all(p.kind in plain for p in params)
            else None
        )
        self._has_var = any(
            p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in self.signature.parameters.values()
        )
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return (
            f"<Task {self.name} queue={self.options.queue} priority={self.options.priority.label}>"
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R | Awaitable[R]:
        return self.fn(*args, **kwargs)

    # -- arguments ------------------------------------------------------------
    def encode_args(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        """Validate arguments against the signature and type hints; return them encoded.

        Raises:
            TaskValidationError: the arguments do not fit; nothing is enqueued.
        """
        names = self._simple_names
        if names is not None and len(args) <= len(names):
            # fast path for plain parameters: the Struct decode below checks missing and
            # unknown names; only a name given twice is caught here
            data = dict(zip(names, args, strict=False))
            if kwargs:
                if not data.keys().isdisjoint(kwargs):
                    self._bind(args, kwargs)  # raises with Python's own message
                data.update(kwargs)
            return self._validated(data, args, kwargs)
        return self._validated(self._bind(args, kwargs), args, kwargs)

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskValidationError(
                f"task {self.name!r}: {exc}; expected call signature {self.name}{self.signature}"
            ) from None
        data: dict[str, Any] = {}
        for key, value in bound.arguments.items():
            kind = self.signature.parameters[key].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                data[_VAR_ARGS] = list(value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                data[_VAR_KWARGS] = value
            else:
                data[key] = value
        return data

    def _validated(
        self, data: dict[str, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> bytes:
        codec = self.app.codec
        try:
            body = codec.encode(data)
        except SerializationError as exc:
            raise TaskValidationError(
                f"task {self.name!r}: arguments cannot be encoded: {exc}"
            ) from None
        try:
            codec.decode(body, self.args_type)
        except SerializationError as exc:
            if self._simple_names is not None:
                self._bind(args, kwargs)  # a missing or unknown name: Python's message
            raise TaskValidationError(
                f"task {self.name!r}: invalid arguments: {exc.__cause__ or exc}; "
                f"expected {self.name}{self.signature}"
            ) from None
        return body

    def decode_args(self, body: bytes) -> tuple[list[Any], dict[str, Any]]:
        """Decode and validate encoded arguments into ``(args, kwargs)`` for a call."""
        struct = self.app.codec.decode(body, self.args_type)
        kwargs: dict[str, Any] = msgspec.structs.asdict(struct)  # type: ignore[arg-type]
        if not self._positional and not self._has_var:
            return [], kwargs
        args = [kwargs.pop(name) for name in self._positional]
        if self._has_var:
            args.extend(kwargs.pop(_VAR_ARGS, []))
            kwargs.update(kwargs.pop(_VAR_KWARGS, {}))
        return args, kwargs

    def check_rate_key(self) -> None:
        """Refuse a ``rate_key`` that names no plain parameter, or has no rate limit.

        Raises:
            ConfigurationError: naming the parameter and the fix.
        """
        key = self.options.rate_key
        if key is None:
            return
        if self.options.rate_limit is None:
            raise ConfigurationError(
                f"task {self.name!r}: rate_key={key!r} needs a rate_limit (e.g. "
                f"rate_limit='10/s') to apply per key"
            )
        param = self.signature.parameters.get(key)
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        if param is None or param.kind not in plain:
            names = [p.name for p in self.signature.parameters.values() if p.kind in plain]
            raise ConfigurationError(
                f"task {self.name!r}: rate_key={key!r} must name one of its parameters "
                f"{names} (not positional-only, *args or **kwargs)"
            )

    def rate_bucket(self, call_key: str | None, kwargs: Mapping[str, Any]) -> str:
        """The token bucket a run takes from: per task, or per task and key (the
        per-call ``rate_key`` if given, else the value of the ``rate_key`` argument)."""
        key = call_key
        if key is None and self.options.rate_key is not None:
            key = str(kwargs[self.options.rate_key])
        return f"rate:{self.name}" if key is None else f"rate:{self.name}:{key}"

    def check_partial(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Validate a call that will get one more positional argument first (a
        workflow step's previous result): arity now, and the types of what is given.

        Raises:
            TaskValidationError: the arguments cannot fit, whatever comes first.
        """
        data = self._bind((_PREVIOUS, *args), kwargs)
        types = {f.name: f.type for f in msgspec.structs.fields(self.args_type)}
        codec = self.app.codec
        for name, value in data.items():
            if value is _PREVIOUS:
                continue
            if name == _VAR_ARGS:
                value = [v for v in value if v is not _PREVIOUS]
            try:
                codec.decode(codec.encode(value), types[name])
            except SerializationError as exc:
                raise TaskValidationError(
                    f"task {self.name!r}: invalid argument {name}={value!r}: "
                    f"{exc.__cause__ or exc}; expected {self.name}{self.signature}"
                ) from None

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this call for a workflow (:func:`~taskcore.chain`,
        :func:`~taskcore.group`, :func:`~taskcore.chord`); validated now. In a chain,
        the previous step's result is passed in as the first positional argument, so
        ``args`` may leave that one out."""
        from .workflow import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: like :meth:`s`, but the previous step's result is
        not passed in (the step only runs after it)."""
        from .workflow import Signature

        return Signature(self, args, kwargs, immutable=True)

    # -- enqueueing -----------------------------------------------------------
    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Validate the arguments and enqueue one run with the task's options."""
        return await self.app.enqueue_call(self, args, kwargs)

    def with_options(self, **options: Any) -> BoundTask[P, R]:
        """Per-call options: ``delay``, ``eta``, ``priority``, ``deadline``, ``queue``,
        ``unique_key``, ``fairness_key``, ``rate_key``, ``task_id``, ``headers``.

        ``await resize.with_options(delay=30, priority="high").enqueue(42)``
        """
        return BoundTask(self, options)


class BoundTask(Generic[P, R]):
    """A task with per-call options; see :meth:`Task.with_options`."""

    def __init__(self, task: Task[P, R], options: Mapping[str, Any]) -> None:
        unknown = set(options) - _CALL_OPTIONS
        if unknown:
            raise TaskValidationError(
                f"unknown enqueue option(s) {sorted(unknown)} for task {task.name!r}; "
                f"valid options: {sorted(_CALL_OPTIONS)}"
            )
        self.task = task
        self.options = dict(options)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        return await self.task.app.enqueue_call(self.task, args, kwargs, **self.options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A workflow signature with these options (see :meth:`Task.s`)."""
        from .workflow import Signature

        return Signature(self.task, args, kwargs, options=self.options)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable workflow signature with these options (see :meth:`Task.si`)."""
        from .workflow import Signature

        return Signature(self.task, args, kwargs, options=self.options, immutable=True)


_CALL_OPTIONS = frozenset(
    {
        "delay",
        "eta",
        "priority",
        "deadline",
        "queue",
        "unique_key",
        "fairness_key",
        "rate_key",
        "task_id",
        "headers",
    }
)
