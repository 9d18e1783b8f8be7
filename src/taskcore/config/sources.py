"""Reading the settings' sources: files (TOML, JSON, YAML) and the environment.

Imported only when there is a file or a ``TASKCORE_`` variable to read, so a worker
that is given no configuration loads none of the parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from taskcore.errors import ConfigurationError

from .settings import (
    APP_SCALARS,
    CONFIG_ENV,
    ENTRY_TYPES,
    ENV_PREFIX,
    WORKER_FIELDS,
    Layer,
    Source,
    unknown,
)

__all__ = ["env_layer", "file_layer"]

YAML_SUFFIXES = (".yaml", ".yml")


def file_layer(path: Path) -> Layer:
    """The settings in a file, by its suffix: ``.toml`` (a ``pyproject.toml``: its
    ``[tool.taskcore]`` table), ``.json``, ``.yaml`` / ``.yml``."""
    source = Source("file", str(path))
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json", *YAML_SUFFIXES):
        raise ConfigurationError(
            f"configuration file {path}: unknown format {suffix or '(no suffix)'!r}; "
            "use a .toml, .json, .yaml or .yml file"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read configuration file {path}: {exc.strerror or exc}; check the path "
            f"(given with --config or {CONFIG_ENV})"
        ) from None
    data: Any
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{source} is not valid TOML: {exc}") from None
        if path.name == "pyproject.toml":
            data = data.get("tool", {}).get("taskcore")
            if data is None:
                raise ConfigurationError(
                    f"{source} has no [tool.taskcore] table; add one with the settings"
                )
    elif suffix == ".json":
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigurationError(f"{source} is not valid JSON: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise ConfigurationError(
                f'{source} is YAML, which needs PyYAML: pip install "taskcore[config]" '
                "(or write the settings as TOML or JSON)"
            ) from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{source} is not valid YAML: {exc}") from None
        if data is None:  # an empty document
            data = {}
    return Layer(data, source)


def env_layer(env: Mapping[str, str]) -> Layer:
    """The settings in ``TASKCORE_...`` variables (see :mod:`taskcore.config.settings`);
    empty values count as unset."""
    data: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV or text == "":
            continue
        source = Source("env", var)
        name = var[len(ENV_PREFIX) :].lower()
        section, nested, field = name.partition("__")
        if nested:
            if section != "worker":
                raise ConfigurationError(
                    f"environment variable {var}: only worker settings are set one by one "
                    f"(TASKCORE_WORKER__<SETTING>); set {', '.join(ENTRY_TYPES)} as a JSON "
                    f"object in TASKCORE_<NAME>; {source.fix()}"
                )
            if field not in WORKER_FIELDS:
                raise unknown(f"worker.{field}", WORKER_FIELDS, source)
            value: Any = text
            if field == "queues":
                value = [q.strip() for q in text.split(",") if q.strip()]
            data.setdefault("worker", {})[field] = value
            sources[f"worker.{field}"] = source
        elif name in ENTRY_TYPES:
            try:
                entries = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise ConfigurationError(
                    f"environment variable {var} is not a JSON object ({exc}); write it as "
                    f'{{"name": {{...}}}}; {source.fix()}'
                ) from None
            if not isinstance(entries, dict):
                raise ConfigurationError(
                    f"environment variable {var} holds {type(entries).__name__}, not a JSON "
                    f"object; {source.fix()}"
                )
            data[name] = entries
            sources.update({f"{name}.{key}": source for key in entries})
            sources[name] = source
        elif name in APP_SCALARS:
            data[name] = text
            sources[name] = source
        # else: another tool's TASKCORE_ variable (TASKCORE_PG_DSN, TASKCORE_WORKER_SLOT)
    return Layer(data, Source("env", "TASKCORE_*"), sources)
