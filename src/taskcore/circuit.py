"""Circuit breakers: stop running the tasks that call a failing dependency, for a while.

A circuit counts the failed runs of the tasks that use it. Once ``failures`` runs have
failed within one ``window`` it *opens*: its tasks are deferred (no attempt spent, no
error recorded) until ``cooldown`` seconds have passed. It is then *half-open*: exactly
one task runs as a probe while the others keep being deferred; the probe's success
closes the circuit, its failure opens it for another cool-down.

The state lives in the backend and is built only on the coordination primitives every
backend implements, so all workers of a cluster agree:

- ``kv_get`` / ``kv_replace`` hold the state: a generation number and, while open, the
  end of the cool-down. Every transition bumps the generation (a compare-and-set, so one
  worker makes it), which also starts a fresh failure count;
- ``once`` counts failures exactly: the k-th failure of a window claims slot k (a hint
  in ``kv`` skips the slots already taken), so exactly one worker sees the failure that
  reaches the threshold;
- ``once`` elects the probe: one claim per generation. A probe that never reports (its
  worker died, it asked for a retry) frees the half-open state after one cool-down.

Windows are fixed, aligned on multiples of ``window`` seconds of the clock.
"""

from __future__ import annotations

import enum
import logging
import random
from typing import TYPE_CHECKING

import attrs
import msgspec

from .errors import ConfigurationError, TaskControl
from .retry import ExcTypes, as_exc_tuple

if TYPE_CHECKING:
    from .backend import Backend
    from .clock import Clock
    from .telemetry import Telemetry

__all__ = ["Circuit", "CircuitBreakers", "CircuitState", "Ticket"]

log = logging.getLogger("taskcore.circuit")

HALF_OPEN_RECHECK = 1.0  # seconds: how soon a task deferred by a half-open circuit looks again
STATE_TTL = 7 * 86400.0  # a circuit nobody used for a week is forgotten (closed)


@attrs.frozen
class Circuit:
    """A circuit breaker's settings.

    Args:
        failures: failed runs within one window that open the circuit (1-10000).
        window: seconds over which failures are counted (> 0).
        cooldown: seconds the circuit stays open before a probe may run (> 0).
        ignore: exception types that do not count as failures (bad input, say);
            ``Retry`` and ``RateLimited`` never count.
    """

    failures: int = 5
    window: float = 60.0
    cooldown: float = 30.0
    ignore: ExcTypes = attrs.field(default=(), converter=as_exc_tuple)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int):
            raise ConfigurationError(
                f"Circuit(failures={self.failures!r}): give a whole number of failed runs"
            )
        if not 1 <= self.failures <= 10_000:
            raise ConfigurationError(
                f"Circuit(failures={self.failures}): must be between 1 and 10000"
            )
        for name in ("window", "cooldown"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigurationError(
                    f"Circuit({name}={value!r}): must be a number of seconds > 0"
                )
        bad = [t for t in self.ignore if not (isinstance(t, type) and issubclass(t, BaseException))]
        if bad:
            raise ConfigurationError(f"Circuit(ignore={bad!r}): give exception classes")

    def counts(self, exc: BaseException) -> bool:
        """Whether a run that raised ``exc`` counts as a failure of the dependency."""
        return not isinstance(exc, TaskControl) and not isinstance(exc, self.ignore)


DEFAULT_CIRCUIT = Circuit()


class CircuitState(enum.IntEnum):
    """As the ``taskcore.circuit.state`` gauge reports it."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class _Stored(msgspec.Struct, frozen=True):
    gen: int = 0
    until: float | None = None  # None: closed; else the end of the cool-down


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


@attrs.frozen
class Ticket:
    """Leave to run one task under a circuit; hand it back with the run's verdict."""

    name: str
    circuit: Circuit
    gen: int
    probe: bool


class CircuitBreakers:
    """A worker's view of the circuits, read from and written to the backend."""

    def __init__(self, backend: Backend, clock: Clock, telemetry: Telemetry) -> None:
        self.backend = backend
        self.clock = clock
        self.telemetry = telemetry

    async def state(self, name: str) -> tuple[CircuitState, float | None]:
        """The circuit's state now, and the end of its cool-down when open."""
        stored = await self._read(name)
        if stored.until is None:
            return CircuitState.CLOSED, None
        if self.clock.now() < stored.until:
            return CircuitState.OPEN, stored.until
        return CircuitState.HALF_OPEN, stored.until

    async def admit(self, name: str, circuit: Circuit) -> Ticket | float:
        """A ticket to run a task now, or the epoch time to defer it to."""
        stored = await self._read(name)
        now = self.clock.now()
        if stored.until is None:
            self._observe(name, CircuitState.CLOSED)
            return Ticket(name, circuit, stored.gen, probe=False)
        if now < stored.until:
            self._observe(name, CircuitState.OPEN)
            # spread the deferred tasks a little so they do not all return at once
            return stored.until + random.random() * min(1.0, circuit.cooldown / 10)
        self._observe(name, CircuitState.HALF_OPEN)
        if await self.backend.once(self._key(name, "probe", stored.gen), circuit.cooldown):
            log.info("circuit %s half-open: running one probe task", name)
            return Ticket(name, circuit, stored.gen, probe=True)
        return now + min(circuit.cooldown, HALF_OPEN_RECHECK) * (1 + random.random() / 10)

    async def record(self, ticket: Ticket, error: BaseException | None) -> None:
        """Report how the run admitted by ``ticket`` ended (``error`` None: success)."""
        if error is not None and not ticket.circuit.counts(error):
            return  # control flow or an ignored error: no verdict
        now = self.clock.now()
        circuit = ticket.circuit
        if ticket.probe:
            if error is None:
                if await self._move(ticket, None):
                    log.info("circuit %s closed: the probe task succeeded", ticket.name)
            elif await self._move(ticket, now + circuit.cooldown):
                log.warning(
                    "circuit %s re-opened for %ss: the probe task failed (%r)",
                    ticket.name,
                    circuit.cooldown,
                    error,
                )
            return
        if error is None:
            return
        if await self._count_failure(ticket, now) and await self._move(
            ticket, now + circuit.cooldown
        ):
            log.warning(
                "circuit %s opened after %d failed run(s) within %ss (last: %r); its tasks "
                "are deferred for %ss",
                ticket.name,
                circuit.failures,
                circuit.window,
                error,
                circuit.cooldown,
            )

    async def _count_failure(self, ticket: Ticket, now: float) -> bool:
        """Count one failure; True when it reaches the threshold of its window."""
        circuit = ticket.circuit
        window = int(now // circuit.window)
        base = self._key(ticket.name, "fail", ticket.gen, window)
        ttl = 2 * circuit.window
        hint = await self.backend.kv_get(base)
        start = int(hint) if hint else 0
        for slot in range(start, circuit.failures):
            if await self.backend.once(f"{base}:{slot}", ttl):
                await self.backend.kv_set(base, b"%d" % (slot + 1), ttl)
                return slot + 1 == circuit.failures
        return True  # every slot taken: the threshold was reached (a trip may have been lost)

    async def _move(self, ticket: Ticket, until: float | None) -> bool:
        """Open (``until`` set) or close the circuit, if no other worker moved it since
        the ticket was issued; True if this call made the change. The write is a
        compare-and-set: of two workers moving the same generation at once (the failure
        that reached the threshold, and one counted after it), one makes the change."""
        key = self._key(ticket.name)
        raw = await self.backend.kv_get(key)
        current = self._parse(ticket.name, raw)
        if current.gen != ticket.gen:
            return False
        moved = _encode(_Stored(current.gen + 1, until))
        if not await self.backend.kv_replace(key, raw, moved, STATE_TTL):
            return False
        state = CircuitState.CLOSED if until is None else CircuitState.OPEN
        self.telemetry.circuit_changes.add(1, {"circuit": ticket.name, "state": state.name.lower()})
        self._observe(ticket.name, state)
        return True

    async def _read(self, name: str) -> _Stored:
        return self._parse(name, await self.backend.kv_get(self._key(name)))

    @staticmethod
    def _parse(name: str, raw: bytes | None) -> _Stored:
        if not raw:
            return _Stored()
        try:
            return _decode(raw)
        except msgspec.DecodeError:
            log.warning("circuit %s: unreadable state %r; treating it as closed", name, raw)
            return _Stored()

    def _observe(self, name: str, state: CircuitState) -> None:
        self.telemetry.circuits[name] = int(state)

    @staticmethod
    def _key(name: str, *parts: object) -> str:
        return ":".join(("circuit", name, *map(str, parts)))
