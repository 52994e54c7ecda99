"""The exchange endpoint (§D): envelope strictness, both layouts, idempotent re-sends, value checks
reported through diagnostics, the 10 MiB limit, and reading time series back (§G)."""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sgclient import DSC, Agent, Client, Item, node_body, strict_body, ts_item
from southgate.testing import RunningSouthgate

MIB = 1024 * 1024
CAP = 10 * MIB
T0 = "2024-05-01T10:00:00.000Z"
T1 = "2024-05-01T10:00:01.000Z"
READINGS = [
    (T0, [("DP-temp", "21.5", "0"), ("DP-count", "3", "00000000"), ("DP-on", "true", "0")]),
    (
        T1,
        [
            ("DP-temp", "-1e3", "0"),
            ("DP-text", 'hé, "quoted"\nline', "0"),
            ("DP-big", "9007199254740993", "0"),
            ("DP-when", "2024-05-01T09:00:00.000Z", "0"),
        ],
    ),
]


def stored(sg: RunningSouthgate, a: Agent) -> list[tuple[str, str, str, str]]:
    return [(r["timestamp"], r["dataPointId"], r["value"], r["qualityCode"]) for r in sg.timeseries(a.id)]


def expected(rows: list[tuple[str, list[tuple[str, str, str]]]]) -> list[tuple[str, str, str, str]]:
    return sorted((ts, d, v, q) for ts, vals in rows for d, v, q in vals)


def test_strict_and_node_layouts_store_identically(sg: RunningSouthgate) -> None:
    a = Agent(sg).ready()
    b = Agent(sg).ready()
    ct, body = strict_body([ts_item("CF-test", READINGS)])
    assert ct.endswith(";charset=utf-8") and b"\r\n" in body
    r = a.exchange(ct, body)
    assert r.status == 200 and r.body == b""
    ct, body = node_body([ts_item("CF-test", READINGS)])
    assert b"\r\n--mindspherepart--\n" in body
    assert b.exchange(ct, body).status == 200
    assert stored(sg, a) == stored(sg, b) == expected(READINGS)


def test_captured_node_bodies_accepted(sg: RunningSouthgate) -> None:
    captures = Path(__file__).parent / "captures"
    bodies = sorted(captures.glob("node-*postdata.body"))
    if not bodies:
        pytest.skip("no Node captures present")
    a = Agent(sg).onboard().login()
    for body_path in bodies:
        raw = body_path.read_bytes()
        config_id = json.loads(raw.split(b"\n\n", 3)[2].split(b"\n--mindspherepart")[0])["payload"][
            "details"
        ]["configurationId"]
        points = {
            v["dataPointId"]
            for e in json.loads(
                raw.split(b"Content-Type:application/json\n\n")[1].split(b"\n\n\r\n--mindspherepart--")[0]
            )
            for v in e["values"]
        }
        dsc = {
            "configurationId": config_id,
            "dataSources": [
                {
                    "name": "DS",
                    "dataPoints": [
                        {"id": p, "name": "p" + p[-6:], "type": "STRING", "unit": ""} for p in sorted(points)
                    ],
                }
            ],
        }
        row = sg.dsc(a.id)
        assert a.put_dsc(dsc, if_match=row["eTag"] if row else "0").status == 200
        sg.settings(require_mapping=False)
        try:
            ctype = (captures / body_path.name.replace(".body", ".ctype")).read_text().strip()
            assert a.exchange(ctype, raw).status == 200
        finally:
            sg.settings(require_mapping=True)
    assert sg.timeseries(a.id)


def test_resend_overwrites_itself(sg: RunningSouthgate, agent: Agent) -> None:
    ct, body = strict_body([ts_item("CF-test", READINGS)])
    for _ in range(3):
        assert agent.exchange(ct, body).status == 200
    assert stored(sg, agent) == expected(READINGS)
    newer = [(T0, [("DP-temp", "22.0", "0")])]
    ct, body = strict_body([ts_item("CF-test", newer)])
    assert agent.exchange(ct, body).status == 200
    values = {(ts, d): v for ts, d, v, _ in stored(sg, agent)}
    assert values[(T0, "DP-temp")] == "22.0" and len(values) == len(expected(READINGS))


def test_chunked_body_accepted(sg: RunningSouthgate, agent: Agent) -> None:
    ct, body = strict_body([ts_item("CF-test", READINGS)])
    r = agent.exchange(ct, body, chunked=True)
    assert r.status == 200
    assert stored(sg, agent) == expected(READINGS)


def test_several_item_kinds_in_one_request(sg: RunningSouthgate, agent: Agent) -> None:
    event = {
        "id": str(uuid.uuid4()),
        "timestamp": T0,
        "severity": 2,
        "description": "door open",
        "type": "MindSphereStandardEvent",
        "version": "1.0",
        "details": {},
    }
    event2 = dict(event, id=str(uuid.uuid4()), severity=30)
    binary = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n"
    items = [
        ts_item("CF-test", [(T0, [("DP-temp", "1.5", "0")])]),
        Item("businessEvent", "1.0", json.dumps([event]).encode()),
        Item("businessEvent", "2.0", json.dumps([event2]).encode()),
        Item(
            "file",
            "1.0",
            binary,
            "application/octet-stream",
            {"fileName": "logs/boot.bin", "creationDate": T0, "fileType": "application/octet-stream"},
        ),
        Item("myCustomType", "3.1", b"\x00\x01custom", "application/x-custom", {"k": "v"}),
    ]
    ct, body = strict_body(items)
    assert agent.exchange(ct, body).status == 200
    events = sg.events(agent.id)
    assert {e["id"] for e in events} == {event["id"], event2["id"]}
    files = sg.files(agent.id)
    assert [f["path"] for f in files] == ["logs/boot.bin"]
    assert sg.file_content(agent.id, "logs/boot.bin") == binary
    items_stored = sg.admin("GET", f"/admin/agents/{agent.id}/items")
    assert items_stored == [
        {"type": "myCustomType", "version": "3.1", "contentType": "application/x-custom", "size": 8}
    ]
    ct, body = node_body(items[3:4])
    assert agent.exchange(ct, body).status == 200
    assert sg.file_content(agent.id, "logs/boot.bin") == binary


def test_dsc_item_in_exchange(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    dsc = dict(DSC, configurationId="CF-exchange")
    ct, body = strict_body([Item("dataSourceConfiguration", "1.0", json.dumps(dsc).encode())])
    assert a.exchange(ct, body).status == 200
    stored_dsc = sg.dsc(a.id)
    assert stored_dsc["configurationId"] == "CF-exchange" and stored_dsc["eTag"] == "1"


MALFORMED = {
    "not multipart": ("application/json", b"{}", "multipart"),
    "no boundary": ("multipart/mixed", b"--x\r\n", "boundary"),
    "empty body": ("multipart/mixed; boundary=abc", b"", None),
    "truncated": (
        "multipart/mixed; boundary=abc",
        b"--abc\r\nContent-Type: multipart/related;boundary=def\r\n\r\n"
        b"--def\r\nContent-Type: application/vnd.siemens.mindsphere.meta+json\r\n\r\n{}",
        None,
    ),
    "garbage": ("multipart/mixed; boundary=abc", b"hello world", None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_envelope_400_names_problem(sg: RunningSouthgate, agent: Agent, case: str) -> None:
    ctype, body, word = MALFORMED[case]
    r = agent.exchange(ctype, body)
    assert r.status == 400, r
    msg = r.json()["message"]
    assert set(r.json()) == {"id", "message"} and msg
    if word:
        assert word in msg.lower(), msg


def _bad_item_bodies() -> dict[str, tuple[str, bytes]]:
    ts = ts_item("CF-test", [(T0, [("DP-temp", "1", "0")])])
    cases: dict[str, Any] = {}
    ct, body = strict_body([ts])
    cases["meta not JSON"] = (ct, body.replace(b'{"type":"item"', b'{"type":item"'))
    cases["meta type not item"] = (ct, body.replace(b'"type":"item"', b'"type":"thing"'))
    cases["payload not JSON"] = (ct, body.replace(b'[{"timestamp"', b'[{timestamp"'))
    cases["values not list"] = strict_body(
        [
            Item(
                "standardTimeSeries",
                "1.0",
                json.dumps([{"timestamp": T0, "values": {"a": 1}}]).encode(),
                details={"configurationId": "CF-test"},
            )
        ]
    )
    cases["value as number"] = strict_body(
        [
            Item(
                "standardTimeSeries",
                "1.0",
                json.dumps(
                    [
                        {
                            "timestamp": T0,
                            "values": [{"dataPointId": "DP-temp", "value": 1, "qualityCode": "0"}],
                        }
                    ]
                ).encode(),
                details={"configurationId": "CF-test"},
            )
        ]
    )
    cases["event severity"] = strict_body(
        [
            Item(
                "businessEvent",
                "1.0",
                json.dumps(
                    [
                        {
                            "id": "x",
                            "timestamp": T0,
                            "severity": 7,
                            "type": "MindSphereStandardEvent",
                            "version": "1.0",
                        }
                    ]
                ).encode(),
            )
        ]
    )

    def item(
        type_: str,
        version: str,
        payload: Any,
        details: dict[str, Any] | None = None,
        ctype: str = "application/json",
    ) -> tuple[str, bytes]:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return strict_body([Item(type_, version, raw, ctype, details or {})])

    one = [{"timestamp": T0, "values": [{"dataPointId": "DP-temp", "value": "1", "qualityCode": "0"}]}]
    dup = [{"timestamp": T0, "values": one[0]["values"] * 2}]
    cases["duplicate dataPointId"] = item("standardTimeSeries", "1.0", dup, {"configurationId": "CF-test"})
    cases["no configurationId"] = item("standardTimeSeries", "1.0", one)
    cases["time series version"] = item("standardTimeSeries", "2.0", one, {"configurationId": "CF-test"})
    cases["quality not string"] = item(
        "standardTimeSeries",
        "1.0",
        [{"timestamp": T0, "values": [{"dataPointId": "DP-temp", "value": "1", "qualityCode": 0}]}],
        {"configurationId": "CF-test"},
    )
    cases["file without name"] = item("file", "1.0", b"abc", {"creationDate": T0}, "application/octet-stream")
    cases["file bad date"] = item(
        "file", "1.0", b"abc", {"fileName": "a", "creationDate": "now"}, "application/octet-stream"
    )
    cases["event version"] = item(
        "businessEvent",
        "3.0",
        [{"id": "x", "timestamp": T0, "severity": 1, "type": "MindSphereStandardEvent", "version": "1.0"}],
    )
    cases["dsc without sources"] = item("dataSourceConfiguration", "1.0", {"configurationId": "x"})
    return cases


@pytest.mark.parametrize("case", sorted(_bad_item_bodies()))
def test_malformed_items_400(sg: RunningSouthgate, agent: Agent, case: str) -> None:
    ct, body = _bad_item_bodies()[case]
    r = agent.exchange(ct, body)
    assert r.status == 400, (case, r)
    assert r.json()["message"]


def test_exchange_needs_valid_token(sg: RunningSouthgate, agent: Agent) -> None:
    ct, body = strict_body([ts_item("CF-test", READINGS)])
    assert agent.exchange(ct, body, token="").status == 401
    assert agent.exchange(ct, body, token="x.y.z").status == 401


def drops(sg: RunningSouthgate, a: Agent) -> list[str]:
    return [d["message"] for d in sg.diagnostics(a.id) if d["state"] == "DROPPED"]


def test_values_checked_against_dsc_and_mappings(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    assert a.put_dsc().status == 200
    entity = uuid.uuid4().hex
    for dp, prop in (
        ("DP-temp", "temperature"),
        ("DP-count", "count"),
        ("DP-on", "on"),
        ("DP-when", "when"),
        ("DP-big", "big"),
    ):
        assert a.map(dp, entity, "env", prop).status == 201
    rows = [
        (
            T0,
            [
                ("DP-temp", "warm", "0"),
                ("DP-count", "1.5", "0"),
                ("DP-count", "99999999999", "0") if False else ("DP-big", "1.0", "0"),
                ("DP-on", "TRUE", "0"),
                ("DP-when", "yesterday", "0"),
                ("DP-nope", "1", "0"),
                ("DP-text", "unmapped", "0"),
            ],
        )
    ]
    ct, body = strict_body([ts_item("CF-test", rows), ts_item("CF-other", [(T1, [("DP-temp", "1", "0")])])])
    r = a.exchange(ct, body)
    assert r.status == 200
    assert sg.timeseries(a.id) == []
    msgs = drops(sg, a)
    for needle in (
        "'warm' is not a number",
        "'1.5' is not an integer",
        "'1.0' is not an integer",
        "'TRUE' is not true or false",
        "'yesterday' is not an ISO 8601",
        "unknown dataPointId 'DP-nope'",
        "'DP-text' is not mapped",
        "unknown configurationId 'CF-other'",
    ):
        assert any(needle in m for m in msgs), (needle, msgs)


def test_unmapped_values_kept_when_mapping_not_required(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    a = Agent(sg).onboard().login()
    assert a.put_dsc().status == 200
    sg.settings(require_mapping=False)
    ct, body = strict_body([ts_item("CF-test", READINGS)])
    assert a.exchange(ct, body).status == 200
    assert stored(sg, a) == expected(READINGS)


def test_no_dsc_drops_everything(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    ct, body = strict_body([ts_item("CF-test", READINGS)])
    assert a.exchange(ct, body).status == 200
    assert any("no data source configuration" in m for m in drops(sg, a))


def test_events_exchange_version_rules(sg: RunningSouthgate, agent: Agent) -> None:
    base = {"timestamp": T0, "type": "MindSphereStandardEvent", "version": "1.0"}
    v2 = dict(base, id=str(uuid.uuid4()), severity=40)
    v1 = dict(base, id=str(uuid.uuid4()), severity=3, correlationId=str(uuid.uuid4()), description="info")
    ct, body = strict_body(
        [
            Item("businessEvent", "2.0", json.dumps([v2]).encode()),
            Item("businessEvent", "1.0", json.dumps([v1]).encode()),
        ]
    )
    assert agent.exchange(ct, body).status == 200
    assert {e["id"] for e in sg.events(agent.id)} == {v1["id"], v2["id"]}
    for version, event in (
        ("1.0", dict(v2, id=str(uuid.uuid4()))),
        ("2.0", dict(v1, id=str(uuid.uuid4()))),
        ("1.0", dict(v1, description="x" * 256)),
    ):
        ct, body = strict_body([Item("businessEvent", version, json.dumps([event]).encode())])
        r = agent.exchange(ct, body)
        assert r.status == 400 and r.json()["message"], (version, event)
    assert len(sg.events(agent.id)) == 2
    # Another agent sending an event with the same id does not replace this agent's (it is dropped, with a
    # diagnostic for the sender).
    other = Agent(sg).ready()
    ct, body = strict_body([Item("businessEvent", "2.0", json.dumps([dict(v2, severity=20)]).encode())])
    assert other.exchange(ct, body).status == 200
    assert [e["severity"] for e in sg.events(agent.id) if e["id"] == v2["id"]] == [40]
    assert sg.events(other.id) == []


# reading back (§G) ----------------------------------------------------------------------------------------
def test_iot_timeseries_and_bulk_read(sg: RunningSouthgate, http: Client) -> None:
    a = Agent(sg).ready(entity=uuid.uuid4().hex, pset="env")
    rows = [
        (f"2024-05-01T10:00:{s:02d}.000Z", [("DP-temp", str(s) + ".5", "0"), ("DP-count", str(s), "0")])
        for s in range(10)
    ]
    ct, body = strict_body([ts_item("CF-test", rows)])
    assert a.exchange(ct, body).status == 200
    admin = sg.admin_token
    base = f"/api/iottimeseries/v3/timeseries/{a.entity}/env"
    # from exclusive, to inclusive (§G)
    r = http.request("GET", base + "?from=2024-05-01T10:00:00Z&to=2024-05-01T10:00:05Z", token=admin)
    assert r.status == 200 and "link" not in r.headers
    recs = r.json()
    assert [x["_time"] for x in recs] == [f"2024-05-01T10:00:{s:02d}.000Z" for s in range(1, 6)]
    assert recs[1]["temperature"] == 2.5 and recs[1]["count"] == 2 and recs[1]["count_qc"] == 0
    # limit: the oldest first, the rest behind the Link header
    r = http.request(
        "GET", base + "?from=2024-05-01T09:00:00Z&to=2024-05-01T11:00:00Z&limit=3&select=count", token=admin
    )
    recs = r.json()
    assert [x["_time"][17:19] for x in recs] == ["00", "01", "02"] and "temperature" not in recs[0]
    link = r.headers["link"]
    assert link.endswith('>; rel="next"') and "from=2024-05-01T10%3A00%3A02.000Z" in link
    r = http.request(
        "GET", base + "?from=2024-05-01T09:00:00Z&to=2024-05-01T11:00:00Z&sort=desc&limit=2", token=admin
    )
    assert [x["_time"][17:19] for x in r.json()] == [
        "09",
        "08",
    ] and "to=2024-05-01T10%3A00%3A07.999Z" in r.headers["link"]
    latest = http.request("GET", base, token=admin).json()
    assert len(latest) == 1 and latest[0]["_time"].startswith("2024-05-01T10:00:09")
    assert http.request("GET", base + "?from=2024-05-01T10:00:00Z", token=admin).status == 400
    assert http.request("GET", base + "?from=x&to=y", token=admin).status == 400
    assert (
        http.request(
            "GET", base + "?from=2024-05-01T09:00:00Z&to=2024-05-01T11:00:00Z&limit=2001", token=admin
        ).status
        == 400
    )
    assert http.request("GET", base + "?sort=up", token=admin).status == 400
    assert http.request("GET", base).status == 401
    assert http.request("GET", f"/api/iottimeseries/v3/timeseries/{'0' * 32}/env", token=admin).status == 404
    # bulk, paging forward over nextRecord; limit caps the total
    url = f"/api/iottsbulk/v3/timeseries/{a.entity}/env?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z"
    page = http.request("GET", url, token=admin).json()
    assert [g["count"] for g in page["records"]] == list(range(10)) and "nextRecord" not in page
    url += "&limit=4"
    page = http.request("GET", url, token=admin).json()
    assert [g["count"] for g in page["records"]] == list(range(4)) and "nextRecord" not in page
    bulk = f"/api/iottsbulk/v3/timeseries/{a.entity}/env"
    assert http.request("GET", bulk, token=admin).status == 400
    too_long = bulk + "?from=2024-01-01T00:00:00Z&to=2024-05-01T00:00:00Z"
    assert http.request("GET", too_long, token=admin).status == 400


# size limit and memory -----------------------------------------------------------------------------------
def file_body(total: int) -> tuple[str, bytes]:
    """A strict exchange body of exactly `total` bytes holding one file item."""
    probe_ct, probe = strict_body(
        [Item("file", "1.0", b"", "application/octet-stream", {"fileName": "big.bin", "creationDate": T0})]
    )
    pad = total - len(probe)
    ct, body = strict_body(
        [
            Item(
                "file",
                "1.0",
                b"\xa5" * pad,
                "application/octet-stream",
                {"fileName": "big.bin", "creationDate": T0},
            )
        ]
    )
    assert len(body) == total
    return ct, body


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def raw_tls(sg: RunningSouthgate) -> ssl.SSLSocket:
    parts = urlsplit(sg.base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return ssl.create_default_context(cafile=sg.ca_pem).wrap_socket(sock, server_hostname=parts.hostname)


def test_10mib_accepted_11mib_413_and_bounded_memory(tmp_path: Path) -> None:
    with RunningSouthgate(tmp_path / "big") as sg:
        a = Agent(sg).ready()
        assert sg.proc is not None
        ct, body = file_body(CAP)
        before = vm_hwm_kib(sg.proc.pid)
        start = time.monotonic()
        r = a.exchange(ct, body)
        elapsed = time.monotonic() - start
        assert r.status == 200, r
        peak = vm_hwm_kib(sg.proc.pid)
        assert sg.file_content(a.id, "big.bin") == b"\xa5" * sg.files(a.id)[0]["size"]
        ct11, body11 = file_body(11 * MIB)
        r = a.exchange(ct11, body11)
        assert r.status == 413 and "10485760" in r.json()["message"]
        r = a.exchange(ct11, body11, chunked=True)
        assert r.status == 413
        # The 413 comes from the header alone: nothing of the body is needed.
        with raw_tls(sg) as s:
            s.sendall(
                (
                    f"POST /api/mindconnect/v3/exchange HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {a.token}\r\n"
                    f"Content-Type: {ct11}\r\nContent-Length: {len(body11)}\r\n\r\n"
                ).encode()
            )
            head = s.recv(200)
            assert head.startswith(b"HTTP/1.1 413")
        growth_mib = (peak - before) / 1024
        print(
            f"\nsouthgate 10 MiB exchange: peak RSS {peak / 1024:.1f} MiB (+{growth_mib:.1f} MiB over "
            f"{before / 1024:.1f} MiB before), {elapsed:.2f} s"
        )
        assert growth_mib < 40, growth_mib
