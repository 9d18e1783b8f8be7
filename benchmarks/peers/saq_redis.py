"""SAQ on Redis (see :mod:`benchmarks.peers._saq`)."""

from __future__ import annotations

from ._saq import SaqAdapter, run_worker

ADAPTER = SaqAdapter("redis", __name__)

if __name__ == "__main__":
    run_worker("redis")
