"""Settings (layers, files, environment, errors), feature flags, the remote
configuration and the ``taskcore config`` command, on the memory backend."""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from taskcore import App, ConfigurationError, FakeClock, SchedulingPolicy, State, Worker
from taskcore.cli import main as cli_main
from taskcore.config import REMOTE_KEY, Flag, Flags, RemoteDocument, Settings, load, resolve
from taskcore.config.flags import bucket
from taskcore.config.remote import WRITE_ATTEMPTS
from taskcore.config.settings import APP_SCALARS
from taskcore.errors import BackendError
from taskcore.memory import MemoryBackend

from .conftest import settled

pytestmark = pytest.mark.anyio

TOML = """
url = "memory://"
result_ttl = 3456000
[worker]
concurrency = 8
queues = ["a", "b"]
prefetch = "auto"
[queues.emails]
kind = "fifo"
[circuits.payments]
failures = 3
[flags]
new-billing = true
checkout = {percent = 25}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- layers -------------------------------------------------------------------------
def test_defaults_mirror_the_app_and_worker_arguments() -> None:
    # the settings' defaults are the constructors' own: a setting left unset in a file
    # behaves as if the argument was not passed
    worker = inspect.signature(Worker.__init__).parameters
    for name, value in msgspec.structs.asdict(Settings().worker).items():
        assert worker[name].default == value, name
    app = inspect.signature(App.__init__).parameters
    for name in APP_SCALARS:
        assert app[name].default == getattr(Settings(), name), name


def test_layers_defaults_file_environment_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, "taskcore.toml", TOML)
    env = {"TASKCORE_WORKER__CONCURRENCY": "12", "TASKCORE_WORKER__THREADS": "4"}
    resolved = resolve(path, env=env, overrides={"worker": {"threads": 2}})
    s = resolved.settings
    assert s.worker.concurrency == 12  # environment over file
    assert s.worker.threads == 2  # argument over environment
    assert s.worker.queues == ["a", "b"]  # file over defaults
    assert s.worker.prefetch == "auto"
    assert s.worker.lease_seconds == 30.0  # default
    assert s.result_ttl == 3456000.0
    assert s.queues["emails"].policy() == SchedulingPolicy.fifo()
    assert s.circuits["payments"].circuit().failures == 3
    assert s.flags == {"new-billing": Flag(), "checkout": Flag(percent=25)}
    assert str(resolved.source("worker.concurrency")) == (
        "environment variable TASKCORE_WORKER__CONCURRENCY"
    )
    assert str(resolved.source("worker.queues")) == f"file {path}"
    assert resolved.source("worker.threads").kind == "argument"
    assert resolved.source("worker.lease_seconds").kind == "default"


def test_the_environment_names_the_file_and_other_taskcore_variables_are_left_alone(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "taskcore.toml", TOML)
    env = {
        "TASKCORE_CONFIG": str(path),
        "TASKCORE_PG_DSN": "postgresql://elsewhere",  # another tool's variable
        "TASKCORE_WORKER_SLOT": "3",  # the supervisor's (one underscore)
        "TASKCORE_URL": "redis://cache:6379/0",
        "TASKCORE_WORKER__QUEUES": "x, y",
        "TASKCORE_WORKER__MAX_TASKS": "",  # empty: unset
        "TASKCORE_FLAGS": '{"checkout": {"percent": 50}}',
    }
    s = load(env=env)
    assert s.url == "redis://cache:6379/0"
    assert s.worker.concurrency == 8
    assert s.worker.queues == ["x", "y"]
    assert s.worker.max_tasks is None
    # a flag entry replaces the file's, the others stay
    assert s.flags == {"new-billing": Flag(), "checkout": Flag(percent=50)}


def test_toml_json_yaml_and_pyproject_give_the_same_settings(tmp_path: Path) -> None:
    import tomllib

    import yaml

    data = tomllib.loads(TOML)
    toml = load(write(tmp_path, "taskcore.toml", TOML), env={})
    as_json = load(write(tmp_path, "taskcore.json", json.dumps(data)), env={})
    as_yaml = load(write(tmp_path, "taskcore.yaml", yaml.safe_dump(data)), env={})
    body = "\n".join(
        f"[tool.taskcore.{line[1:]}" if line.startswith("[") else line for line in TOML.splitlines()
    )
    pyproject = f"[project]\nname = 'x'\n[tool.taskcore]\n{body}"
    in_pyproject = load(write(tmp_path, "pyproject.toml", pyproject), env={})
    assert toml == as_json == as_yaml == in_pyproject
    assert toml.worker.concurrency == 8
    assert load(write(tmp_path, "empty.yml", ""), env={}) == Settings()


# -- errors: each names the setting, the value, the source and the fix ----------------
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.toml",
            "[worker]\nconcurrency = 0\n",
            r"setting worker\.concurrency = 0 from file .*bad\.toml is invalid: expected "
            r"`int` >= 1; edit it in .*bad\.toml",
        ),
        (
            "bad.toml",
            "[worker]\nconcurency = 4\n",
            r"unknown setting worker\.concurency in file .*: did you mean "
            r"worker\.concurrency\?",
        ),
        ("bad.toml", "urll = 'x'\n", r"unknown setting urll in file .*: did you mean url\?"),
        (
            "bad.toml",
            "[worker]\nconcurrency = '8'\n",  # files are typed: a string is not a number
            r"worker\.concurrency = '8' .* expected `int`, got `str`",
        ),
        ("bad.toml", "[worker\n", r"file .*bad\.toml is not valid TOML: "),
        ("bad.json", "{", r"file .*bad\.json is not valid JSON: "),
        ("bad.yaml", "a: [", r"file .*bad\.yaml is not valid YAML: "),
        ("bad.json", "[1, 2]", r"file .*bad\.json holds list, not a table of settings"),
        ("bad.ini", "", r"unknown format '\.ini'; use a \.toml, \.json, \.yaml or \.yml file"),
        (
            "bad.toml",
            "[queues.emails]\nkind = 'lifo'\n",
            r"setting queues\.emails\.kind = 'lifo' from file .* invalid enum value 'lifo': use "
            r"'fifo' or 'priority' or 'fair' or 'deadline'",
        ),
        (
            "bad.toml",
            "[queues.'bad queue']\nkind = 'fifo'\n",
            r"setting queues\.bad queue = 'bad queue' .* invalid queue name 'bad queue'",
        ),
        (
            "bad.toml",
            "[flags]\nx = 3\n",
            r"setting flags\.x = 3 .* a flag is true, false or \{percent = 0-100\}",
        ),
        (
            "bad.toml",
            "[flags]\nx = {percent = 120}\n",
            r"setting flags\.x\.percent = .* expected `float` <= 100\.0",
        ),
        (
            "bad.toml",
            "dead_ttl = 86400\n",
            r"setting dead_ttl = 86400\.0 from file .* outside the documented bounds of "
            r"30-180 days",
        ),
        (
            "bad.toml",
            "audit_ttl = 86400\n",
            r"setting audit_ttl = 86400\.0 from file .* outside the documented bounds of "
            r"365-2555 days",
        ),
        (
            "bad.toml",
            "[worker]\nmin_concurrency = 10\nmax_concurrency = 5\n",
            r"setting worker\.min_concurrency = 10 .* must be at most max_concurrency=5",
        ),
        (
            "bad.toml",
            "[worker]\nmax_rss = 'lots'\n",
            r"setting worker\.max_rss = 'lots' .* write a size as bytes or with a unit",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_setting_and_the_file(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load(write(tmp_path, name, text), env={})


def test_a_missing_file_and_a_pyproject_without_the_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read configuration file .*nope\.toml"):
        load(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigurationError, match=r"has no \[tool\.taskcore\] table"):
        load(write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n"), env={})
    with pytest.raises(ConfigurationError, match=r"cannot read .*missing\.json: .*TASKCORE_CONFIG"):
        load(env={"TASKCORE_CONFIG": str(tmp_path / "missing.json")})


def test_yaml_without_pyyaml_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    with pytest.raises(ConfigurationError, match=r'needs PyYAML: pip install "taskcore\[config\]"'):
        load(write(tmp_path, "taskcore.yml", "url: memory://\n"), env={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TASKCORE_WORKER__CONCURRENCY": "many"},
            r"setting worker\.concurrency = 'many' from environment variable "
            r"TASKCORE_WORKER__CONCURRENCY is invalid: expected `int`, got `str`; change or "
            r"unset TASKCORE_WORKER__CONCURRENCY",
        ),
        (
            {"TASKCORE_WORKER__LEASE": "10"},
            r"unknown setting worker\.lease in environment variable TASKCORE_WORKER__LEASE: "
            r"did you mean worker\.lease_seconds\?",
        ),
        (
            {"TASKCORE_QUEUES__EMAILS": "fifo"},
            r"TASKCORE_QUEUES__EMAILS: only worker settings are set one by one",
        ),
        ({"TASKCORE_FLAGS": "{oops"}, r"environment variable TASKCORE_FLAGS is not a JSON"),
        ({"TASKCORE_FLAGS": "[1]"}, r"TASKCORE_FLAGS holds list, not a JSON object"),
        (
            {"TASKCORE_SERIALIZER": "pickle"},
            r"setting serializer = 'pickle' from environment variable TASKCORE_SERIALIZER",
        ),
        (
            {"TASKCORE_WORKER__RESERVED_CRITICAL": "4", "TASKCORE_WORKER__CONCURRENCY": "4"},
            r"setting worker\.reserved_critical = 4 from environment variable "
            r"TASKCORE_WORKER__RESERVED_CRITICAL is invalid: must be below "
            r"worker\.concurrency = 4 \(from environment variable TASKCORE_WORKER__CONCURRENCY\)",
        ),
    ],
)
def test_a_bad_environment_variable_is_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load(env=env)


def test_a_bad_argument_is_refused() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"setting worker\.threads = 0 from an explicit argument .*pass a valid value",
    ):
        load(env={}, overrides={"worker": {"threads": 0}})


# -- App and worker -------------------------------------------------------------------
async def test_an_app_from_settings_and_its_workers(tmp_path: Path, clock: FakeClock) -> None:
    settings = load(write(tmp_path, "taskcore.toml", TOML), env={})
    app = App.from_settings(settings, backend=MemoryBackend(clock=clock), clock=clock)
    assert app.settings is settings
    assert app.result_ttl == 3456000.0
    assert app.queue_specs["emails"].policy == SchedulingPolicy.fifo()
    assert app.circuit_settings("payments").failures == 3
    assert app.flags.enabled("new-billing")
    worker = app.worker(threads=3)  # an explicit option over the settings
    assert (worker.target, worker.queues, worker.prefetch_auto) == (8, ["a", "b"], True)
    assert worker.thread_limiter.total_tokens == 3
    # explicit App arguments win over the settings
    assert App.from_settings(settings, result_ttl=40 * 86400.0).result_ttl == 40 * 86400.0
    # without settings, nothing changes
    assert App().worker().target == 100


def test_configure_applies_only_what_the_file_and_environment_set(tmp_path: Path) -> None:
    app = App(
        "memory://", serializer="msgpack", queues={"emails": SchedulingPolicy.weighted_fair()}
    )
    path = write(tmp_path, "w.toml", "[worker]\nconcurrency = 3\n[queues.media]\nkind='fifo'\n")
    app.configure(resolve(path, env={"TASKCORE_MAX_PAYLOAD_BYTES": "2048"}))
    assert app.codec.format == "msgpack"  # not set by the file: the app's own
    assert app.codec.max_payload_bytes == 2048
    assert app.url == "memory://"
    assert app.queue_specs["emails"].policy == SchedulingPolicy.weighted_fair()
    assert app.queue_specs["media"].policy == SchedulingPolicy.fifo()
    # what the app's own settings say is not applied again over its explicit arguments
    from taskcore.config import QueuePolicy

    own = Settings(queues={"emails": QueuePolicy(kind="fifo")}, url="memory://own")
    fair = SchedulingPolicy.weighted_fair()
    built = App.from_settings(own, queues={"emails": fair}, url="memory://explicit")
    built.configure(resolve(path, env={}, base=built.settings))
    assert built.queue_specs["emails"].policy == fair
    assert built.url == "memory://explicit"
    app.configure(resolve(None, env={"TASKCORE_URL": "memory://other"}))
    assert app.url == "memory://other"
    built = App(backend=MemoryBackend())
    with pytest.raises(ConfigurationError, match=r"url = .* TASKCORE_URL .*backend of its own"):
        built.configure(resolve(None, env={"TASKCORE_URL": "redis://x"}))


# -- flags --------------------------------------------------------------------------
def test_flags_on_off_default_and_remote_over_local() -> None:
    flags = Flags({"a": Flag(), "b": Flag(enabled=False), "c": Flag(percent=0)})
    assert flags.enabled("a")
    assert not flags.enabled("b", default=True)
    assert not flags.enabled("c", key="k")
    assert not flags.enabled("missing")
    assert flags.enabled("missing", default=True)
    flags.remote = {"a": Flag(enabled=False), "d": Flag()}
    assert not flags.enabled("a")
    assert flags.enabled("d")
    assert flags.current() == {"a": Flag(enabled=False), "b": Flag(enabled=False),
                               "c": Flag(percent=0), "d": Flag()}  # fmt: skip


def test_a_percentage_rollout_is_stable_proportional_and_grows_monotonically() -> None:
    keys = [f"customer-{i}" for i in range(4000)]
    flags = Flags({"f": Flag(percent=25)})
    on = {k for k in keys if flags.enabled("f", key=k)}
    assert 0.22 < len(on) / len(keys) < 0.28
    assert on == {k for k in keys if flags.enabled("f", key=k)}  # stable
    assert bucket("f", "customer-1") == bucket("f", "customer-1")
    assert not flags.enabled("f")  # a partial rollout needs a key
    flags.local["f"] = Flag(percent=50)
    wider = {k for k in keys if flags.enabled("f", key=k)}
    assert on < wider  # raising the percentage only adds keys
    # another flag's buckets are independent
    other = {k for k in keys if bucket("g", k) < 25}
    assert 0.15 < len(on & other) / len(on) < 0.35


# -- remote configuration -------------------------------------------------------------
async def test_set_remote_checks_versions_and_merges(app: App) -> None:
    assert await app.config.get_remote() is None
    doc = await app.config.set_remote(concurrency=4, flags={"x": True, "y": {"percent": 10}})
    assert (doc.version, doc.concurrency, doc.paused) == (1, 4, False)
    assert doc.updated_at == app.clock.now()
    doc = await app.config.set_remote(paused=True, flags={"x": None})
    assert (doc.version, doc.concurrency, doc.paused) == (2, 4, True)
    assert doc.flags == {"y": Flag(percent=10)}
    assert await app.config.get_remote() == doc
    assert app.flags.remote == {"y": Flag(percent=10)}  # the writer sees it at once
    doc = await app.config.set_remote(concurrency=None)
    assert doc.concurrency is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"concurrency": 0}, r"setting concurrency = 0 from the remote configuration .*>= 1"),
        ({"concurrency": "8"}, r"setting concurrency = '8' .* expected `int \| null`"),
        ({"flags": {"x": 3}}, r"setting flags\.x = 3 .* use true, false or \{percent"),
        ({"flags": {"x": {"percent": -1}}}, r"setting flags\.x = .*>= 0\.0"),
    ],
)
async def test_an_invalid_remote_change_is_refused_and_nothing_is_written(
    app: App, change: dict[str, Any], message: str
) -> None:
    await app.config.set_remote(concurrency=2)
    with pytest.raises(ConfigurationError, match=message):
        await app.config.set_remote(**change)
    stored = await app.config.get_remote()
    assert stored is not None
    assert (stored.version, stored.concurrency) == (1, 2)


class _Raced(MemoryBackend):
    """A memory backend on which another process writes the remote configuration just
    before each of the next ``races`` compare-and-sets of it (between a writer's read
    and its write: what a concurrent writer on another machine does)."""

    def __init__(self, clock: FakeClock, races: int) -> None:
        super().__init__(clock=clock)
        self.races = races
        self.rival = App(backend=self, clock=clock)
        self.rival_writes: list[RemoteDocument] = []
        self._racing = False

    async def kv_replace(
        self, key: str, old: bytes | None, new: bytes, ttl: float | None = None
    ) -> bool:
        if key == REMOTE_KEY and self.races and not self._racing:
            self.races -= 1
            self._racing = True  # the rival's own write is not raced
            try:
                doc = await self.rival.config.set_remote(flags={f"rival{self.races}": True})
            finally:
                self._racing = False
            self.rival_writes.append(doc)
        return await super().kv_replace(key, old, new, ttl)


async def test_a_write_raced_by_another_writer_is_applied_to_the_newer_document(
    clock: FakeClock,
) -> None:
    backend = _Raced(clock, races=0)
    async with App(backend=backend, clock=clock) as app:
        await backend.rival.config.set_remote(paused=True)
        backend.races = 3
        doc = await app.config.set_remote(concurrency=7, flags={"mine": True, "rival0": None})
        # three tries lost to the rival's writes (versions 2-4), the fourth stored
        assert [d.version for d in backend.rival_writes] == [2, 3, 4]
        assert doc.version == 5
        assert (doc.concurrency, doc.paused) == (7, True)
        assert doc.flags == {
            "mine": Flag(enabled=True),
            "rival2": Flag(enabled=True),
            "rival1": Flag(enabled=True),
        }  # rival0 (written by the last race) removed: the change applied to it
        assert await app.config.get_remote() == doc
        assert app.config.document == doc and app.flags.remote == doc.flags


@pytest.mark.parametrize("races", [WRITE_ATTEMPTS - 1, WRITE_ATTEMPTS])
async def test_a_write_that_loses_every_try_says_so_and_writes_nothing(
    clock: FakeClock, races: int
) -> None:
    backend = _Raced(clock, races=races)
    async with App(backend=backend, clock=clock) as app:
        if races < WRITE_ATTEMPTS:  # the last try is left: it wins
            doc = await app.config.set_remote(paused=True)
            assert (doc.version, doc.paused, len(doc.flags)) == (races + 1, True, races)
            return
        message = (
            "the remote configuration (backend key 'taskcore:config') changed under this "
            f"write {WRITE_ATTEMPTS} times in a row (other writers got there first each "
            "time); nothing was written by this call: read the configuration and try again"
        )
        with pytest.raises(BackendError, match=f"^{re.escape(message)}$"):
            await app.config.set_remote(paused=True)
        stored = await app.config.get_remote()
        assert stored is not None and stored == backend.rival_writes[-1]
        assert (stored.version, stored.paused) == (WRITE_ATTEMPTS, False)


async def test_a_bad_stored_document_is_logged_once_and_the_last_good_one_kept(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    await app.config.set_remote(flags={"x": True})
    reader = App(backend=app.backend, clock=app.clock)
    assert (await reader.config.refresh()) is not None
    assert reader.flags.enabled("x")
    bad = [
        b"not json",
        msgspec.json.encode({"schema": 2, "version": 9}),  # a newer taskcore's
        msgspec.json.encode({"schema": 1, "version": 9, "concurrency": -3}),
        msgspec.json.encode({"schema": 1, "version": 9, "surprise": 1}),
    ]
    for raw in bad:
        await app.backend.kv_set(REMOTE_KEY, raw)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "taskcore.config"):
            doc = await reader.config.refresh()
            await reader.config.refresh()  # the same bad document: not logged again
        assert doc is not None and doc.version == 1
        assert reader.flags.enabled("x")
        assert [r.getMessage()[:40] for r in caplog.records] == [
            "ignoring the remote configuration: the r"
        ]
        assert "keeping version 1" in caplog.records[0].getMessage()
    # a writer refuses to overwrite what it cannot read, unless told to
    await app.backend.kv_set(REMOTE_KEY, bad[1])
    with pytest.raises(ConfigurationError, match=r"schema 2, this taskcore reads schema 1"):
        await app.config.set_remote(paused=True)
    doc = await app.config.set_remote(paused=True, replace=True)
    assert doc.version == 10 and doc.flags == {}  # counting on from the stored version 9
    # the document gone: the processes' own values again
    await app.backend.kv_set(REMOTE_KEY, msgspec.json.encode(doc), ttl=1)
    app.clock.advance(2)  # type: ignore[attr-defined]
    assert await reader.config.refresh() is None
    assert not reader.flags.enabled("x")


async def test_a_worker_applies_concurrency_within_its_bounds_and_pauses(
    app: App, clock: FakeClock
) -> None:
    done: list[int] = []

    @app.task
    async def job(i: int) -> None:
        done.append(i)

    admin = App(backend=app.backend, clock=clock)
    async with app.worker(concurrency=4, min_concurrency=2, max_concurrency=6) as w:
        await admin.config.set_remote(concurrency=50)
        assert w.target == 4  # not before the next maintenance
        await w.maintain()
        assert w.target == 6  # clamped to the autoscaling bounds
        await admin.config.set_remote(concurrency=1)
        await w.maintain()
        assert w.target == 2
        await admin.config.set_remote(concurrency=None)
        await w.maintain()
        assert w.target == 4  # the worker's own again
        await admin.config.set_remote(paused=True)
        await w.maintain()
        assert w.paused
        handle = await job.enqueue(1)
        for _ in range(20):
            await anyio_checkpoint()
        assert (await app.backend.get(handle.id)).state == State.QUEUED  # type: ignore[union-attr]
        await admin.config.set_remote(paused=False)
        await w.maintain()
        await settled(app, handle.id, State.SUCCEEDED)
    assert done == [1]


class _HeldClaims(MemoryBackend):
    """A memory backend whose claims that find work are held until ``go`` is set."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.holding = anyio.Event()
        self.go = anyio.Event()

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        leases = await super().claim(*args, **kwargs)
        if leases and not self.go.is_set():
            self.holding.set()
            await self.go.wait()
        return leases


async def test_tasks_claimed_while_the_pause_arrives_are_handed_back(clock: FakeClock) -> None:
    backend = _HeldClaims(clock)
    ran: list[int] = []
    async with App(backend=backend, clock=clock) as app:

        @app.task
        async def job(i: int) -> None:
            ran.append(i)

        admin = App(backend=backend, clock=clock)
        async with app.worker(concurrency=4, poll_interval=0.01) as w:
            handle = await job.enqueue(1)
            await backend.holding.wait()  # the claim holds the task, not returned yet
            await admin.config.set_remote(paused=True)
            await w.maintain()
            backend.go.set()
            await settled(app, handle.id, State.QUEUED)  # handed back
            record = await app.backend.get(handle.id)
            assert record is not None and record.attempt == 0  # no attempt spent
            assert ran == []
            await admin.config.set_remote(paused=False)
            await w.maintain()
            await settled(app, handle.id, State.SUCCEEDED)
        assert ran == [1]


async def anyio_checkpoint() -> None:
    import anyio.lowlevel

    await anyio.lowlevel.checkpoint()


def test_remote_document_defaults() -> None:
    assert RemoteDocument() == msgspec.json.decode(b'{"schema": 1}', type=RemoteDocument)


# -- the config command ---------------------------------------------------------------
def test_config_command_set_get_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.core import cli_app

    monkeypatch.setattr(cli_app, "app", App("memory://"))  # a fresh store for this test
    spec = "tests.core.cli_app:app"
    assert cli_main(["config", "get", spec]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 0
    argv = ["config", "set", spec, "--concurrency", "6", "--pause", "--flag", "a=on"]
    assert cli_main([*argv, "--flag", "b=25%", "--flag", "c=off"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["concurrency"], out["paused"]) == (1, 6, True)
    assert out["flags"] == {
        "a": {"enabled": True, "percent": 100.0},
        "b": {"enabled": True, "percent": 25.0},
        "c": {"enabled": False, "percent": 100.0},
    }
    assert cli_main(["config", "set", spec, "--concurrency", "none", "--flag", "a=none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["concurrency"], sorted(out["flags"])) == (2, None, ["b", "c"])
    assert cli_main(["config", "get", spec]) == 0
    assert json.loads(capsys.readouterr().out) == out
    assert cli_main(["config", "set", spec, "--concurrency", "0"]) == 2
    assert "setting concurrency = 0" in capsys.readouterr().err
    assert cli_main(["config", "set", spec]) == 2
    assert "nothing to set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["config", "set", spec, "--flag", "a=maybe"])
    capsys.readouterr()
    path = write(tmp_path, "taskcore.toml", TOML)
    monkeypatch.setenv("TASKCORE_WORKER__THREADS", "3")
    assert cli_main(["config", "show", spec, "--config", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["settings"]["worker"]["concurrency"] == 8
    assert shown["settings"]["worker"]["threads"] == 3
    assert shown["sources"]["worker.threads"] == "environment variable TASKCORE_WORKER__THREADS"
    assert shown["sources"]["worker.concurrency"] == f"file {path}"
    assert cli_main(["config", "show", spec, "--config", str(tmp_path / "x.toml")]) == 2


def test_worker_command_options_layer_file_environment_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskcore.cli import _worker_options

    path = write(tmp_path, "w.toml", "[worker]\nconcurrency = 7\nthreads = 5\nmax_tasks = 9\n")
    monkeypatch.setenv("TASKCORE_WORKER__THREADS", "4")
    seen: dict[str, Any] = {}

    async def run_worker(app: App, args: Any) -> None:  # what the worker would be given
        seen.update(_worker_options(app, args))

    monkeypatch.setattr("taskcore.cli._run_worker", run_worker)
    spec = "tests.core.cli_app:app"
    assert cli_main(["worker", spec, "--config", str(path), "--concurrency", "3"]) == 0
    # flag over environment over file over defaults
    assert (seen["concurrency"], seen["threads"], seen["max_tasks"]) == (3, 4, 9)
    assert seen["lease_seconds"] == 30.0
    monkeypatch.delenv("TASKCORE_WORKER__THREADS")
    assert cli_main(["worker", spec]) == 0  # no configuration: the defaults, as before
    assert (seen["concurrency"], seen["threads"], seen["max_tasks"]) == (100, 16, None)
    bad = write(tmp_path, "bad.toml", "[worker]\nthreads = 0\n")
    monkeypatch.setattr("taskcore.cli._run_worker", run_worker)
    assert cli_main(["worker", spec, "--config", str(bad)]) == 2
    # the supervisor checks the settings once, before it starts any process
    assert cli_main(["worker", spec, "--config", str(bad), "--workers", "2"]) == 2
