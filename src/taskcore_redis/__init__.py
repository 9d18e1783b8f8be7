"""taskcore's Redis backend (``redis://`` and ``rediss://`` URLs).

Install with ``pip install "taskcore[redis]"``. The driver is redis-py's asyncio
client, so this backend runs under asyncio only. See docs/redis.md for the key
layout and the operational notes.
"""

from __future__ import annotations

from .backend import RedisBackend

__all__ = ["RedisBackend"]
