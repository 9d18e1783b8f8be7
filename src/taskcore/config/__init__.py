"""Configuration: settings from defaults, a file, the environment and arguments; remote
configuration stored in the backend and hot-reloaded; feature flags.

- :func:`load` builds :class:`Settings` (see :mod:`taskcore.config.settings` for the
  layers and the ``TASKCORE_`` variables); ``App.from_settings(settings)`` builds an
  app whose workers take the ``worker`` section;
- ``app.config`` (:class:`RemoteConfig`) reads and writes the remote document
  (``concurrency``, ``paused``, ``flags``) that workers pick up at each maintenance;
- ``app.flags`` (:class:`Flags`) answers ``enabled("name", key)`` without I/O.
"""

from __future__ import annotations

from .flags import Flag, Flags
from .remote import REMOTE_KEY, RemoteConfig, RemoteDocument
from .settings import (
    CircuitSettings,
    QueuePolicy,
    Resolved,
    Settings,
    Source,
    WorkerSettings,
    load,
    resolve,
)

__all__ = [
    "REMOTE_KEY",
    "CircuitSettings",
    "Flag",
    "Flags",
    "QueuePolicy",
    "RemoteConfig",
    "RemoteDocument",
    "Resolved",
    "Settings",
    "Source",
    "WorkerSettings",
    "load",
    "resolve",
]
