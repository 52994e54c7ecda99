"""Tests of southgate's streaming exchange parser (docs/protocol.md §D): layouts, negatives, properties."""

from __future__ import annotations

import json
import random
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from southgate.multipart import (
    META_CONTENT_TYPE,
    ExchangeItem,
    ExchangeParser,
    MultipartError,
    TooLarge,
    parse_content_type,
    parse_exchange,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / "data_multipart"
CAPTURES = HERE / "captures"

OUTER = "q7Xk2LmP9sT4vW8yZ1aC"
INNER = "Hn3Rj6Ud0Fe5Gi8Ko2Lq"
CT = f"multipart/mixed; boundary={OUTER}"


def meta(ptype: str, version: str = "1.0", details: dict[str, Any] | None = None, **extra: Any) -> bytes:
    payload: dict[str, Any] = {"type": ptype, "version": version}
    if details is not None:
        payload["details"] = details
    doc = {"type": "item", "version": "1.0", "payload": payload, **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


TS_META = meta("standardTimeSeries", details={"configurationId": "CF-1"})
READINGS = [
    {
        "timestamp": "2024-05-01T12:00:00.000Z",
        "values": [
            {"dataPointId": "DP-temp", "value": "21.5", "qualityCode": "0"},
            {"dataPointId": "DP-hum", "value": "40", "qualityCode": "0"},
        ],
    },
    {
        "timestamp": "2024-05-01T12:01:00.000Z",
        "values": [{"dataPointId": "DP-temp", "value": "21.625", "qualityCode": "00000000"}],
    },
]
EVENT = {
    "id": "8d3b1a4e-6f0c-4b8a-9f2d-1c5e7a9b3d21",
    "timestamp": "2024-05-01T12:00:05.000Z",
    "severity": 1,
    "description": "door open",
    "type": "MindSphereStandardEvent",
    "version": "1.0",
    "details": {},
}
DSC = {
    "configurationId": "CF-1",
    "dataSources": [
        {
            "name": "DS-1",
            "dataPoints": [
                {"id": "DP-temp", "name": "temperature", "type": "DOUBLE", "unit": "C"},
                {"id": "DP-hum", "name": "humidity", "type": "INT", "unit": ""},
            ],
        }
    ],
}
FILE_META = meta("file", details={"fileName": "log.bin", "creationDate": "2024-05-01T12:00:00.000Z"})

Part = tuple[bytes, str, bytes]  # meta JSON, payload Content-Type, payload


def jdump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def ts(readings: Any = READINGS, meta_json: bytes = TS_META) -> Part:
    return meta_json, "application/json", jdump(readings)


def compose(
    parts: list[Part],
    *,
    outer: str = OUTER,
    inners: list[str] | None = None,
    nl: Callable[[], bytes] = lambda: b"\r\n",
    close_nl: Callable[[], bytes] | None = None,
    header: Callable[[], str] = lambda: "Content-Type: ",
    lead: bytes = b"",
    trailer: bytes = b"\r\n",
) -> bytes:
    """An exchange body; ``close_nl`` is the line break before each delimiter after a payload."""
    close_nl = close_nl or nl
    out = [lead]
    for k, (m, ctype, payload) in enumerate(parts):
        inner = (inners[k] if inners else f"{INNER}{k}").encode()
        rel = f"multipart/related;boundary={inner.decode()}"
        if " " in inner.decode():
            rel = f'multipart/related; boundary="{inner.decode()}"'
        pnl = close_nl()
        if payload.endswith(b"\r") and pnl == b"\n":
            pnl = b"\r\n"  # a CR before an LF delimiter would read as CRLF; a composer then uses CRLF
        out += [
            b"--",
            outer.encode(),
            nl(),
            (header() + rel).encode(),
            nl(),
            nl(),
            b"--",
            inner,
            nl(),
            (header() + META_CONTENT_TYPE).encode(),
            nl(),
            nl(),
            m,
            nl(),
            b"--",
            inner,
            nl(),
            (header() + ctype).encode(),
            nl(),
            nl(),
            payload,
            pnl,
            b"--",
            inner,
            b"--",
            nl(),
        ]
    out += [b"--", outer.encode(), b"--", trailer]
    return b"".join(out)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def parse(body: bytes, ct: str = CT, chunk: int = 0, max_bytes: int = 10 * 1024 * 1024) -> list[ExchangeItem]:
    if not chunk:
        return parse_exchange(ct, body, max_bytes)
    p = ExchangeParser(ct, max_bytes)
    items: list[ExchangeItem] = []
    for i in range(0, len(body), chunk):
        items += p.feed(body[i : i + chunk])
    return items + p.finish()


def fails(body: bytes, ct: str = CT) -> str:
    with pytest.raises(MultipartError) as ei:
        parse(body, ct)
    return str(ei.value)


# -- the three layouts ---------------------------------------------------------------------------------------


def test_rfc_strict_crlf_all_kinds() -> None:
    file_bytes = bytes(range(256)) * 3 + b"\r\n\r\n--" + OUTER.encode()[:-1] + b"\r\n"
    parts = [
        ts(),
        (meta("businessEvent"), "application/json", jdump([EVENT])),
        (meta("businessEvent", "2.0"), "application/json; charset=utf-8", jdump([dict(EVENT, severity=30)])),
        (FILE_META, "application/octet-stream", file_bytes),
        (meta("dataSourceConfiguration"), "application/json", jdump(DSC)),
        (meta("vnd.acme.blob", "7", details={"routing": "x"}), "text/plain", b"custom\r\n"),
    ]
    body = compose(parts)
    items = parse(body, f'multipart/mixed; boundary="{OUTER}"; charset=utf-8')
    assert [i.payload_type for i in items] == [
        "standardTimeSeries",
        "businessEvent",
        "businessEvent",
        "file",
        "dataSourceConfiguration",
        "vnd.acme.blob",
    ]
    assert [i.index for i in items] == [1, 2, 3, 4, 5, 6]
    assert items[0].parsed == READINGS and items[0].details == {"configurationId": "CF-1"}
    assert items[0].meta == json.loads(TS_META) and items[0].content_type == "application/json"
    assert items[1].parsed == [EVENT] and items[2].payload_version == "2.0"
    assert items[2].content_type == "application/json; charset=utf-8"
    assert items[3].payload == file_bytes and items[3].parsed is None
    assert items[3].details["fileName"] == "log.bin"
    assert items[4].parsed == DSC
    assert (
        items[5].payload == b"custom\r\n"
        and items[5].parsed is None
        and items[5].content_type == "text/plain"
    )
    assert items[5].details == {"routing": "x"} and items[5].payload_version == "7"


def _node_template(readings: Any, configuration_id: str = "CF-1") -> bytes:
    """Node 3.24.2 BulkPostData, as its template renders it (including the CRLF before the inner close)."""
    text = f"""--mindspheremessage
Content-Type:multipart/related;boundary=mindspherepart

--mindspherepart
Content-Type:application/vnd.siemens.mindsphere.meta+json

{{
    "type": "item",
    "version": "1.0",
    "payload": {{
        "type": "standardTimeSeries",
        "version": "1.0",
        "details": {{
            "configurationId": "{configuration_id}"
        }}
    }}
}}

--mindspherepart
Content-Type:application/json

{json.dumps(readings, separators=(",", ":"))}

--mindspherepart--
--mindspheremessage--
"""
    return text.replace("--mindspherepart--", "\r\n--mindspherepart--").encode()


NODE_CT = "multipart/mixed; boundary=mindspheremessage"


def test_node_layout_exact() -> None:
    body = _node_template(READINGS)
    assert body.endswith(b"\n\n\r\n--mindspherepart--\n--mindspheremessage--\n")
    (item,) = parse(body, NODE_CT)
    # One line break before a delimiter belongs to it: the meta keeps its pretty-printer's "\n", the
    # payload the template's "\n\n"; JSON ignores both.
    assert item.payload == jdump(READINGS) + b"\n\n"
    assert item.parsed == READINGS
    assert item.meta["payload"]["details"] == {"configurationId": "CF-1"}
    assert item.content_type == "application/json"


def test_node_legacy_file_template_is_byte_exact() -> None:
    """Node's older file-over-exchange: header ends '\\n\\n', bytes, then '\\r\\n--mindspherepart--'."""
    data = b"line1\nline2\r\n\n--mindspherepar\r\n--mindspherepartX\n\r"
    body = (
        b"--mindspheremessage\nContent-Type:multipart/related;boundary=mindspherepart\n\n"
        b"--mindspherepart\nContent-Type:application/vnd.siemens.mindsphere.meta+json\n\n"
        b'{\n    "type": "item",\n    "version": "1.0",\n    "payload": {\n        "type": "file",\n'
        b'        "version": "1.0",\n        "details": {\n            "fileName": "a.txt",\n'
        b'            "creationDate" : "2024-05-01T12:00:00.000Z",\n            "fileType" : "text/plain"\n'
        b"        }\n    }\n}\n\n--mindspherepart\nContent-Type:application/octet-stream\n\n"
        + data
        + b"\r\n--mindspherepart--\n--mindspheremessage--\n"
    )
    (item,) = parse(body, NODE_CT)
    assert item.payload == data and item.details["fileType"] == "text/plain"


def test_mcl_layout() -> None:
    parts = [ts(), (meta("customType", details={"testkey": "t"}), "application/octet-stream", b"")]
    ct = f"multipart/mixed;boundary={OUTER};charset=utf-8"
    body = compose(parts, trailer=b"")
    assert body.endswith(f"--{INNER}1--\r\n--{OUTER}--".encode())
    items = parse(body, ct)
    assert items[0].parsed == READINGS and items[1].payload == b""
    # MCL builds a body from tuples that each start with CRLF: a leading line break is accepted.
    assert parse(b"\r\n" + body, ct) == items


def test_data_files_rfc_and_node_store_identically() -> None:
    def load(name: str) -> list[ExchangeItem]:
        ct = (DATA / f"{name}.content-type").read_text().strip()
        return parse((DATA / f"{name}.body").read_bytes(), ct, chunk=7)

    (rfc,) = load("rfc_readings")
    (node,) = load("node_bulk_readings")
    assert rfc.parsed == node.parsed and rfc.details == node.details
    assert rfc.meta == node.meta and rfc.payload != node.payload
    mcl = load("mcl_mixed")
    assert [i.payload_type for i in mcl] == [
        "standardTimeSeries",
        "businessEvent",
        "file",
        "dataSourceConfiguration",
        "customType",
    ]
    assert mcl[2].payload == (DATA / "mcl_mixed.file-payload.bin").read_bytes()
    assert mcl[1].parsed[0]["severity"] == 20 and mcl[4].payload == b""


def _captures() -> list[tuple[Path, str]]:
    """Multipart request captures: NAME.body + NAME.ctype (node/capture_server.py) or NAME.content-type."""
    found = []
    for body_path in sorted(CAPTURES.glob("*.body")) if CAPTURES.is_dir() else []:
        for suffix in (".ctype", ".content-type"):
            ct_path = body_path.with_suffix(suffix)
            if ct_path.exists():
                ct = ct_path.read_text().strip()
                if ct.lower().startswith("multipart/mixed"):
                    found.append((body_path, ct))
                break
    return found


@pytest.mark.parametrize("capture", _captures() or [None], ids=lambda c: c[0].stem if c else "none")
def test_captured_node_requests(capture: tuple[Path, str] | None) -> None:
    """Real Node.js exchange bodies, checked against NAME.expected.json where the capture has one."""
    if capture is None:
        pytest.skip("no multipart captures in host_tests/southgate/captures (run node/capture_server.py)")
    body_path, ct = capture
    body = body_path.read_bytes()
    items = parse(body, ct)
    assert items
    assert parse(body, ct, chunk=3) == items
    expected_path = body_path.with_suffix(".expected.json")
    if not expected_path.exists():
        return
    expected = json.loads(expected_path.read_text())["items"]
    assert len(items) == len(expected)
    for item, want in zip(items, expected, strict=True):
        assert item.meta == want["meta"]
        assert item.content_type == want["contentType"]
        if "json" in want:
            assert item.parsed == want["json"]
        if "hex" in want:
            assert item.payload == bytes.fromhex(want["hex"])


# -- lenient spellings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ct",
    [
        f"multipart/mixed;boundary={OUTER}",
        f'multipart/mixed; boundary="{OUTER}"',
        f"multipart/mixed;boundary={OUTER};charset=utf-8",
        f"multipart/mixed; charset=utf-8; boundary={OUTER}",
        f"Multipart/Mixed; BOUNDARY={OUTER} ;",
        f'multipart/mixed ; type="x;y" ; boundary = "{OUTER}"',
    ],
)
def test_content_type_spellings(ct: str) -> None:
    assert parse(compose([ts()]), ct)[0].parsed == READINGS


def test_parse_content_type_details() -> None:
    assert parse_content_type('multipart/related; boundary="a \\"b\\" c"; x=1') == (
        "multipart/related",
        {"boundary": 'a "b" c', "x": "1"},
    )


def test_header_spellings_and_mixed_line_breaks() -> None:
    rnd = random.Random(3)
    names = ["Content-Type: ", "content-type:", "CONTENT-TYPE:\t", "Content-type :  "]
    body = compose(
        [ts(), ts(READINGS[:1])],
        nl=lambda: rnd.choice([b"\n", b"\r\n"]),
        header=lambda: rnd.choice(names),
        trailer=b"\n\n",
    )
    assert b"\r\n" in body and b"\n\n" in body
    items = parse(body)
    assert [i.parsed for i in items] == [READINGS, READINGS[:1]]


def test_folded_header_padding_and_other_headers() -> None:
    body = (
        crlf(f"""--{OUTER}  \t
Content-Type: multipart/related;
 boundary={INNER}
Content-ID: <item-1>

--{INNER}
Content-Type: {META_CONTENT_TYPE}
Content-Transfer-Encoding: 8bit

""")
        + TS_META
        + crlf(f"""
--{INNER}\t
Content-Type: application/json

""")
        + jdump(READINGS)
        + crlf(f"""
--{INNER}--
--{OUTER}--
""")
    )
    assert parse(body)[0].parsed == READINGS


def test_empty_payload_right_after_headers() -> None:
    """'CRLF CRLF --b': the blank line's CRLF is the delimiter's, so the payload is empty."""
    body = (
        crlf(f"""--{OUTER}
Content-Type: multipart/related;boundary={INNER}

--{INNER}
Content-Type: {META_CONTENT_TYPE}

""")
        + meta("x")
        + crlf(f"""
--{INNER}
Content-Type: application/octet-stream

--{INNER}--
--{OUTER}--""")
    )
    assert parse(body)[0].payload == b""


def test_boundary_lookalikes_stay_content() -> None:
    """'--b' followed by anything but '--', padding or a line break is not a delimiter."""
    data = f"a\r\n--{INNER}X\r\n--{OUTER}0\n--{INNER}-\n--{INNER} x\n--{OUTER[:-1]}\r\n".encode()
    body = compose([(meta("blob"), "application/octet-stream", data)], inners=[INNER])
    assert parse(body)[0].payload == data


def test_outer_boundary_prefix_of_inner() -> None:
    body = compose([ts()], outer="abc", inners=["abcd"])
    assert parse(body, "multipart/mixed; boundary=abc")[0].parsed == READINGS


def test_time_series_edge_values() -> None:
    readings = [
        {"timestamp": "2024-05-01T12:00:00Z", "values": []},
        {
            "timestamp": "2024-05-01T12:00:00.123456789Z",
            "values": [{"dataPointId": "a", "value": "", "qualityCode": "", "extra": 1}],
        },
        {
            "timestamp": "2024-05-01T12:00:00.123456788Z",
            "values": [{"dataPointId": "a", "value": "1", "qualityCode": "0"}],
        },
    ]
    assert parse(compose([ts(readings)]))[0].parsed == readings
    # The same instant may appear in several elements, as long as no data point repeats.
    split = [
        {"timestamp": T, "values": [V]},
        {"timestamp": T[:-5] + "Z", "values": [dict(V, dataPointId="b")]},
    ]
    assert parse(compose([ts(split)]))[0].parsed == split
    assert parse(compose([ts([])]))[0].parsed == []


def test_event_description_limit() -> None:
    ok = dict(EVENT, description="d" * 255)
    assert parse(compose([(meta("businessEvent"), "application/json", jdump([ok]))]))[0].parsed == [ok]


# -- negatives -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ct, msg",
    [
        ("application/json", "request Content-Type is 'application/json', expected multipart/mixed"),
        ("multipart/form-data; boundary=x", "expected multipart/mixed"),
        ("multipart/mixed", "multipart/mixed has no boundary parameter"),
        ("multipart/mixed; charset=utf-8", "has no boundary parameter"),
        ('multipart/mixed; boundary="abc', "unterminated quoted 'boundary'"),
        ("multipart/mixed; boundary=", "parameter 'boundary' has no value"),
        ("multipart/mixed; boundary=a; boundary=b", "duplicate parameter 'boundary'"),
        ("multipart/mixed boundary=a", "expected ';'"),
        ("", "malformed Content-Type"),
        ("multipart/mixed; boundary=" + "a" * 71, "not a valid RFC 2046 boundary"),
        ('multipart/mixed; boundary="a "', "not a valid RFC 2046 boundary"),
        ("multipart/mixed; boundary=a{b", "not a valid RFC 2046 boundary"),
    ],
)
def test_bad_request_content_type(ct: str, msg: str) -> None:
    with pytest.raises(MultipartError) as ei:
        ExchangeParser(ct)
    assert msg in str(ei.value)


GOOD = compose([ts()])


def _replace(old: bytes, new: bytes, body: bytes = GOOD) -> bytes:
    assert old in body, old
    return body.replace(old, new, 1)


NEGATIVE_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "body: empty"),
    (
        "wrong boundary",
        GOOD.replace(OUTER.encode(), b"other"),
        f"body: expected the delimiter '--{OUTER}' at the start of the body, got b'--other",
    ),
    ("preamble text", b"hello\r\n" + GOOD, "at the start of the body"),
    ("no items", f"--{OUTER}--\r\n".encode(), f"body: no items (close delimiter '--{OUTER}--' right away)"),
    (
        "single level",
        crlf(f"--{OUTER}\nContent-Type: application/json\n\n[]\n--{OUTER}--"),
        "item 1: Content-Type 'application/json', expected multipart/related",
    ),
    (
        "item without content type",
        _replace(f"Content-Type: multipart/related;boundary={INNER}0".encode(), b"Content-ID: x"),
        "item 1: no Content-Type header (expected multipart/related)",
    ),
    (
        "related without boundary",
        _replace(f"multipart/related;boundary={INNER}0".encode(), b"multipart/related"),
        "item 1: multipart/related has no boundary parameter",
    ),
    (
        "inner equals outer",
        GOOD.replace(f"{INNER}0".encode(), OUTER.encode()),
        f"item 1: the item's boundary equals the outer boundary '{OUTER}'",
    ),
    (
        "related has no parts",
        crlf(f"--{OUTER}\nContent-Type: multipart/related;boundary=b\n\n--b--\n--{OUTER}--"),
        "item 1: multipart/related has no parts",
    ),
    (
        "text before the first inner delimiter",
        _replace(f"boundary={INNER}0\r\n\r\n".encode(), f"boundary={INNER}0\r\n\r\npreamble\r\n".encode()),
        f"item 1: expected the delimiter '--{INNER}0' after the headers, got b'preamble",
    ),
    (
        "meta content type",
        _replace(META_CONTENT_TYPE.encode(), b"application/json"),
        f"item 1: meta part: Content-Type 'application/json', expected {META_CONTENT_TYPE}",
    ),
    (
        "meta without content type",
        _replace(f"Content-Type: {META_CONTENT_TYPE}".encode(), b"X-Foo: 1"),
        "item 1: meta part: no Content-Type header",
    ),
    ("meta not JSON", _replace(TS_META, b"{type: item}"), "item 1: meta part: not JSON (Expecting property"),
    ("meta not UTF-8", _replace(TS_META, b'{"type":"\xff"}'), "item 1: meta part: not UTF-8 (byte 9)"),
    (
        "meta NaN",
        _replace(TS_META, b'{"type":"item","n":NaN}'),
        "item 1: meta part: not JSON (NaN is not JSON)",
    ),
    ("meta not object", _replace(TS_META, b"[1]"), "item 1: meta part: not a JSON object"),
    (
        "meta type",
        _replace(b'"type":"item"', b'"type":"itme"'),
        'item 1: meta part: "type" must be "item", got "itme"',
    ),
    (
        "meta without payload",
        _replace(TS_META, b'{"type":"item"}'),
        'item 1: meta part: "payload" must be an object',
    ),
    (
        "payload type missing",
        _replace(TS_META, meta("").replace(b'"type":"",', b"")),
        'item 1: meta part: "payload.type" must be a non-empty string',
    ),
    (
        "payload version missing",
        _replace(b',"version":"1.0","details"', b',"details"'),
        'item 1: meta part: "payload.version" must be a non-empty string',
    ),
    (
        "details not object",
        _replace(b'"details":{"configurationId":"CF-1"}', b'"details":[]'),
        'item 1: meta part: "payload.details" must be an object',
    ),
    (
        "configurationId missing",
        _replace(b'{"configurationId":"CF-1"}', b"{}"),
        'item 1: meta part: "payload.details.configurationId" must be a string for standardTimeSeries',
    ),
    (
        "unknown version",
        _replace(b'"standardTimeSeries","version":"1.0"', b'"standardTimeSeries","version":"3.0"'),
        "item 1: meta part: standardTimeSeries version '3.0' not supported (supported: 1.0)",
    ),
    (
        "meta only",
        _replace(f"\r\n--{INNER}0\r\nContent-Type: application/json\r\n\r\n".encode() + jdump(READINGS), b""),
        "item 1: meta part: no payload part after the meta part",
    ),
    (
        "three parts",
        _replace(
            f"\r\n--{INNER}0--".encode(),
            f"\r\n--{INNER}0\r\nContent-Type: text/plain\r\n\r\nx\r\n--{INNER}0--".encode(),
        ),
        "item 1: more than two parts (expected a meta part and one payload part)",
    ),
    (
        "nested multipart payload",
        _replace(b"Content-Type: application/json", b"Content-Type: multipart/related;b=c"),
        "item 1: payload part: Content-Type 'multipart/related;b=c': nested multipart is not allowed",
    ),
    (
        "payload without content type",
        _replace(b"Content-Type: application/json\r\n", b""),
        "item 1: payload part: no Content-Type header",
    ),
    (
        "json item as text/plain",
        _replace(b"Content-Type: application/json", b"Content-Type: text/plain"),
        "item 1: payload part: Content-Type 'text/plain' for a standardTimeSeries item, "
        "expected application/json",
    ),
    (
        "base64",
        _replace(
            b"Content-Type: application/json",
            b"Content-Type: application/json\r\nContent-Transfer-Encoding: base64",
        ),
        "item 1: payload part: Content-Transfer-Encoding 'base64' not supported",
    ),
    (
        "inner close missing",
        _replace(f"\r\n--{INNER}0--".encode(), b""),
        f"item 1: payload part: no delimiter '--{INNER}0' before the outer delimiter '--{OUTER}'",
    ),
    (
        "text after inner close",
        _replace(f"--{INNER}0--\r\n".encode(), f"--{INNER}0--epilogue\r\n".encode()),
        f"item 1: data after the close delimiter '--{INNER}0--': b'epilogue",
    ),
    (
        "inner close glued to outer",
        _replace(f"--{INNER}0--\r\n".encode(), f"--{INNER}0--".encode()),
        f"item 1: data after the close delimiter '--{INNER}0--': b'--{OUTER}",
    ),
    (
        "text between items",
        _replace(f"--{INNER}0--\r\n".encode(), f"--{INNER}0--\r\nepilogue\r\n".encode()),
        f"item 1: expected '--{OUTER}' or '--{OUTER}--' after the item, got b'epilogue",
    ),
    (
        "text after close",
        GOOD + b"trailing junk",
        f"body: data after the close delimiter '--{OUTER}--': b'trailing",
    ),
    (
        "malformed delimiter line",
        _replace(f"--{OUTER}--".encode(), f"--{OUTER}x".encode()),
        f"item 1: malformed delimiter line b'--{OUTER}x",
    ),
    (
        "malformed header line",
        _replace(b"Content-Type: application/json", b"Content-Type application/json"),
        "item 1: payload part: malformed header line b'Content-Type application/json'",
    ),
    (
        "missing blank line",
        _replace(b"Content-Type: application/json\r\n\r\n", b"Content-Type: application/json\r\n"),
        'item 1: payload part: malformed header line b\'[{"timestamp"',
    ),
    (
        "folded first header",
        _replace(b"Content-Type: application/json", b" Content-Type: application/json"),
        "item 1: payload part: malformed header line b' Content-Type",
    ),
    (
        "duplicate content type",
        _replace(
            b"Content-Type: application/json",
            b"Content-Type: application/json\r\ncontent-type: application/json",
        ),
        "item 1: payload part: duplicate content-type header",
    ),
    (
        "bad payload content type",
        _replace(b"Content-Type: application/json", b"Content-Type: json"),
        "item 1: payload part: malformed Content-Type 'json'",
    ),
    (
        "huge header",
        _replace(b"Content-Type: application/json", b"X-Pad: " + b"p" * 20000),
        "item 1: payload part: header section longer than 16384 bytes",
    ),
    (
        "blank lines flood",
        b"\r\n" * 600 + GOOD,
        "body: more than 1024 bytes of blank lines before a delimiter",
    ),
    (
        "truncated in payload",
        GOOD[: GOOD.index(b"DP-hum")],
        f"item 1: payload part: truncated: no delimiter '--{INNER}0' after the content",
    ),
    (
        "truncated in headers",
        GOOD[: GOOD.index(b"vnd.siemens")],
        "item 1: meta part: truncated: header section not terminated by a blank line",
    ),
    (
        "truncated before outer close",
        GOOD[: -len(f"--{OUTER}--\r\n")],
        f"item 1: truncated: no close delimiter '--{OUTER}--'",
    ),
    ("truncated in outer close", GOOD[:-3], f"item 1: truncated: no close delimiter '--{OUTER}--'"),
]


@pytest.mark.parametrize(
    "body, msg", [(b, m) for _, b, m in NEGATIVE_BODIES], ids=[n for n, _, _ in NEGATIVE_BODIES]
)
def test_negative_body(body: bytes, msg: str) -> None:
    got = fails(body)
    assert msg in got, got


def _ts_fails(readings: Any) -> str:
    return fails(
        compose(
            [(TS_META, "application/json", jdump(readings) if not isinstance(readings, bytes) else readings)]
        )
    )


V = {"dataPointId": "a", "value": "1", "qualityCode": "0"}
T = "2024-05-01T12:00:00.000Z"


@pytest.mark.parametrize(
    "readings, msg",
    [
        (b"[{]", "not JSON ("),
        (b'[{"timestamp":"' + T.encode() + b'","values":[{"value":NaN}]}]', "not JSON (NaN is not JSON)"),
        (b"\xfe[]", "not UTF-8 (byte 0)"),
        ({"timestamp": T, "values": []}, "payload: must be a JSON array of {timestamp, values}"),
        ([[T]], "payload: [0]: must be an object {timestamp, values}"),
        ([{"values": []}], "payload: [0].timestamp: missing"),
        (
            [{"timestamp": "2024-05-01 12:00:00Z", "values": []}],
            "[0].timestamp: must be an ISO 8601 UTC timestamp",
        ),
        ([{"timestamp": "2024-05-01T12:00:00+02:00", "values": []}], "[0].timestamp: must be an ISO 8601"),
        ([{"timestamp": "2024-02-30T12:00:00.000Z", "values": []}], "[0].timestamp: must be an ISO 8601"),
        ([{"timestamp": 1714564800000, "values": []}], "[0].timestamp: must be an ISO 8601"),
        ([{"timestamp": T}], "[0].values: missing"),
        ([{"timestamp": T, "values": {}}], "[0].values: must be an array"),
        (
            [{"timestamp": T, "values": ["x"]}],
            "[0].values[0]: must be an object {dataPointId, value, qualityCode}",
        ),
        (
            [{"timestamp": T, "values": [dict(V, value=1.5)]}],
            "[0].values[0].value: must be a string, got 1.5",
        ),
        (
            [{"timestamp": T, "values": [dict(V, qualityCode=0)]}],
            "[0].values[0].qualityCode: must be a string, got 0",
        ),
        (
            [{"timestamp": T, "values": [{"value": "1", "qualityCode": "0"}]}],
            "[0].values[0]: 'dataPointId' missing",
        ),
        (
            [{"timestamp": T, "values": [dict(V, dataPointId="")]}],
            "[0].values[0].dataPointId: must not be empty",
        ),
        (
            [{"timestamp": T, "values": [V]}, {"timestamp": "2024-05-01T12:00:00Z", "values": [V]}],
            "[1].values[0].dataPointId: duplicate dataPointId 'a' at 2024-05-01T12:00:00Z",
        ),
        (
            [
                {"timestamp": T, "values": [V]},
                {"timestamp": T, "values": [dict(V, dataPointId="b")]},
                {
                    "timestamp": T[:-1] + "000Z",
                    "values": [dict(V, dataPointId="c"), dict(V, dataPointId="b")],
                },
            ],
            "[2].values[1].dataPointId: duplicate dataPointId 'b' at 2024-05-01T12:00:00.000000Z",
        ),
        (
            [{"timestamp": T, "values": [V, dict(V, value="2")]}],
            "[0].values[1].dataPointId: duplicate dataPointId 'a'",
        ),
    ],
)
def test_negative_time_series(readings: Any, msg: str) -> None:
    got = _ts_fails(readings)
    assert got.startswith("item 1: standardTimeSeries payload: "), got
    assert msg in got, got


@pytest.mark.parametrize(
    "version, event, msg",
    [
        ("1.0", "notalist", "payload: must be a JSON array of events"),
        ("1.0", [1], "[0]: must be an object"),
        (
            "1.0",
            [dict(EVENT, severity=20)],
            "[0].severity: must be one of 1/2/3 for businessEvent version 1.0, got 20",
        ),
        (
            "2.0",
            [dict(EVENT, severity=1)],
            "[0].severity: must be one of 20/30/40 for businessEvent version 2.0, got 1",
        ),
        (
            "1.0",
            [dict(EVENT, severity="1")],
            '[0].severity: must be one of 1/2/3 for businessEvent version 1.0, got "1"',
        ),
        ("1.0", [dict(EVENT, severity=True)], "[0].severity: must be one of 1/2/3"),
        ("1.0", [{k: v for k, v in EVENT.items() if k != "severity"}], "[0].severity: missing"),
        ("1.0", [{k: v for k, v in EVENT.items() if k != "timestamp"}], "[0].timestamp: missing"),
        ("1.0", [dict(EVENT, timestamp="yesterday")], "[0].timestamp: must be an ISO 8601 UTC timestamp"),
        ("1.0", [{k: v for k, v in EVENT.items() if k != "type"}], "[0]: 'type' missing"),
        ("1.0", [dict(EVENT, type="")], "[0].type: must not be empty"),
        ("1.0", [{k: v for k, v in EVENT.items() if k != "version"}], "[0]: 'version' missing"),
        (
            "1.0",
            [dict(EVENT, description="d" * 256)],
            "[0].description: must be shorter than 256 characters (has 256)",
        ),
        ("1.0", [dict(EVENT, description=5)], "[0].description: must be a string, got 5"),
        ("1.0", [dict(EVENT, id=5)], "[0].id: must be a string"),
        ("1.0", [dict(EVENT, details=[])], "[0].details: must be an object"),
    ],
)
def test_negative_events(version: str, event: Any, msg: str) -> None:
    got = fails(compose([(meta("businessEvent", version), "application/json", jdump(event))]))
    assert got.startswith("item 1: businessEvent payload: "), got
    assert msg in got, got


def _dsc_with(**dp: Any) -> dict[str, Any]:
    point = dict(DSC["dataSources"][0]["dataPoints"][0], **dp)  # type: ignore[index]
    point = {k: v for k, v in point.items() if v is not None}
    return {"configurationId": "CF-1", "dataSources": [{"name": "DS-1", "dataPoints": [point]}]}


@pytest.mark.parametrize(
    "dsc, msg",
    [
        ([], "payload: must be a JSON object {configurationId, dataSources}"),
        ({"dataSources": []}, "payload: 'configurationId' missing"),
        ({"configurationId": "c"}, "payload: dataSources: missing"),
        (
            {"configurationId": "c", "dataSources": [{"dataPoints": []}]},
            "payload: dataSources[0]: 'name' missing",
        ),
        (
            {"configurationId": "c", "dataSources": [{"name": "n"}]},
            "payload: dataSources[0].dataPoints: missing",
        ),
        (
            _dsc_with(type="FLOAT"),
            "dataSources[0].dataPoints[0].type: must be one of INT, LONG, DOUBLE, BOOLEAN",
        ),
        (_dsc_with(unit=None), "dataSources[0].dataPoints[0]: 'unit' missing"),
        (_dsc_with(id=None), "dataSources[0].dataPoints[0]: 'id' missing"),
        (_dsc_with(name=7), "dataSources[0].dataPoints[0].name: must be a string, got 7"),
        (_dsc_with(customData="x"), "dataSources[0].dataPoints[0].customData: must be an object"),
        (
            {
                "configurationId": "c",
                "dataSources": [
                    {"name": "a", "dataPoints": DSC["dataSources"][0]["dataPoints"]},  # type: ignore[index]
                    {"name": "b", "dataPoints": DSC["dataSources"][0]["dataPoints"]},
                ],
            },  # type: ignore[index]
            "dataSources[1].dataPoints[0].id: duplicate data point id 'DP-temp'",
        ),
    ],
)
def test_negative_dsc(dsc: Any, msg: str) -> None:
    got = fails(compose([(meta("dataSourceConfiguration"), "application/json", jdump(dsc))]))
    assert got.startswith("item 1: dataSourceConfiguration payload: "), got
    assert msg in got, got


@pytest.mark.parametrize(
    "details, msg",
    [
        ({"creationDate": T}, '"payload.details.fileName" must be a non-empty string for a file item'),
        ({"fileName": "", "creationDate": T}, '"payload.details.fileName" must be a non-empty string'),
        ({"fileName": "a"}, '"payload.details.creationDate" must be an ISO 8601 UTC timestamp'),
        ({"fileName": "a", "creationDate": "1.5.2024"}, '"payload.details.creationDate" must be an ISO 8601'),
        ({"fileName": "a", "creationDate": T, "fileType": 3}, '"payload.details.fileType" must be a media'),
        # it becomes the Content-Type of the file's download: no header injection through it
        ({"fileName": "a", "creationDate": T, "fileType": "text/plain\r\nX-Injected: 1"}, "printable ASCII"),
        (None, '"payload.details.fileName" must be a non-empty string'),
    ],
)
def test_negative_file_meta(details: Any, msg: str) -> None:
    got = fails(compose([(meta("file", details=details), "application/octet-stream", b"x")]))
    assert got.startswith("item 1: meta part: ") and msg in got, got


def test_error_names_the_item() -> None:
    body = compose(
        [ts(), ts(), (meta("businessEvent"), "application/json", jdump([dict(EVENT, severity=9)]))]
    )
    assert fails(body).startswith("item 3: businessEvent payload: [0].severity")
    assert fails(compose([ts(), (b"{}", "application/json", b"[]")])).startswith("item 2: meta part: ")


def test_too_large() -> None:
    body = compose([(meta("blob"), "application/octet-stream", b"x" * 2000)])
    assert parse(body, max_bytes=len(body))[0].payload == b"x" * 2000
    p = ExchangeParser(CT, max_bytes=len(body) - 1)
    p.feed(body[:1000])
    with pytest.raises(TooLarge) as ei:
        p.feed(body[1000:])
    assert str(ei.value) == f"request body larger than {len(body) - 1} bytes"
    assert isinstance(ei.value, MultipartError)
    with pytest.raises(TooLarge):  # the first error is final
        p.feed(b"")
    with pytest.raises(TooLarge):
        p.finish()


def test_default_cap_is_10_mib() -> None:
    p = ExchangeParser(CT)
    assert p.max_bytes == 10 * 1024 * 1024
    with pytest.raises(TooLarge):
        p.feed(bytes(10 * 1024 * 1024 + 1))


def test_errors_are_final_and_finish_is_once() -> None:
    p = ExchangeParser(CT)
    with pytest.raises(MultipartError) as ei:
        p.feed(b"junk")
    with pytest.raises(MultipartError) as again:
        p.feed(GOOD)
    assert again.value is ei.value
    p = ExchangeParser(CT)
    assert len(p.feed(GOOD)) == 1
    assert p.finish() == [] and p.finish() == []
    with pytest.raises(MultipartError, match=r"feed\(\) after finish\(\)"):
        p.feed(b"")


def test_items_arrive_as_they_complete() -> None:
    body = compose([ts(), ts(READINGS[:1])])
    first_end = body.index(f"--{INNER}0--".encode()) + len(INNER) + 5
    p = ExchangeParser(CT)
    assert [i.index for i in p.feed(body[:first_end])] == [1]
    assert [i.index for i in p.feed(body[first_end:])] == [2]
    assert p.finish() == []


# -- properties ---------------------------------------------------------------------------------------------

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
boundaries = st.text(alphabet=BCHARS, min_size=1, max_size=70).filter(lambda s: not s.endswith(" "))


def _delimiter_re(boundary: str) -> re.Pattern[bytes]:
    return re.compile(rb"\n--" + re.escape(boundary.encode()) + rb"(?:--|[ \t]*\r?\n)")


def _defuse(payload: bytes, bounds: list[str]) -> bytes:
    """Break real delimiters in generated content (a composer must pick boundaries that don't occur)."""
    for b in bounds:
        rx = _delimiter_re(b)
        while True:
            m = rx.search(b"\n" + payload + b"\r\n")
            if not m:
                break
            cut = m.start() + 2  # right after '\n--' in payload coordinates
            payload = payload[:cut] + b"\x00" + payload[cut:]
    return payload


@st.composite
def payload_bytes(draw: st.DrawFn, bounds: list[str]) -> bytes:
    near: list[bytes] = [b"\r", b"\n", b"\r\n", b"-", b"--", b"\n--", b"\r\n--", b"\r\r\n", b"\n\n"]
    for b in bounds:
        e = b.encode()
        near += [
            b"--" + e,
            b"\n--" + e[:-1],
            b"\r\n--" + e + b"x",
            b"\n--" + e + b"-",
            b"\n--" + e + b" \tz",
            b"\n--" + e + b"\r",
            e,
        ]
    pieces = draw(st.lists(st.one_of(st.binary(max_size=24), st.sampled_from(near)), max_size=10))
    return _defuse(b"".join(pieces), bounds)


values = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@st.composite
def json_part(draw: st.DrawFn) -> Part:
    kind = draw(st.sampled_from(["ts", "event", "dsc"]))
    if kind == "ts":
        n = draw(st.integers(0, 3))
        doc: Any = [
            {
                "timestamp": f"2024-05-01T12:00:0{k}.{draw(st.integers(0, 999)):03d}Z",
                "values": [
                    {
                        "dataPointId": f"dp{j}",
                        "value": draw(values),
                        "qualityCode": draw(st.sampled_from(["0", "00000000"])),
                    }
                    for j in range(draw(st.integers(0, 3)))
                ],
            }
            for k in range(n)
        ]
        m = TS_META
    elif kind == "event":
        version = draw(st.sampled_from(["1.0", "2.0"]))
        sev = draw(st.sampled_from([1, 2, 3] if version == "1.0" else [20, 30, 40]))
        doc = [dict(EVENT, severity=sev, description=draw(values))]
        m = meta("businessEvent", version)
    else:
        doc, m = DSC, meta("dataSourceConfiguration")
    pretty = draw(st.booleans())
    text = json.dumps(doc, indent=4 if pretty else None).encode()
    return m, "application/json", text


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[str, bytes, list[Part]]:
    layout = draw(st.sampled_from(["rfc", "mcl", "node", "mixed"]))
    n = draw(st.integers(1, 4))
    if layout == "node":
        outer, inners = "mindspheremessage", ["mindspherepart"] * n
    else:
        outer = draw(boundaries)
        inners = [draw(boundaries.filter(lambda s: s != outer)) for _ in range(n)]
    parts: list[Part] = []
    for k in range(n):
        if draw(st.booleans()):
            parts.append(draw(json_part()))
        else:
            data = draw(payload_bytes([outer, inners[k]]))
            parts.append((FILE_META, draw(st.sampled_from(["application/octet-stream", "image/png"])), data))
    rnd = draw(st.randoms(use_true_random=False))
    crlf_nl: Callable[[], bytes] = lambda: b"\r\n"  # noqa: E731
    if layout == "rfc":
        ct = f'multipart/mixed; boundary="{outer}"; charset=utf-8'
        body = compose(parts, outer=outer, inners=inners)
    elif layout == "mcl":
        ct = f'multipart/mixed;boundary="{outer}";charset=utf-8'
        body = compose(parts, outer=outer, inners=inners, trailer=b"", lead=rnd.choice([b"", b"\r\n"]))
    elif layout == "node":
        ct = f"multipart/mixed; boundary={outer}"
        body = compose(
            parts,
            outer=outer,
            inners=inners,
            nl=lambda: b"\n",
            close_nl=crlf_nl,
            header=lambda: "Content-Type:",
            trailer=b"\n",
        )
    else:
        ct = f'multipart/mixed;charset=utf-8;boundary="{outer}"'
        names = ["Content-Type: ", "content-type:", "CONTENT-TYPE:  ", "Content-Type:\t"]
        body = compose(
            parts,
            outer=outer,
            inners=inners,
            nl=lambda: rnd.choice([b"\n", b"\r\n"]),
            header=lambda: rnd.choice(names),
            trailer=rnd.choice([b"", b"\n", b"\r\n", b"\r\n\r\n"]),
        )
    return ct, body, parts


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(exchanges())
def test_property_round_trip(ex: tuple[str, bytes, list[Part]]) -> None:
    ct, body, parts = ex
    items = parse(body, ct)
    assert len(items) == len(parts)
    for item, (m, ctype, payload) in zip(items, parts, strict=True):
        assert item.meta == json.loads(m)
        assert item.content_type == ctype
        assert item.payload == payload
        if item.payload_type == "file":
            assert item.parsed is None
        else:
            assert item.parsed == json.loads(payload)


@FAST
@given(exchanges(), st.lists(st.integers(min_value=0), max_size=12))
def test_property_any_split_same_items(ex: tuple[str, bytes, list[Part]], cuts: list[int]) -> None:
    ct, body, _ = ex
    whole = parse(body, ct)
    points = sorted({c % (len(body) + 1) for c in cuts})
    p = ExchangeParser(ct)
    items: list[ExchangeItem] = []
    prev = 0
    for c in [*points, len(body)]:
        items += p.feed(body[prev:c])
        prev = c
    items += p.finish()
    assert items == whole


@FAST
@given(exchanges(), st.integers(min_value=0))
def test_property_truncation_is_reported(ex: tuple[str, bytes, list[Part]], cut: int) -> None:
    ct, body, _ = ex
    end = body.rindex(b"--", 0, len(body.rstrip(b"\r\n"))) + 2  # end of the close delimiter '--B--'
    prefix = body[: cut % end]
    p = ExchangeParser(ct)
    p.feed(prefix)  # a prefix of a valid body is never an error before finish()
    with pytest.raises(MultipartError, match="truncated|body: empty"):
        p.finish()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 299))
def test_property_garbage_never_crashes(junk: bytes, at: int) -> None:
    """Arbitrary bytes spliced into a valid body give items or a MultipartError, never another exception."""
    body = GOOD[:at] + junk + GOOD[at:]
    try:
        parse(body)
    except MultipartError:
        pass


# -- efficiency ---------------------------------------------------------------------------------------------


def _big_body(size: int) -> bytes:
    rnd = random.Random(7)
    data = rnd.randbytes(size)
    data = _defuse(data, [OUTER, f"{INNER}0"])
    return compose([(FILE_META, "application/octet-stream", data)])


def test_delimiter_search_is_linear() -> None:
    """4 MiB in 1 KiB chunks: each byte is searched about twice (inner and outer), plus a small overlap per
    feed; rescanning the whole buffer per feed would be ~8 GB of work."""
    body = _big_body(4 * 1024 * 1024)
    p = ExchangeParser(CT)
    t0 = time.perf_counter()
    feeds = 0
    items: list[ExchangeItem] = []
    for i in range(0, len(body), 1024):
        items += p.feed(body[i : i + 1024])
        feeds += 1
    items += p.finish()
    elapsed = time.perf_counter() - t0
    overlap = 2 * (len(OUTER) + len(INNER) + 8)
    assert p.bytes_scanned <= 2 * len(body) + feeds * overlap, (p.bytes_scanned, len(body))
    assert len(items[0].payload) > 4 * 1024 * 1024 - 100
    assert elapsed < 5, elapsed  # linear: ~0.1 s here


def test_ten_mib_in_64k_chunks_memory() -> None:
    """A 10 MiB body: the parser's peak allocation stays near body + payload copy (one item held)."""
    body = _big_body(10 * 1024 * 1024 - 1024)
    assert len(body) <= 10 * 1024 * 1024
    tracemalloc.start()
    try:
        p = ExchangeParser(CT)
        n = 0
        for i in range(0, len(body), 65536):
            got = p.feed(body[i : i + 65536])
            n += sum(len(it.payload) for it in got)
            del got
        p.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 10 * 1024 * 1024 - 2048
    assert peak < 2.6 * len(body), peak / len(body)
