"""Side-by-side benchmarks against peer libraries: ``python -m benchmarks.peers --help``.

One adapter module per peer (each imports only its library's public API and
:mod:`benchmarks.peers._kit`); each runs in its own virtualenv built from
``benchmarks/requirements-peers-<venv>.txt``. See docs/benchmarks.md, "Peers".
"""
