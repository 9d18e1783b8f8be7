"""taskcore's benchmark harness: ``python -m benchmarks --help`` (or ``taskcore bench``).

Scenarios (see docs/benchmarks.md): burn-down against a bare ``asyncio.Queue``
baseline, bulk enqueue, enqueue-to-start latency, idle worker RSS, and Redis round
trips per task. Micro benches of hot paths live in ``benchmarks/micro`` (pytest-benchmark).
"""
