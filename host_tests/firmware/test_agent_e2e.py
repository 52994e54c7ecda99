"""The data path end to end: Agent.record/event/upload_file -> flash store -> streamed exchange -> `southgate
serve` over verified TLS, on CPython and on the MicroPython Unix port with the firmware compiled to .mpy.

What arrives is read back from southgate's admin API and compared exactly: each value's text as the DSC
type wants it (DOUBLE numeric, INT/LONG integer text, BOOLEAN true/false), timestamps to the millisecond,
quality codes; event fields; file bytes. Then the rules of delivery: nothing leaves flash before a 200, a
re-flush sends nothing, a 5xx or a dropped connection keeps the data, and an outage (southgate stopped,
port closed, the node rebooting meanwhile) loses nothing.

Heap: each [upy] test runs with 64 KB of free heap for everything the agent does at run time
(board_heap(HEAP_KB), as in test_identity_e2e.py): the .mpy bytecode of every module is loaded first and
kept (on a board it would be frozen in flash), the surplus is held in a ballast. The read-back of what
southgate stored is test scaffolding, not the agent's: it runs after the ballast is released.

Retries never wait: the uploader's sleep is a list's append (the waits are checked, not slept).
"""

import json
import time

from checks import RUNTIME_HEAP_KB, board_heap
from mcagent import Agent, clock, exchange, http, identity, store, uploader  # noqa: F401 - resident modules

# The tests read southgate's admin API on the agent's connection while the ballast is held (responses of a
# few KB in one piece, parsed to dicts; the request counters grow through a test): that scaffolding gets
# 16 KB of its own on top of the agent's 64 KB budget (8 KB failed once on a ~4 KB counters answer).
HEAP_KB = RUNTIME_HEAP_KB + 16
UPY_HEAPSIZE = "448k"  # every mcagent module as .mpy (board_heap), the 64 KB run-time budget, the read-back
UPY_MPY = True
UPY_TIMEOUT = 120

EXCHANGE = "/api/mindconnect/v3/exchange"

DSC = {
    "configurationId": "CF-data-e2e",
    "dataSources": [
        {
            "name": "DS-board",
            "dataPoints": [
                {"id": "DP-Double", "name": "double", "type": "DOUBLE", "unit": "C"},
                {"id": "DP-Int", "name": "int", "type": "INT", "unit": ""},
                {"id": "DP-Long", "name": "long", "type": "LONG", "unit": "Wh"},
                {"id": "DP-Bool", "name": "bool", "type": "BOOLEAN", "unit": ""},
                {"id": "DP-String", "name": "string", "type": "STRING", "unit": ""},
                {"id": "DP-Big", "name": "big", "type": "BIG_STRING", "unit": ""},
                {"id": "DP-Time", "name": "time", "type": "TIMESTAMP", "unit": ""},
            ],
        }
    ],
}

T0 = 1790000000123  # 2026-09-21T14:13:20.123Z
NON_ASCII = "Grüße ☃ 温度 🌡"
ESCAPES = 'quote " backslash \\ newline \n tab \t bell \x07 end'
BIG = "ü温🌡" * 100  # 300 characters, 900 bytes of UTF-8 (a STRING stops at 255 characters)
HUGE = "ü温🌡" * 450  # 4050 bytes of UTF-8: about the largest value a 4 KiB segment record takes



def collect():
    """After `del ballast`: the heap back for reading what southgate stored (scaffolding, not the agent)."""
    import gc

    gc.collect()


class Admin:
    """southgate's admin API on an mcagent.http connection (the only client both interpreters have)."""

    def __init__(self, sg, conn):
        self.conn = conn
        self.auth = "Bearer " + sg["admin_token"]
        self.agent = sg["agent_id"]

    def __call__(self, method, path, body=None):
        h = {"Authorization": self.auth}
        if body is not None:
            h["Content-Type"] = "application/json"
            body = json.dumps(body)
        r = self.conn.request(method, path, h, body, 65536)
        assert r.status < 300 and not r.truncated, "%s %s -> %d %s" % (method, path, r.status, r.body[:300])
        return r.json() if r.body else None

    def fault(self, **spec):
        return self("POST", "/admin/faults", spec)

    def requests(self, method, prefix):
        """Statuses of the agent-side requests since the fixture reset the counters."""
        c = self("GET", "/admin/counters")
        return [r["status"] for r in c["per_request"]
                if r["method"] == method and r["path"].startswith(prefix)]

    def read(self, what, lo_ms=None, hi_ms=None):
        q = ""
        if lo_ms is not None:
            q = "?from=%s&to=%s" % (clock.iso_ms(lo_ms), clock.iso_ms(hi_ms))
        return self("GET", "/admin/agents/%s/%s%s" % (self.agent, what, q))


def make(sg, **kw):
    d = sg["dir"]
    return Agent(config=sg["config"], state=d + "/state", ca=[sg["ca_der"]], store=d + "/store", **kw)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def control(sg, what):
    """Ask the host to stop or start this test's southgate (fixtures_data.data_outage_sg)."""
    c = http.Connection(sg["control"], timeout_s=90)
    try:
        r = c.request("POST", "/" + what, body=b"")
        assert r.status == 200, "control %s -> %d %s" % (what, r.status, r.body)
        return r.json()
    finally:
        c.close()


def chars(text):
    """MicroPython's json leaves a JSON surrogate pair (southgate escapes characters beyond U+FFFF so) as two
    lone surrogates: join them, so values compare as the characters sent. A no-op on CPython."""
    out = []
    hi = 0
    for c in text:
        o = ord(c)
        if 0xD800 <= o < 0xDC00:
            hi = o
        elif 0xDC00 <= o < 0xE000 and hi:
            out.append(chr(0x10000 + ((hi - 0xD800) << 10) + (o - 0xDC00)))
            hi = 0
        else:
            out.append(c)
    return "".join(out)


def check_double(row, want):
    v = row["value"]
    assert float(v) == want, row  # the same double (sign of zero aside)
    assert v.lstrip("-").replace(".", "", 1).replace("e+", "").replace("e-", "").isdigit(), row


# ---------------------------------------------------------------------------------------------------------


def test_readings_arrive_exactly(data_sg):
    """Every type, chosen millisecond timestamps, edge values, non-ASCII text, quality codes."""
    ballast = board_heap(HEAP_KB)
    a = make(data_sg, dsc=DSC)
    assert a.configure(DSC)["dsc"] == "put"
    assert a.record({"DP-Double": 21.5, "DP-Int": 0, "DP-Long": 9223372036854775807, "DP-Bool": True,
                     "DP-String": NON_ASCII, "DP-Time": "2026-01-02T03:04:05.678Z"}, timestamp_ms=T0) is True
    a.record({"DP-Double": -40.25, "DP-Int": -2147483648, "DP-Long": -9223372036854775808, "DP-Bool": False,
              "DP-String": ESCAPES, "DP-Big": BIG}, timestamp_ms=T0 + 878)
    # A partial sample (only some points), a DOUBLE given as an int, the extremes of INT.
    a.record({"DP-Double": 7, "DP-Int": 2147483647, "DP-String": ""}, timestamp_ms=T0 + 1876)
    # Quality per sample: MCL's "good", then 1.
    assert a.record({"DP-Double": 0.30000000000000004, "DP-Long": 0}, T0 + 2877, quality="00000000")
    assert a.record({"DP-Double": -1e-07, "DP-Bool": True, "DP-Int": -1}, T0 + 4444, quality=1)
    a.record({"DP-Double": 1e300, "DP-Long": 1790000000123}, timestamp_ms=T0 + 86400000 * 400 + 1)
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 6 and s["pending"] == 0, s
    assert s["batches"] == 1 and s["retries"] == 0, s
    a.close()
    del a
    del ballast
    collect()
    want = [
        # (timestamp, data point, value text, quality); southgate keeps them ordered by time, then point id
        ("2026-09-21T14:13:20.123Z", "DP-Bool", "true", "0"),
        ("2026-09-21T14:13:20.123Z", "DP-Double", 21.5, "0"),
        ("2026-09-21T14:13:20.123Z", "DP-Int", "0", "0"),
        ("2026-09-21T14:13:20.123Z", "DP-Long", "9223372036854775807", "0"),
        ("2026-09-21T14:13:20.123Z", "DP-String", NON_ASCII, "0"),
        ("2026-09-21T14:13:20.123Z", "DP-Time", "2026-01-02T03:04:05.678Z", "0"),
        ("2026-09-21T14:13:21.001Z", "DP-Big", BIG, "0"),
        ("2026-09-21T14:13:21.001Z", "DP-Bool", "false", "0"),
        ("2026-09-21T14:13:21.001Z", "DP-Double", -40.25, "0"),
        ("2026-09-21T14:13:21.001Z", "DP-Int", "-2147483648", "0"),
        ("2026-09-21T14:13:21.001Z", "DP-Long", "-9223372036854775808", "0"),
        ("2026-09-21T14:13:21.001Z", "DP-String", ESCAPES, "0"),
        ("2026-09-21T14:13:21.999Z", "DP-Double", 7.0, "0"),
        ("2026-09-21T14:13:21.999Z", "DP-Int", "2147483647", "0"),
        ("2026-09-21T14:13:21.999Z", "DP-String", "", "0"),
        ("2026-09-21T14:13:23.000Z", "DP-Double", 0.30000000000000004, "00000000"),
        ("2026-09-21T14:13:23.000Z", "DP-Long", "0", "00000000"),
        ("2026-09-21T14:13:24.567Z", "DP-Bool", "true", "1"),
        ("2026-09-21T14:13:24.567Z", "DP-Double", -1e-07, "1"),
        ("2026-09-21T14:13:24.567Z", "DP-Int", "-1", "1"),
        ("2027-10-26T14:13:20.124Z", "DP-Double", 1e300, "0"),
        ("2027-10-26T14:13:20.124Z", "DP-Long", "1790000000123", "0"),
    ]
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    adm = Admin(data_sg, c)
    rows = adm.read("timeseries")
    got = [(r["timestamp"], r["dataPointId"]) for r in rows]
    assert got == [(w[0], w[1]) for w in want], got
    for i in range(len(want)):
        r, (_, dp, value, quality) = rows[i], want[i]
        assert r["qualityCode"] == quality, r
        if dp == "DP-Double":
            check_double(r, value)
        else:
            assert chars(r["value"]) == value, (r, value)
    assert [r["value"] for r in rows if r["dataPointId"] == "DP-Double"][:3] == ["21.5", "-40.25", "7.0"]
    # One exchange request, nothing dropped by the service (its diagnostics say why it would have).
    assert adm.requests("POST", EXCHANGE) == [200]
    diags = adm.read("diagnostics")
    assert [d["severity"] for d in diags] == ["INFO"], diags
    c.close()


def test_a_string_as_big_as_a_record_allows(data_sg):
    """A BIG_STRING of 4050 bytes (a sample record must fit one 4 KiB segment) arrives intact.

    Under the 64 KB budget of board_heap(HEAP_KB) this needs the composer to stream the escaped UTF-8 straight
    from the record buffer: copying the value whole (slice, str, quote, encode) raised MemoryError once, and
    the record then blocked every later flush.
    """
    ballast = board_heap(HEAP_KB)
    a = make(data_sg, dsc=DSC)
    a.configure(DSC)
    e = None
    try:
        a.record({"DP-Big": HUGE + "123456789"}, timestamp_ms=T0 - 1)
    except store.StoreError as exc:
        e = exc
    assert e is not None and "does not fit a segment" in str(e), e
    a.record({"DP-Big": HUGE}, timestamp_ms=T0)
    a.record({"DP-Int": 2}, timestamp_ms=T0 + 1)
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 2 and s["pending"] == 0, s
    a.close()
    del a, ballast
    collect()
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    rows = Admin(data_sg, c).read("timeseries")
    assert [(r["dataPointId"], r["timestamp"]) for r in rows] == [
        ("DP-Big", "2026-09-21T14:13:20.123Z"), ("DP-Int", "2026-09-21T14:13:20.124Z")], rows
    assert chars(rows[0]["value"]) == HUGE
    c.close()


def test_events_and_files_arrive(data_sg):
    ballast = board_heap(HEAP_KB)
    # Binary, CRLF and a delimiter look-alike: the multipart framing must not care.
    blob = bytes(range(256)) * 6 + b"\r\n--mcagent\r\n\r\n" + "Grüße".encode() + b"\r\n"
    write(data_sg["dir"] + "/capture.bin", blob)
    write(data_sg["dir"] + "/notes.txt", b"line 1\nline 2\n")
    write(data_sg["dir"] + "/empty.log", b"")
    a = make(data_sg, dsc=DSC)
    a.configure(DSC)
    t_lo = int(time.time() * 1000) - 5000
    a.event(3, "Türe offen ☃", {"door": "north", "n": 2, "nested": {"a": [1, 2.5, True, None], "s": 'q"\\'}})
    a.event("error", "overheat")
    a.event(30, "v2 warning", {"code": 7})
    a.upload_file(data_sg["dir"] + "/capture.bin", "captures/capture-1.bin", "application/x-capture")
    a.upload_file(data_sg["dir"] + "/notes.txt")
    a.upload_file(data_sg["dir"] + "/empty.log", mime="text/plain")
    a.record({"DP-Double": 1.5}, timestamp_ms=T0)
    s = a.flush()
    t_hi = int(time.time() * 1000) + 5000
    assert s["error"] is None and s["pending"] == 0, s
    assert (s["readings_sent"], s["events_sent"], s["files_sent"], s["batches"]) == (1, 3, 3, 1), s
    assert a.flush()["batches"] == 0
    a.close()
    del a
    del ballast
    collect()
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    adm = Admin(data_sg, c)
    events = {}
    for e in adm.read("events"):
        events[e["description"]] = e
    assert sorted(events) == sorted(["overheat", "v2 warning", "Türe offen ☃"]), events
    ids = []
    for desc, sev, details in (("Türe offen ☃", 3, {"door": "north", "n": 2,
                                                     "nested": {"a": [1, 2.5, True, None], "s": 'q"\\'}}),
                               ("overheat", 1, {}), ("v2 warning", 30, {"code": 7})):
        e = events[desc]
        assert e["severity"] == sev and e["details"] == details, e
        assert e["type"] == "MindSphereStandardEvent" and e["version"] == "1.0" and e["via"] == "exchange", e
        assert e["entityId"] and "correlationId" not in e, e
        eid = e["id"]  # a UUID v4 drawn when the event was recorded
        assert len(eid) == 36 and eid[14] == "4" and eid[19] in "89ab" and eid.count("-") == 4, eid
        ids.append(eid)
        ts = e["timestamp"]
        assert len(ts) == 24 and ts.endswith("Z") and t_lo <= clock.parse_iso(ts) <= t_hi, (ts, t_lo, t_hi)
    assert len(set(ids)) == 3
    files = {}
    for f in adm.read("files"):
        files[f["path"]] = f
    assert sorted(files) == ["captures/capture-1.bin", "empty.log", "notes.txt"], files
    for path, data, mime in (("captures/capture-1.bin", blob, "application/x-capture"),
                             ("notes.txt", b"line 1\nline 2\n", "application/octet-stream"),
                             ("empty.log", b"", "text/plain")):
        f = files[path]
        assert f["size"] == len(data) and f["type"] == mime and f["via"] == "exchange", f
        assert read(data_sg["data_dir"] + "/files/" + f["blob"]) == data, path
        assert len(f["timestamp"]) == 24 and t_lo <= clock.parse_iso(f["timestamp"]) <= t_hi, f
    assert adm.requests("POST", EXCHANGE) == [200]
    c.close()


def test_custom_data_arrives(data_sg):
    """Custom data (record kind 4): kept in its record or streamed from a file, read back byte for byte."""
    ballast = board_heap(HEAP_KB)
    spectrum = bytes(range(256)) * 4 + b"\r\n--mcagent\r\n\r\n"  # binary, CRLF, a delimiter look-alike
    chunk = b"\x00\xff\r\n" * 500
    with open(data_sg["dir"] + "/capture.raw", "wb") as f:  # 24 KB: more than a record holds, streamed
        for _ in range(12):
            f.write(chunk)
    del chunk
    a = make(data_sg, dsc=DSC)
    a.configure(DSC)
    a.custom("vibrationSpectrum", "1.0", spectrum, "application/octet-stream", {"axis": "x", "bins": 256})
    a.custom("rawCapture", "2.0", data_sg["dir"] + "/capture.raw", "application/x-capture")
    a.record({"DP-Double": 2.5}, timestamp_ms=T0)
    s = a.flush()
    assert s["error"] is None and s["pending"] == 0, s
    assert (s["readings_sent"], s["custom_sent"], s["batches"]) == (1, 2, 1), s
    assert a.flush()["batches"] == 0
    a.close()
    del a
    del ballast
    collect()
    big = b"\x00\xff\r\n" * 6000
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    adm = Admin(data_sg, c)
    items = adm.read("items?full=1")
    assert [(i["type"], i["version"], i["contentType"], i["size"], i["details"]) for i in items] == [
        ("vibrationSpectrum", "1.0", "application/octet-stream", len(spectrum), {"axis": "x", "bins": 256}),
        ("rawCapture", "2.0", "application/x-capture", len(big), {}),
    ], items
    for item, data in zip(items, (spectrum, big)):
        r = c.request("GET", "/admin/agents/%s/items/%d" % (data_sg["agent_id"], item["id"]),
                      {"Authorization": adm.auth}, None, 65536)
        assert r.status == 200 and not r.truncated and bytes(r.body) == data, (item, r.status)
    c.close()


def test_a_big_custom_record_without_big_string_points(data_sg):
    """A custom data record of nearly a segment on a store whose points need no big buffer: the append grows
    the write buffer and the upload reads the record back into that same block, within the budget."""
    dsc = {"configurationId": "CF-small", "dataSources": [{"name": "DS", "dataPoints": [
        {"id": "DP-Double", "name": "double", "type": "DOUBLE", "unit": "C"}]}]}
    ballast = board_heap(HEAP_KB)
    a = make(data_sg, dsc=dsc)
    a.configure(dsc)
    blob = bytes(range(256)) * 15  # 3,840 bytes: the record fills most of a 4 KiB segment
    for i in range(3):
        a.record({"DP-Double": i * 0.5}, timestamp_ms=T0 + i)
        a.custom("blob", "1.0", blob, "application/octet-stream")
    s = a.flush()
    assert s["error"] is None and (s["readings_sent"], s["custom_sent"], s["pending"]) == (3, 3, 0), s
    a.close()
    del a, blob
    del ballast
    collect()
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    items = Admin(data_sg, c).read("items?full=1")
    assert [(i["type"], i["size"]) for i in items] == [("blob", 3840)] * 3, items
    c.close()


def test_records_leave_the_store_only_after_200(data_sg):
    """A 503, then 500s within one flush, then a connection dropped mid-body: data kept, sent once."""
    ballast = board_heap(HEAP_KB)
    sleeps = []
    opts = {"sleep": sleeps.append, "max_tries": 0, "budget": 4096}  # give up at the first failure
    a = make(data_sg, dsc=DSC, upload_options=opts)
    adm = Admin(data_sg, a.conn)
    a.configure(DSC)
    for i in range(150):
        a.record({"DP-Double": i * 0.25, "DP-Int": i}, timestamp_ms=T0 + i * 1000)
    adm.fault(path=EXCHANGE, status=503, count=1)
    s = a.flush()
    assert s["readings_sent"] == 0 and s["last_status"] == 503 and "503" in s["error"], s
    assert s["pending"] == 150 and a.store.pending_count() == 150 and a.store.cursor == (0, 0), s
    assert sleeps == []
    assert adm.read("timeseries") == []
    # The kept data goes with the next flush (several batches), then pending is 0 and a re-flush is silent.
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 150 and s["pending"] == 0, s
    assert s["batches"] >= 2, s  # the 4 KB budget splits the backlog
    batches = s["batches"]
    assert adm.requests("POST", EXCHANGE) == [503] + [200] * batches
    s = a.flush()
    assert (s["readings_sent"], s["batches"], s["pending"], s["error"]) == (0, 0, 0, None), s
    assert adm.requests("POST", EXCHANGE) == [503] + [200] * batches
    # A batch fails twice with 500 inside one flush: retried after backoff waits (not slept here).
    opts["max_tries"] = 3
    for i in range(150, 160):
        a.record({"DP-Double": i * 0.25, "DP-Int": i}, timestamp_ms=T0 + i * 1000)
    adm.fault(path=EXCHANGE, status=500, count=2)
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 10 and s["retries"] == 2 and s["pending"] == 0, s
    assert len(sleeps) == 2 and 0 <= sleeps[0] < 2 and 0 <= sleeps[1] < 4, sleeps  # full jitter, base 2 s
    # The connection drops after 300 bytes of the body: the server never saw the batch; it goes again.
    for i in range(160, 170):
        a.record({"DP-Double": i * 0.25, "DP-Int": i}, timestamp_ms=T0 + i * 1000)
    adm.fault(path=EXCHANGE, kind="close_after_bytes", bytes=300, count=1)
    resent = a.conn.resent
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 10 and s["pending"] == 0, s
    # Sent again once: by the uploader (the body was all written, the answer never came) or, if the drop
    # came while the body was still being written, by the connection itself (no server acts on half a body).
    assert s["retries"] + a.conn.resent - resent == 1, (s, a.conn.resent, resent)
    a.close()
    del a
    del ballast
    collect()
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    adm = Admin(data_sg, c)
    statuses = adm.requests("POST", EXCHANGE)
    assert statuses[batches + 1 :] == [500, 500, 200, 0, 200], statuses  # 0: dropped, no answer
    rows = []
    for lo in range(0, 170, 60):  # read back in pages: small answers
        rows.extend(adm.read("timeseries", T0 + lo * 1000, T0 + (lo + 60) * 1000))
    assert len(rows) == 340, len(rows)
    for i in range(170):
        d, n = rows[2 * i], rows[2 * i + 1]
        assert d["timestamp"] == n["timestamp"] == clock.iso_ms(T0 + i * 1000), (i, d, n)
        assert d["dataPointId"] == "DP-Double" and float(d["value"]) == i * 0.25, d
        assert n["dataPointId"] == "DP-Int" and n["value"] == str(i), n
    c.close()


def test_outage_readings_recorded_meanwhile_all_arrive(data_outage_sg):
    """southgate stopped (port closed) while the node keeps recording, flushing and even reboots; once it
    is back (same port, same data), everything arrives, once."""
    sg = data_outage_sg
    ballast = board_heap(HEAP_KB)
    sleeps = []
    opts = {"sleep": sleeps.append, "max_tries": 2}
    a = make(sg, dsc=DSC, upload_options=opts)
    a.configure(DSC)
    n = 0
    for _ in range(5):
        a.record({"DP-Double": n + 0.5}, timestamp_ms=T0 + n * 1000)
        n += 1
    s = a.flush()
    assert s["readings_sent"] == 5 and s["error"] is None, s
    control(sg, "stop")
    pending = 0
    for rnd in range(4):
        if rnd == 2:  # a reboot while offline: the backlog and the cursor come back from flash
            a.close()
            del a
            a = make(sg, dsc=DSC, upload_options=opts)
            assert a.configure(DSC)["dsc"] == "unchanged"  # nothing to send, so no network needed
        for _ in range(100):  # 4 KiB segments: the backlog rolls over several of them
            a.record({"DP-Double": n + 0.5}, timestamp_ms=T0 + n * 1000)
            n += 1
        a.event(2, "offline round %d" % rnd)
        pending += 101
        s = a.flush()
        assert s["readings_sent"] == 0 and s["batches"] == 0, s
        assert s["error"] and s["error"].startswith("transport:") and "gave up after 3 tries" in s["error"], s
        # Right after the reboot the summary does not know the backlog (it would take a scan); then it does.
        assert s["pending"] == (None if rnd == 2 else pending), (s, pending)
        assert a.store.pending_count() == pending, pending
    assert len(sleeps) == 8 and max(sleeps) < 4, sleeps  # 2 backoffs per flush: base 2 s, full jitter
    assert a.store.stats()["segments"] >= 3
    control(sg, "start")
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 400 and s["events_sent"] == 4, s
    assert s["pending"] == 0 and a.store.stats()["segments"] <= 1, s
    assert a.flush()["batches"] == 0
    a.close()
    del a
    del ballast
    collect()
    c = http.Connection(sg["base_url"], [read(sg["ca_der"])])
    adm = Admin(sg, c)
    rows = []
    for lo in range(0, n, 50):
        rows.extend(adm.read("timeseries", T0 + lo * 1000, T0 + (lo + 50) * 1000))
    assert len(rows) == n == 405, (len(rows), n)
    for i in range(n):
        r = rows[i]
        assert r["timestamp"] == clock.iso_ms(T0 + i * 1000) and float(r["value"]) == i + 0.5, (i, r)
    descriptions = sorted([e["description"] for e in adm.read("events")])
    assert descriptions == ["offline round %d" % i for i in range(4)], descriptions
    # Only 200s after the restart: every batch went once (counters restart with the server).
    statuses = adm.requests("POST", EXCHANGE)
    assert statuses and statuses == [200] * len(statuses), statuses
    c.close()


COMPACT = {"configurationId": "CF-compact",
           "dataSources": {"DS-board": {"DP-Int": "INT", "DP-Double": ["DOUBLE", "C"]}}}


def test_the_compact_dsc_form_records_and_uploads(data_sg):
    """The compact description (mcagent.dsc: dicts and type shortcuts) works wherever the full one does:
    given to Agent() for the store, and to configure()."""
    ballast = board_heap(HEAP_KB)
    a = make(data_sg, dsc=COMPACT)
    assert a.configure(COMPACT)["configurationId"] == "CF-compact"
    a.record({"DP-Double": 1.5, "DP-Int": 3}, timestamp_ms=T0)
    s = a.flush()
    assert s["error"] is None and s["readings_sent"] == 1 and s["pending"] == 0, s
    a.close()
    b = make(data_sg)  # no description at construction: configure() hands the compact one to the store
    b.configure(COMPACT)
    b.record({"DP-Int": 4}, timestamp_ms=T0 + 1)
    assert b.flush()["readings_sent"] == 1
    b.close()
    del a, b, ballast
    collect()
    c = http.Connection(data_sg["base_url"], [read(data_sg["ca_der"])])
    rows = Admin(data_sg, c).read("timeseries")
    assert [(r["dataPointId"], r["value"]) for r in rows] == [("DP-Double", "1.5"), ("DP-Int", "3"),
                                                              ("DP-Int", "4")]
    c.close()
