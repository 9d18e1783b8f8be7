"""SAQ on PostgreSQL (see :mod:`benchmarks.peers._saq`)."""

from __future__ import annotations

from ._saq import SaqAdapter, run_worker

ADAPTER = SaqAdapter("postgres", __name__)

if __name__ == "__main__":
    run_worker("postgres")
