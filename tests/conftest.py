from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI runs the same examples every time (a failure there is reproducible); developers'
# runs stay random and keep finding new ones.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
