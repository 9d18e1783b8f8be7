"""What an idle worker loads: optional dependencies only when they are used.

Each check runs in a fresh interpreter, since this one has imported everything.
"""

from __future__ import annotations

import pytest

from tests.core.scripts import run

# Loaded on first use only: telemetry (OpenTelemetry), the printing commands (rich),
# autoscaling and max_rss (psutil), periodic tasks (croniter, dateutil, zoneinfo) and
# unique tasks (hashlib, whose import loads OpenSSL's digests).
LAZY = ("opentelemetry", "rich", "psutil", "croniter", "dateutil", "hashlib", "zoneinfo")
# ... and never by a worker: the monitor, the web dashboard and what they use.
LAZY += ("taskcore.monitor", "taskcore.web", "starlette", "uvicorn", "httpx", "prometheus_client")
# ... and the settings files' parsers, unless a configuration is given
LAZY += ("tomllib", "yaml", "taskcore.config.sources", "taskcore.config.cli")
# ... nor ingestion, the export formats and the XML parser they use (csv is
# imported anyway: importlib.metadata reads entry points with it).
LAZY += ("taskcore.ingest", "taskcore.formats", "xml.parsers.expat", "xml.sax")
# ... nor workflows (until a step's follow-ups are released, or a name of
# taskcore.workflow is used), the supervisor (--workers only) and the blocking facade.
LAZY += ("taskcore.workflow", "taskcore.supervisor", "taskcore.blocking")


def test_a_started_worker_has_not_imported_the_optional_dependencies() -> None:
    out = run(
        f"""
        import sys
        import anyio
        from taskcore.cli import load_app

        app = load_app("tests.core.cli_app:app")

        async def main():
            async with app, app.worker() as worker:
                await worker.maintain()

        anyio.run(main)
        print(sorted(m for m in {LAZY!r} if m in sys.modules))
        """
    )
    assert out == "[]"


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "psycopg_pool"),
        ("redis://127.0.0.1:6379/0", "redis.asyncio"),
    ],
)
def test_a_backend_worker_imports_no_optional_dependency(url: str, driver: str) -> None:
    # the driver's own imports do not count (redis-py imports hashlib and OpenTelemetry's
    # metrics API, psycopg zoneinfo)
    out = run(
        f"""
        import sys
        import {driver}

        before = set(sys.modules)
        import taskcore.cli
        from taskcore import App

        App({url!r}).worker()  # builds the backend, connects nothing
        new = set(sys.modules) - before
        print(sorted(m for m in [*{LAZY!r}, "opentelemetry.trace"] if m in new))
        """
    )
    assert out == "[]"


def test_telemetry_follows_a_provider_installed_after_the_app_was_made() -> None:
    out = run(
        """
        import sys
        import anyio
        from taskcore import App

        app = App("memory://")

        @app.task
        async def noop() -> None:
            pass

        assert "opentelemetry" not in sys.modules
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

        def names():
            data = reader.get_metrics_data()
            return sorted(
                m.name
                for rm in (data.resource_metrics if data else [])
                for sm in rm.scope_metrics
                for m in sm.metrics
            )

        async def main():
            async with app, app.worker() as worker:
                await worker.maintain()
                print(names())  # the idle worker's gauges
                await (await noop.enqueue()).result(timeout=10)
            print(names())

        anyio.run(main)
        """
    )
    idle, ran = (eval(line) for line in out.splitlines())
    assert "taskcore.worker.busy_slots" in idle
    assert {"taskcore.tasks.enqueued", "taskcore.tasks.succeeded"} <= set(ran)
