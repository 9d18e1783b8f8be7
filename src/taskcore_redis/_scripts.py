"""The Lua scripts: loaded once with SCRIPT LOAD, called with EVALSHA, reloaded on
NOSCRIPT (after a ``SCRIPT FLUSH`` or a failover to a replica without them)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Protocol

import attrs
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from taskcore.scheduling import DEFAULT_POLICY

__all__ = ["Call", "Executor", "Script", "Scripts", "evalsha"]

# Scripts on global keys (or a journal stream's); every other script works on one queue
# and gets the prelude.
_GLOBAL = frozenset(
    {"index", "unindex", "tokens", "once", "kv_set", "journal_append", "journal_trim"}
)
# Scripts that keep a compact reply themselves (a claim's reply holds whole messages).
_OWN_REPLAY = frozenset({"claim"})


@attrs.frozen
class Script:
    name: str
    source: str
    sha: str
    # ARGV[1] is "now" and a '+' before it says the call is sent again (_lib.lua)
    per_queue: bool = False


Call = tuple[Script, Sequence[str], Sequence[Any]]
"""One script invocation: the script, its KEYS and its ARGV."""


class Executor(Protocol):
    """Sends commands in one round trip (:meth:`taskcore_redis._conn.Connection.execute`)."""

    redis: Redis

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]: ...


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


# A per-queue script runs as main(). When the call names a reply key (KEYS[2]) the
# reply is kept there for a while, and a repeated call with the same key returns it
# without running again: a client that lost the reply can safely send the call again.
# Only a call sent again (AGAIN, see _lib.lua) looks: a first one has nothing kept.
_REPLAY = """
local REPLY_KEY = KEYS[2]
if REPLY_KEY and AGAIN then
  local kept = redis.call('GET', REPLY_KEY)
  if kept then return cmsgpack.unpack(kept) end
end
local reply = main()
if REPLY_KEY then redis.call('SET', REPLY_KEY, cmsgpack.pack(reply), 'PX', REPLY_TTL_MS) end
return reply
"""


def _lua_literal(value: Any) -> str:
    """A JSON-like value as Lua source that builds what ``cjson.decode`` would."""
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"[{_lua_literal(k)}] = {_lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(_lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)  # ASCII-escaped: also a valid Lua string literal
    raise TypeError(f"no Lua literal for {value!r}")


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class _Unit:
    """One top-level ``local`` definition of the prelude and the words it uses."""

    names: frozenset[str]
    uses: frozenset[str]
    text: str


def _units(prelude: str) -> list[_Unit]:
    """The prelude cut at its top-level ``local`` statements (all of it is made of them)."""
    starts = [m.start() for m in re.finditer(r"^local ", prelude, re.M)]
    units = []
    for a, b in zip(starts, [*starts[1:], len(prelude)], strict=True):
        text = prelude[a:b]
        first = text.split("\n", 1)[0]
        fn = re.match(r"local function (\w+)", first)
        if fn:
            names = {fn.group(1)}
        else:
            names = {n.strip() for n in first[len("local ") :].split("=", 1)[0].split(",")}
        units.append(_Unit(frozenset(names), frozenset(_WORD.findall(text)) - names, text))
    return units


def _prelude_for(units: Sequence[_Unit], code: str) -> str:
    """The units ``code`` needs, directly or through other units, in prelude order.

    Running a script runs its whole prelude first (every ``local function`` is a
    closure built on each call), so a script carries only what it uses. A unit can
    only use units above it (Lua locals), so one pass from the bottom up suffices.
    """
    need = set(_WORD.findall(code))
    chosen = []
    for unit in reversed(units):
        if unit.names & need:
            chosen.append(unit)
            need |= unit.uses
    return "".join(u.text for u in reversed(chosen))


def _build(name: str, units: Sequence[_Unit]) -> Script:
    body = _read(name)
    if name in _GLOBAL:
        source = body
    elif name in _OWN_REPLAY:
        source = f"{_prelude_for(units, body)}\n-- {name}.lua\n{body}"
    else:
        code = f"local function main()\n{body}\nend\n{_REPLAY}"
        source = f"{_prelude_for(units, code)}\n-- {name}.lua\n{code}"
    sha = hashlib.sha1(source.encode()).hexdigest()
    return Script(name, source, sha, per_queue=name not in _GLOBAL)


class Scripts:
    """All scripts of the backend, addressed by file name."""

    def __init__(self) -> None:
        # The default policy as a Lua table constructor: building it costs a
        # fraction of decoding its JSON, and most queues use it.
        default = _lua_literal(DEFAULT_POLICY.to_dict())
        lib = _read("_lib")
        units = _units(f"local function default_policy() return {default} end\n{lib}")
        names = sorted(
            p.name.removesuffix(".lua")
            for p in resources.files(__package__).joinpath("lua").iterdir()
            if p.name.endswith(".lua") and not p.name.startswith("_")
        )
        self._by_name = {name: _build(name, units) for name in names}

    def __getitem__(self, name: str) -> Script:
        return self._by_name[name]

    async def load(self, redis: Redis) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for script in self._by_name.values():
                pipe.script_load(script.source)
            await pipe.execute()

    async def run(
        self,
        conn: Executor,
        calls: Sequence[Call],
        unlink: Sequence[str] = (),
        again: bool = False,
    ) -> list[Any]:
        """Run ``calls`` in one pipeline (one round trip) and return their replies.

        A call refused with NOSCRIPT did not run, so after reloading the scripts only
        those calls are sent again; nothing runs twice. ``unlink`` keys are deleted
        in the same round trip. ``again``: the calls were sent before and may have run
        (their replies were lost), so the scripts look for the replies they kept.
        """
        if not calls:
            return []
        results = await self._send(conn, calls, unlink, again)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self.load(conn.redis)
            resent = await self._send(conn, [calls[i] for i in missing], (), again)
            for i, r in zip(missing, resent, strict=True):
                results[i] = r
        for r in results:
            if isinstance(r, ResponseError):
                raise r
        return results

    async def _send(
        self, conn: Executor, calls: Sequence[Call], unlink: Sequence[str], again: bool
    ) -> list[Any]:
        commands: list[Sequence[Any]] = [evalsha(call, again) for call in calls]
        # one key per command: they may be in different slots
        commands += [("UNLINK", key) for key in unlink]
        return (await conn.execute(commands))[: len(calls)]


def evalsha(call: Call, again: bool = False) -> tuple[Any, ...]:
    """The ``EVALSHA`` command of ``call``; ``again``: marked as sent again (a '+'
    before "now", see _lib.lua) if its script keeps replies."""
    script, keys, args = call
    if again and script.per_queue:
        args = ["+" + args[0], *args[1:]]
    return ("EVALSHA", script.sha, len(keys), *keys, *args)
