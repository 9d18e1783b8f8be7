"""Data in and out, end to end on memory (asyncio and trio), Redis and PostgreSQL:
enqueueing over REST, ingestion from CSV, JSON Lines, JSON, XML and streams, and the
export formats."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from taskcore import App, FakeClock, Priority
from taskcore.backend import Outcome, OutcomeKind, TaskRecord
from taskcore.formats import render, task_rows
from taskcore.ingest import ingest, ingest_file
from taskcore.web import create_app
from taskcore.web.auth import fingerprint
from tests.e2e.test_web import EVIL, TOKENS, client, dead_letter

pytestmark = pytest.mark.anyio


def register(app: App) -> Any:
    @app.task(name="data.resize", queue="images")
    async def resize(image_id: int, width: int = 640, sharpen: bool = False) -> str:
        return f"{image_id}:{width}"

    @app.task(name="data.tag")
    async def tag(name: str, labels: list[str] | None = None) -> None:
        pass

    return resize


async def all_tasks(app: App) -> list[TaskRecord]:
    return await app.list_tasks(limit=10_000)


def canonical(values: list[Any]) -> list[Any]:
    return sorted(values, key=lambda a: msgspec.json.encode(a, order="sorted"))


def args_of(app: App, records: list[TaskRecord]) -> list[Any]:
    return canonical([row["args"] for row in task_rows(app, records)])


@pytest.fixture
def calls(app: App, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every backend enqueue call (a spy on the real backend)."""
    sizes: list[int] = []
    real = app.backend.enqueue

    async def enqueue(messages: Any) -> Any:
        sizes.append(len(messages))
        return await real(messages)

    monkeypatch.setattr(app.backend, "enqueue", enqueue)
    return sizes


# -- REST enqueue ----------------------------------------------------------------------


async def test_rest_enqueue_validates_like_enqueue_and_is_audited(app: App) -> None:
    register(app)
    web = create_app(app, tokens=TOKENS)
    now = app.clock.now()
    async with client(web, "op-token") as op, client(web, "view-token") as viewer:
        r = await op.post(
            "/api/tasks",
            json={
                "task": "data.resize",
                "args": [7],
                "kwargs": {"width": 320},
                "options": {"priority": "high", "queue": "urgent", "delay": 30},
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["created"] is True and created["queue"] == "urgent"
        rec = await app.backend.get(created["id"])
        assert rec is not None and rec.queue == "urgent" and rec.priority == Priority.HIGH
        assert rec.eligible_at == pytest.approx(now + 30)
        assert task_rows(app, [rec])[0]["args"] == {"image_id": 7, "width": 320}

        r = await op.post("/api/tasks", json={"task": "data.resize", "args": ["seven"]})
        assert r.status_code == 422
        error = r.json()["error"]
        assert "$.image_id" in error and "expected data.resize(image_id" in error
        r = await op.post(
            "/api/tasks", json={"task": "data.resize", "kwargs": {"image_id": 1, "height": 1}}
        )
        assert r.status_code == 422 and "height" in r.json()["error"]
        r = await op.post("/api/tasks", json={"task": "data.resize", "options": {"priority": 9}})
        assert r.status_code == 422
        r = await op.post("/api/tasks", json={"task": "resize", "args": [1]})
        assert r.status_code == 404
        assert "registered tasks: data.resize, data.tag" in r.json()["error"]
        r = await op.post("/api/tasks", json={"task": "data.resize", "colour": "red"})
        assert r.status_code == 400 and "colour" in r.json()["error"]
        r = await viewer.post("/api/tasks", json={"task": "data.resize", "args": [1]})
        assert r.status_code == 403

        body = {"task": "data.resize", "args": [8], "options": {"unique_key": "img-8"}}
        first = await op.post("/api/tasks", json=body)
        again = await op.post("/api/tasks", json=body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == {**first.json(), "created": False}
        entries = (await viewer.get("/api/audit")).json()
    assert len(await all_tasks(app)) == 2
    op_who = f"operator:{fingerprint('op-token')}"
    view_who = f"viewer:{fingerprint('view-token')}"
    assert [(e["who"], e["action"], e["targets"][:1], e["ok"]) for e in entries] == [
        (op_who, "task.enqueue", ["data.resize"], True),
        (op_who, "task.enqueue", ["data.resize"], False),
        (op_who, "task.enqueue", ["data.resize"], False),
        (op_who, "task.enqueue", ["data.resize"], False),
        (op_who, "task.enqueue", ["resize"], False),
        (view_who, "task.enqueue", [], False),  # refused before the body is read
        (op_who, "task.enqueue", ["data.resize"], True),
        (op_who, "task.enqueue", ["data.resize"], True),
    ]
    assert entries[0]["targets"] == ["data.resize", created["id"]]
    assert "422" in entries[1]["result"] and "404" in entries[4]["result"]
    assert "403" in entries[5]["result"] and entries[5]["ok"] is False
    assert "same unique key" in entries[7]["result"]


async def test_rest_bulk_is_all_or_nothing_in_one_backend_call(app: App, calls: list[int]) -> None:
    register(app)
    web = create_app(app, tokens=TOKENS)
    good = [
        {"task": "data.resize", "args": [1]},
        {"task": "data.tag", "kwargs": {"name": "a", "labels": ["x"]}},
        {"task": "data.resize", "args": [2], "options": {"priority": 0}},
    ]
    bad = [*good, {"task": "data.resize", "args": ["x"]}, {"task": "nope"}]
    async with client(web, "op-token") as op, client(web, "view-token") as viewer:
        r = await op.post("/api/tasks/bulk", json=bad)
        assert r.status_code == 422
        assert [(e["index"], e["status"]) for e in r.json()["errors"]] == [(3, 422), (4, 404)]
        assert "$.image_id" in r.json()["errors"][0]["error"]
        assert await all_tasks(app) == [] and calls == []

        assert (await viewer.post("/api/tasks/bulk", json=good)).status_code == 403
        assert (await op.post("/api/tasks/bulk", json=[])).status_code == 400

        r = await op.post("/api/tasks/bulk", json=good)
        assert r.status_code == 201, r.text
        assert r.json()["enqueued"] == 3 and calls == [3]
        ids = [t["id"] for t in r.json()["tasks"]]
        entries = (await viewer.get("/api/audit")).json()
    records = {rec.id: rec for rec in await all_tasks(app)}
    assert sorted(records) == sorted(ids)
    assert records[ids[2]].priority == 0 and records[ids[1]].task == "data.tag"
    assert [(e["action"], e["ok"]) for e in entries] == [
        ("task.enqueue_bulk", False),
        ("task.enqueue_bulk", False),
        ("task.enqueue_bulk", True),
    ]
    assert "2 of 5 calls are invalid" in entries[0]["result"]
    assert entries[2]["targets"] == ["data.resize", "data.tag"]


async def test_openapi_describes_the_enqueue_endpoints_and_formats(app: App) -> None:
    async with client(create_app(app)) as http:
        doc = (await http.get("/api/openapi.json")).json()
    post = doc["paths"]["/api/tasks"]["post"]
    assert post["x-taskcore-role"] == "operator" and "422" in post["responses"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["task"]
    assert doc["paths"]["/api/tasks/bulk"]["post"]["requestBody"]
    listing = doc["paths"]["/api/tasks"]["get"]
    assert "text/csv; charset=utf-8" in listing["responses"]["200"]["content"]
    assert "format" in [p["name"] for p in listing["parameters"]]


# -- ingestion ---------------------------------------------------------------------------


async def stored(app: App) -> tuple[list[Any], list[str]]:
    records = await all_tasks(app)
    return args_of(app, records), [r.task for r in records]


async def test_csv_records_are_converted_enqueued_in_batches_and_rejects_kept(
    app: App, calls: list[int], tmp_path: Path
) -> None:
    register(app)
    path = tmp_path / "images.csv"
    path.write_text(
        "image_id,width,sharpen\n"
        "1,100,true\n"  # record 1, line 2
        "two,100,false\n"  # 2: not an int
        '3,"3\n00",\n'  # 3: a quoted line break: not an int either (lines 4-5)
        "\n"  # a blank line is no record
        ",200,\n"  # 4, line 7: the required image_id empty
        "5,,\n"  # 5: defaults apply
        "6,1,0,extra\n"  # 6, line 9: one value too many
        "7,700,yes\n",  # 7: "yes" is no bool for msgspec
        encoding="utf-8",
    )
    report = await ingest_file(app, "data.resize", path, batch_size=2)
    assert (report.read, report.enqueued, report.rejected) == (7, 2, 5)
    assert report.source == str(path) and not report.ok
    assert calls == [1, 1] and report.batches == 2  # batches (1,2) (3,4) (5,6) (7): two held one
    assert dict(report.reasons) == {
        "argument image_id: Expected int, got str": 1,
        "argument width: Expected int, got str": 1,
        "missing argument image_id": 1,
        "too many values": 1,
        "argument sharpen: Expected bool, got str": 1,
    }
    args, _ = await stored(app)
    assert args == canonical([{"image_id": 1, "width": 100, "sharpen": True}, {"image_id": 5}])

    kept = await app.rejects(report.run)
    assert [(r.number, r.line, r.kind) for r in kept] == [
        (2, 3, "argument image_id: Expected int, got str"),
        (3, 4, "argument width: Expected int, got str"),
        (4, 7, "missing argument image_id"),
        (6, 9, "too many values"),
        (7, 10, "argument sharpen: Expected bool, got str"),
    ]
    assert kept[0].reason.startswith("record 2 (line 3): argument image_id='two'")
    assert "expected data.resize(image_id" in kept[0].reason
    assert msgspec.json.decode(kept[0].record) == {
        "image_id": "two",
        "width": "100",
        "sharpen": "false",
    }
    assert kept == list(report.rejects)
    assert await app.rejects() == kept  # the only ingestion so far


async def test_jsonl_and_json_are_taken_as_enqueue_takes_them(
    app: App, calls: list[int], tmp_path: Path
) -> None:
    register(app)
    lines = tmp_path / "tags.jsonl"
    lines.write_bytes(
        b'{"name": "a", "labels": ["x", "y"]}\n'
        b"{not json\n"
        b"\n"
        b"[1, 2]\n"
        b'{"name": 5}\n'  # JSON is not converted: 5 is no str
        b'{"name": "b", "colour": "red"}\n'
        b'{"name": "c"}\n'
    )
    report = await ingest_file(app, "data.tag", lines)
    assert (report.read, report.enqueued, report.rejected, calls) == (6, 2, 4, [2])
    assert [(r.number, r.line, r.kind) for r in await app.rejects(report.run)] == [
        (2, 2, "not JSON"),
        (3, 4, "not an object"),
        (4, 5, "argument name: Expected str, got int"),
        (5, 6, "unknown argument colour"),
    ]

    array = tmp_path / "more.json"
    array.write_bytes(b'[{"name": "d"},\n {"name": null}, {"name": "e", "labels": []}, 7]')
    second = await ingest_file(app, "data.tag", array, batch_size=1)
    assert (second.read, second.enqueued, second.rejected, second.batches) == (4, 2, 2, 2)
    assert [(r.number, r.line, r.kind) for r in await app.rejects(second.run)] == [
        (2, 2, "argument name: Expected str, got null"),
        (4, 2, "not an object"),
    ]

    broken = tmp_path / "broken.json"
    broken.write_bytes(b'[{"name": "f"},\n {"name": ')  # cut short: what came before stands
    third = await ingest_file(app, "data.tag", broken)
    assert (third.read, third.enqueued, third.rejected) == (1, 1, 1)
    assert third.stopped is not None and "not JSON at line 2" in third.stopped
    [rej] = await app.rejects(third.run)
    assert (rej.number, rej.line, rej.kind) == (2, 2, "not JSON")
    assert "it ends inside record 2" in rej.reason and "cut short" in rej.reason
    args, _ = await stored(app)
    assert args == canonical(
        [
            {"name": "a", "labels": ["x", "y"]},
            {"name": "c"},
            {"name": "d"},
            {"name": "e", "labels": []},
            {"name": "f"},
        ]
    )
    assert len(await app.rejects()) == 7


async def test_xml_records_map_attributes_and_children(app: App, tmp_path: Path) -> None:
    register(app)
    path = tmp_path / "images.xml"
    path.write_text(
        '<?xml version="1.0"?>\n'
        "<images>\n"
        '  <image image_id="1"><width>200</width><sharpen>true</sharpen></image>\n'
        "  <comment>not a record</comment>\n"
        "  <image>\n"
        "    <image_id>two</image_id>\n"
        "  </image>\n"
        '  <image image_id="3" />\n'
        "</images>\n",
        encoding="utf-8",
    )
    report = await ingest_file(app, "data.resize", path, record_tag="image")
    assert (report.read, report.enqueued, report.rejected) == (3, 2, 1)
    [rej] = await app.rejects(report.run)
    assert (rej.number, rej.line, rej.kind) == (2, 5, "argument image_id: Expected int, got str")

    tags = tmp_path / "tags.xml"
    tags.write_bytes(
        b"<tags><t><name>a &amp; b</name><labels>x</labels><labels>y</labels></t>"
        b"<t><name>c</name></t><t><name>d</oops></t><t><name>never</name></t></tags>"
    )
    second = await ingest_file(app, "data.tag", tags)
    assert (second.read, second.enqueued, second.rejected) == (2, 2, 1)
    assert second.stopped is not None and "mismatched tag" in second.stopped
    args, _ = await stored(app)
    assert args == canonical(
        [
            {"image_id": 1, "width": 200, "sharpen": True},
            {"image_id": 3},
            {"name": "a & b", "labels": ["x", "y"]},
            {"name": "c"},
        ]
    )


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<tags><t><name>&lol9;</name></t></tags>
"""


@pytest.mark.parametrize("attack", ["billion laughs", "external entity", "external dtd"])
async def test_malicious_xml_is_refused_without_expanding_or_reading_anything(
    app: App, tmp_path: Path, attack: str
) -> None:
    register(app)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    document = {
        "billion laughs": BILLION_LAUGHS,
        "external entity": (
            f'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY s SYSTEM "{secret.as_uri()}">]>'
            "<tags><t><name>&s;</name></t></tags>"
        ).encode(),
        "external dtd": (
            f'<?xml version="1.0"?><!DOCTYPE tags SYSTEM "{secret.as_uri()}">'
            "<tags><t><name>&s;</name></t></tags>"
        ).encode(),
    }[attack]
    report = await ingest_file(app, "data.tag", io.BytesIO(document), format="xml")
    assert (report.read, report.enqueued, report.rejected) == (0, 0, 1)
    assert await all_tasks(app) == []
    [rej] = await app.rejects(report.run)
    assert rej.kind == "unsafe XML"
    if attack == "external dtd":
        assert "external resource" in rej.reason and secret.as_uri() in rej.reason
    else:
        assert "declares the entity" in rej.reason
    assert "TOP-SECRET" not in rej.reason + rej.record and "lollol" not in rej.reason


async def test_streams_with_a_classify_hook(app: App, calls: list[int]) -> None:
    register(app)

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i in range(5):
            yield {"image_id": i, "width": 100 * i}
        yield {"image_id": "5"}  # a stream is not converted unless lax

    def classify(record: Any) -> dict[str, Any]:
        if record["image_id"] == 3:
            raise ValueError("no routing rule for 3")
        return {"priority": "high" if record["image_id"] % 2 else "low", "queue": "thumbs"}

    report = await ingest(app, "data.resize", source(), batch_size=4, classify=classify)
    assert (report.read, report.enqueued, report.rejected, calls) == (6, 4, 2, [3, 1])
    assert dict(report.reasons) == {
        "classify failed": 1,
        "argument image_id: Expected int, got str": 1,
    }
    records = await all_tasks(app)
    by_arg = {
        row["args"]["image_id"]: rec
        for row, rec in zip(task_rows(app, records), records, strict=True)
    }
    assert sorted(by_arg) == [0, 1, 2, 4]
    assert {rec.queue for rec in records} == {"thumbs"}
    assert [by_arg[i].priority for i in (0, 1, 2, 4)] == [3, 1, 3, 3]

    lax = await ingest(app, "data.resize", [{"image_id": "5", "sharpen": "1"}], lax=True)
    assert lax.enqueued == 1


async def test_rejects_on_the_api_and_the_dashboard(app: App, clock: FakeClock) -> None:
    register(app)
    first = await ingest(app, "data.resize", [{"image_id": EVIL}, {"image_id": 1}])
    clock.advance(10)
    second = await ingest(app, "data.resize", [{"width": 5}, {"image_id": 2, "x": 1}])
    assert (first.rejected, second.rejected) == (1, 2)
    web = create_app(app, tokens=TOKENS)
    async with client(web, "view-token") as http:
        every = (await http.get("/api/rejects")).json()
        of_first = (await http.get("/api/rejects", params={"run": first.run})).json()
        later = (await http.get("/api/rejects", params={"since": clock.now()})).json()
        last = (await http.get("/api/rejects", params={"limit": 1})).json()
        bad = await http.get("/api/rejects", params={"since": "yesterday"})
        page = (await http.get("/")).text
    async with client(web) as anonymous:
        assert (await anonymous.get("/api/rejects")).status_code == 401
    assert [(r["run"], r["number"], r["kind"]) for r in every] == [
        (first.run, 1, "argument image_id: Expected int, got str"),
        (second.run, 1, "missing argument image_id"),
        (second.run, 2, "unknown argument x"),
    ]
    assert msgspec.json.decode(every[0]["record"]) == {"image_id": EVIL}
    assert every[0]["task"] == "data.resize" and every[0]["source"] == "stream"
    assert of_first == every[:1] and later == every[1:] and last == every[2:]
    assert bad.status_code == 400 and "since='yesterday'" in bad.json()["error"]
    panel = page.split('<section id="panel-rejects">')[1].split("</section>")[0]
    assert "Ingestion rejects" in panel and "unknown argument x" in panel
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in panel
    # newest first, as the other panels
    assert panel.index("unknown argument x") < panel.index("missing argument image_id")


# -- export ------------------------------------------------------------------------------

NASTY = 'a,b "quoted"\nline two <x> & \x01 \r end'


async def finished(app: App, task: Any, result: Any) -> str:
    handle = await task.enqueue(1)
    leases = await app.backend.claim([task.options.queue], 100, 30.0, "w")
    now = app.clock.now()
    outcomes = [
        Outcome(
            lease.message.id,
            lease.token,
            OutcomeKind.SUCCEEDED if lease.message.id == handle.id else OutcomeKind.RELEASED,
            now,
            result=app.codec.encode(result) if lease.message.id == handle.id else None,
        )
        for lease in leases
    ]
    assert all(await app.backend.settle(outcomes))
    return str(handle.id)


async def test_exports_round_trip_through_their_parsers(app: App) -> None:
    @app.task(name="data.echo")
    async def echo(text: str | int, n: int = 0) -> Any:
        return text

    queued = await echo.enqueue(NASTY, n=-1)
    done = await finished(app, echo, {"summary": NASTY, "1 bad key": [1, None, True]})
    dead = await dead_letter(app, echo, "it <broke>, badly")
    web = create_app(app)
    async with client(web) as http:
        plain = (await http.get("/api/tasks")).json()
        responses = {
            fmt: await http.get("/api/tasks", params={"format": fmt})
            for fmt in ("json", "csv", "xml", "msgpack")
        }
        dead_csv = await http.get("/api/dead-letters", params={"format": "csv"})
        bad = await http.get("/api/tasks", params={"format": "yaml"})
    assert bad.status_code == 400 and "csv" in bad.json()["error"]
    assert {f: r.headers["content-type"] for f, r in responses.items()} == {
        "json": "application/json",
        "csv": "text/csv; charset=utf-8",
        "xml": "application/xml; charset=utf-8",
        "msgpack": "application/vnd.msgpack",
    }
    rows = responses["json"].json()
    assert [r["id"] for r in rows] == [t["id"] for t in plain]
    by_id = {r["id"]: r for r in rows}
    assert by_id[queued.id]["args"] == {"text": NASTY, "n": -1}
    assert by_id[done]["result"] == {"summary": NASTY, "1 bad key": [1, None, True]}
    assert by_id[dead]["last_error"] == "ValueError: it <broke>, badly"
    assert msgspec.msgpack.decode(responses["msgpack"].content) == rows

    parsed = list(csv.DictReader(io.StringIO(responses["csv"].text, newline="")))
    assert [p["id"] for p in parsed] == [r["id"] for r in rows]
    for p, r in zip(parsed, rows, strict=True):
        assert p["state"] == r["state"] and float(p["enqueued_at"]) == r["enqueued_at"]
        assert p["last_error"] == (r["last_error"] or "")
        assert (msgspec.json.decode(p["result"]) if p["result"] else None) == r["result"]
        assert msgspec.json.decode(p["args"]) == r["args"]
    [dead_row] = csv.DictReader(io.StringIO(dead_csv.text, newline=""))
    assert dead_row["id"] == dead

    root = ET.fromstring(responses["xml"].content)
    assert root.tag == "tasks" and [t.findtext("id") for t in root] == [r["id"] for r in rows]
    xml_by_id = {t.findtext("id"): t for t in root}
    args = xml_by_id[queued.id].find("args")
    assert args is not None
    assert args.findtext("text") == NASTY.replace("\x01", "\ufffd")  # XML 1.0 cannot hold it
    assert args.findtext("n") == "-1"
    result = xml_by_id[done].find("result")
    assert result is not None and result.findtext("summary") == NASTY.replace("\x01", "\ufffd")
    [entry] = result.findall("entry")
    assert entry.get("key") == "1 bad key"
    assert [i.text for i in entry] == ["1", None, "true"]
    assert entry[1].get("null") == "true"
    assert xml_by_id[dead].findtext("last_error") == "ValueError: it <broke>, badly"


def test_render_writes_what_csv_and_xml_parsers_read_back() -> None:
    rows = [{"a": NASTY, "b": None, "c": [1, "x"]}, {"a": "=1+1", "b": 2.5, "c": {}}]
    exact = render(rows, "csv", spreadsheet_safe=False)
    back = list(csv.DictReader(io.StringIO(exact.decode(), newline="")))
    assert back == [
        {"a": NASTY, "b": "", "c": '[1,"x"]'},
        {"a": "=1+1", "b": "2.5", "c": "{}"},
    ]
    root = ET.fromstring(render(rows, "xml", root="rows", element="row"))
    assert [r.findtext("a") for r in root] == [NASTY.replace("\x01", "\ufffd"), "=1+1"]
    assert render([], "csv").startswith(b"id,task,queue")


FORMULAS = ["=1+1", "+1+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\t=1", "\r=1"]


def test_csv_neutralises_formulas_unless_exact_values_are_asked_for() -> None:
    rows = [{"text": f, "n": -1, "x": -2.5} for f in FORMULAS]
    rows.append({"text": "a=b, -c", "n": 0, "x": None, "=header": "@x"})
    back = list(csv.reader(io.StringIO(render(rows, "csv").decode(), newline="")))
    assert back[0] == ["text", "n", "x", "'=header"]
    assert [r[0] for r in back[1:]] == [*("'" + f for f in FORMULAS), "a=b, -c"]
    assert [r[1:3] for r in back[1:-1]] == [["-1", "-2.5"]] * len(FORMULAS)  # numbers
    assert back[-1][3] == "'@x"
    exact = render(rows, "csv", spreadsheet_safe=False)
    back = list(csv.reader(io.StringIO(exact.decode(), newline="")))
    assert back[0][3] == "=header" and [r[0] for r in back[1:-1]] == FORMULAS
    # the other formats are not spreadsheets: their values stay as they are
    assert msgspec.json.decode(render(rows, "json")) == rows


async def test_csv_export_on_the_api_is_spreadsheet_safe_by_default(app: App) -> None:
    @app.task(name="data.formula")
    async def formula(x: int) -> str:
        return str(x)

    done = await finished(app, formula, "@SUM(A1:A9)")
    async with client(create_app(app)) as http:
        safe = await http.get("/api/tasks", params={"format": "csv"})
        exact = await http.get("/api/tasks", params={"format": "csv", "spreadsheet_safe": "false"})
        dead = await http.get("/api/dead-letters", params={"format": "csv"})
        bad = await http.get("/api/tasks", params={"format": "csv", "spreadsheet_safe": "maybe"})
        doc = (await http.get("/api/openapi.json")).json()
    [row] = [r for r in csv.DictReader(io.StringIO(safe.text, newline="")) if r["id"] == done]
    assert row["result"] == "'@SUM(A1:A9)"
    [row] = [r for r in csv.DictReader(io.StringIO(exact.text, newline="")) if r["id"] == done]
    assert row["result"] == "@SUM(A1:A9)"
    assert dead.status_code == 200 and dead.text.startswith("id,task,queue")
    assert bad.status_code == 400 and "spreadsheet_safe='maybe'" in bad.json()["error"]
    names = [p["name"] for p in doc["paths"]["/api/tasks"]["get"]["parameters"]]
    assert "spreadsheet_safe" in names
