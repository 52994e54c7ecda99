"""southgate's structure (issue 15): one set of payload rules, SQL only behind Storage, the Service's life
bound to the application, a connection per thread."""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from southgate import validation
from southgate.app import make_app
from southgate.service import Service
from test_multipart import DSC, EVENT, compose, fails, meta

SOUTHGATE = Path(__file__).resolve().parents[2] / "tools" / "southgate"


def test_no_sql_outside_storage() -> None:
    # Handlers and helpers call Storage methods; only storage.py holds SQL or touches a connection.
    sql = re.compile(r"\.execute(many|script)?\(|\bcursor\(|\bsqlite3\b|\bstorage\.db\b")
    offenders = [
        f"{path.relative_to(SOUTHGATE)}:{n}"
        for path in sorted(SOUTHGATE.rglob("*.py"))
        if path.name != "storage.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if sql.search(line.split("#")[0])
    ]
    assert not offenders, offenders


def _dsc(**change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DSC)
    doc.update(change)
    return doc


@pytest.mark.parametrize(
    "dsc",
    [
        _dsc(dataSources=[]),
        _dsc(configurationId="c" * 256),
        _dsc(dataSources=[{"name": "n" * 256, "dataPoints": []}]),
        _dsc(dataSources=[{"name": "DS", "customData": 1, "dataPoints": []}]),
    ],
    ids=["no sources", "long id", "long name", "customData"],
)
def test_one_dsc_rule_for_the_endpoint_and_the_exchange(dsc: dict[str, Any]) -> None:
    with pytest.raises(validation.Invalid):
        validation.check_dsc(dsc)
    got = fails(
        compose([(meta("dataSourceConfiguration"), "application/json", validation.json.dumps(dsc).encode())])
    )
    assert got.startswith("item 1: dataSourceConfiguration payload: "), got


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"type": "OtherEvent"}, "[0].type: must be MindSphereStandardEvent"),
        ({"version": "2.0"}, "[0].version: must be 1.0"),
        ({"id": None}, "[0]: 'id' missing"),
        ({"correlationId": "c" * 256}, "[0].correlationId: must be shorter than 256"),
    ],
)
def test_exchange_events_meet_the_whole_rule_at_the_envelope(change: dict[str, Any], msg: str) -> None:
    # What was once dropped later with a diagnostic (a second checker with other rules) is now a 400.
    event = {k: v for k, v in dict(EVENT, **change).items() if v is not None}
    body = compose([(meta("businessEvent"), "application/json", validation.json.dumps([event]).encode())])
    got = fails(body)
    assert got.startswith("item 1: businessEvent payload: ") and msg in got, got


@pytest.mark.parametrize(
    "change",
    [{"severity": 7}, {"severity": 1}, {"description": "d" * 256}, {"code": 5}, {"typeId": "x"}],
)
def test_event_management_events_follow_the_same_field_rules(change: dict[str, Any]) -> None:
    event = dict({"timestamp": "2024-05-01T12:00:00.000Z", "severity": 30, "description": "ok"}, **change)
    with pytest.raises(validation.Invalid):
        validation.check_api_event(event)
    assert validation.check_api_event({"timestamp": "2024-05-01T12:00:00Z"})[1] == 20


def test_the_service_lives_as_long_as_the_app(tmp_path: Path) -> None:
    # aiohttp's cleanup context closes the Service when the application shuts down: a runner needs no
    # knowledge of its parts.
    svc = Service(tmp_path / "data")

    async def run() -> None:
        runner = web.AppRunner(make_app(svc))
        await runner.setup()
        assert svc.storage.agents() == []
        await runner.cleanup()

    asyncio.run(run())
    assert svc.storage._conns == []  # noqa: SLF001 - every connection closed


def test_each_thread_has_its_own_connection_and_transaction(tmp_path: Path) -> None:
    # A worker thread's transaction (asyncio.to_thread: an exchange's big insert) never joins one of the
    # event loop's thread, and both commit.
    svc = Service(tmp_path / "data")
    try:
        agent = svc.create_agent("pump")
        entered, release = threading.Event(), threading.Event()

        def worker() -> None:
            with svc.storage.tx():
                svc.storage.add_diagnostic(agent["id"], "c", "INFO", "from a worker", "test", "FINISHED", 1)
                entered.set()
                release.wait(5)

        t = threading.Thread(target=worker)
        t.start()
        assert entered.wait(5)
        assert svc.storage.db is not None and svc.storage.diagnostics([agent["id"]]) == []  # not committed
        release.set()
        t.join(5)
        assert [d["message"] for d in svc.storage.diagnostics([agent["id"]])] == ["from a worker"]
    finally:
        svc.close()
