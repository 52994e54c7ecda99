"""The exchange composer: strict multipart, exact Content-Length, typed values, bounded batches, flat heap."""

import json

import multipart_check as mp
from checks import Skip, is_micropython
from mcagent import clock, exchange
from mcagent import store as S

T0 = 1714564800000  # 2024-05-01T12:00:00.000Z
UPY_SKIP = {
    "test_cpython_email_parser_agrees": "uses CPython's email package",
    "test_southgate_parser_accepts_every_item": "southgate is a host tool",
}
UPY_TIMEOUT = 180


def _status(i):
    return 'ok "\u00e9" \\ \n' + str(i)


def _store(workdir, dps, **kw):
    return S.Store(workdir + "/st", dps, "cfg-main", **kw)


def _full_body(st, budget=exchange.MAX_BODY):
    body = exchange.compose(st, budget)
    data, sizes = mp.body_bytes(body)
    return body, data, sizes


def test_items_values_and_timestamps(workdir, store_datapoints):
    st = _store(workdir, store_datapoints)
    doubles = [21.5, 0.1 + 0.2, -1e-07, 1.5e300, 123456789.125, 2.0**60]
    for i in range(len(doubles)):
        st.append_sample(
            T0 + i,
            {
                "DP-Temperature": doubles[i],
                "DP-Count": -i,
                "DP-Total": 9007199254740993 + i,
                "DP-Open": i % 2 == 0,
                "DP-Status": _status(i),
                "DP-Seen": T0 - i,
            },
            quality="00000000" if i == 1 else None,
        )
    st.append_event(T0 + 10, 1, "error \u20ac", {"code": 7})
    st.append_event(T0 + 11, 30, "v2 warning")
    st.append_event(T0 + 12, "info", "plain", correlation_id="corr-1")
    payload = bytes(range(256)) * 5 + b"\r\n--not-a-boundary\r\n"
    with open(workdir + "/blob.bin", "wb") as f:
        f.write(payload)
    st.append_file_ref(T0 + 13, workdir + "/blob.bin", "blob.bin", "application/x-blob")
    st.close()
    # a second configuration: its samples go to their own item
    st = S.Store(workdir + "/st", [["DP-Other", "BOOLEAN"]], "cfg-second")
    st.append_sample(T0 + 20, {"DP-Other": False})
    st.append_sample(T0 + 21, {"DP-Other": True})

    body, data, _ = _full_body(st)
    assert body.sent == [8, 3, 1, 0] and body.records == 12
    items = mp.parse(data, body.content_type)
    kinds = [(m["payload"]["type"], m["payload"]["version"]) for m, _, _ in items]
    assert kinds == [
        ("standardTimeSeries", "1.0"),
        ("businessEvent", "1.0"),
        ("businessEvent", "2.0"),
        ("file", "1.0"),
        ("standardTimeSeries", "1.0"),
    ], kinds
    meta, ct, ts_payload = items[0]
    assert meta == {"type": "item", "version": "1.0",
                    "payload": {"type": "standardTimeSeries", "version": "1.0",
                                "details": {"configurationId": "cfg-main"}}}
    assert data.count(b'{"type":"item","version":"1.0","payload":{"type":"standardTimeSeries"') == 2
    series = json.loads(ts_payload)
    assert len(series) == 6  # several timestamps in one item
    for i in range(6):
        elem = series[i]
        assert elem["timestamp"] == clock.iso_ms(T0 + i)
        v = {}
        for x in elem["values"]:
            assert isinstance(x["value"], str) and isinstance(x["qualityCode"], str)
            assert x["qualityCode"] == ("00000000" if i == 1 else "0")
            v[x["dataPointId"]] = x["value"]
        assert float(v["DP-Temperature"]) == doubles[i]  # DOUBLE text round-trips
        assert v["DP-Count"] == str(-i) and v["DP-Total"] == str(9007199254740993 + i)
        assert v["DP-Open"] == ("true" if i % 2 == 0 else "false")
        assert v["DP-Status"] == _status(i)
        assert v["DP-Seen"] == clock.iso_ms(T0 - i)
        assert "DP-Log" not in v
    assert json.loads(items[4][2]) == [
        {"timestamp": clock.iso_ms(T0 + 20),
         "values": [{"dataPointId": "DP-Other", "value": "false", "qualityCode": "0"}]},
        {"timestamp": clock.iso_ms(T0 + 21),
         "values": [{"dataPointId": "DP-Other", "value": "true", "qualityCode": "0"}]},
    ]
    ev1 = json.loads(items[1][2])
    ev2 = json.loads(items[2][2])
    assert [e["severity"] for e in ev1] == [1, 3] and [e["severity"] for e in ev2] == [30]
    assert ev1[0]["description"] == "error \u20ac" and ev1[0]["details"] == {"code": 7}
    assert ev1[0]["timestamp"] == clock.iso_ms(T0 + 10) and ev1[0]["type"] == "MindSphereStandardEvent"
    assert ev1[1]["correlationId"] == "corr-1" and "correlationId" not in ev1[0]
    assert len(ev1[0]["id"]) == 36 and ev1[0]["id"][14] == "4"
    fmeta, fct, fdata = items[3]
    assert fct == "application/octet-stream" and fdata == payload
    assert fmeta["payload"]["details"] == {"fileName": "blob.bin", "creationDate": clock.iso_ms(T0 + 13),
                                           "fileType": "application/x-blob"}
    framing = data.replace(payload, b"")
    assert framing.count(b"\n") == framing.count(b"\r\n") and b"\r\r" not in framing  # CRLF only


def test_write_to_repeats_exactly_through_one_small_buffer(workdir):
    st = _store(workdir, [["DP-V", "DOUBLE"]])
    for i in range(300):
        st.append_sample(T0 + i, {"DP-V": i / 7})
    body = exchange.compose(st, 1 << 20, buf_size=4096)  # asks for too much: capped at 2 KiB
    seen = []

    def write(chunk):
        assert len(chunk) <= exchange.MAX_BUF
        if not is_micropython():
            seen.append(chunk.obj)
        return None

    body.write_to(write)
    first, sizes = mp.body_bytes(body)
    again, _ = mp.body_bytes(body)
    assert first == again and len(first) == body.length
    assert max(sizes) <= exchange.MAX_BUF
    if seen:
        assert all(o is seen[0] for o in seen)  # one buffer, reused for every chunk
    st.append_sample(T0, {"DP-V": 1.0})  # new records after compose are not in this body
    assert mp.body_bytes(body)[0] == first
    # each body has its own boundaries
    assert exchange.compose(st, 1 << 20).content_type != body.content_type


def _filled(workdir, name, n):
    st = S.Store(workdir + "/" + name, [["DP-Seq", "INT"], ["DP-Pad", "STRING"]], "cfg-main",
                 segment_bytes=1024, capacity_bytes=1 << 20)
    for i in range(n):
        st.append_sample(T0 + i, {"DP-Seq": i, "DP-Pad": "p" * (i % 37)})
        if i % 40 == 0:
            st.append_event(T0 + i, 3, f"e{i}")
    return st


def test_budget_bounds_every_batch_and_covers_all_records_once(workdir):
    n = 150
    for budget in (700, 2000, 5000, 100000):
        st = _filled(workdir, f"b{budget}", n)
        got = []
        events = 0
        batches = 0
        while True:
            body = exchange.compose(st, budget)
            if body is None:
                break
            data, _ = mp.body_bytes(body)
            assert body.length <= budget or body.records == 1, (budget, body.length)
            for _, elem in mp.readings(mp.parse(data, body.content_type)):
                got.append(int(elem["values"][0]["value"]))
            events += body.sent[1]
            batches += 1
            st.ack(body.end, body.taken)
        assert got == list(range(n)) and events == 4, budget
        assert st.pending_count() == 0
        assert batches == 1 if budget == 100000 else batches > 1
    # a record larger than the budget still goes out, alone
    st = _filled(workdir, "tiny", 3)
    body = exchange.compose(st, 10)
    assert body.records == 1 and body.length > 10
    assert exchange.compose(st, exchange.MAX_BODY * 4).length <= exchange.MAX_BODY


def test_missing_file_is_skipped_not_sent(workdir):
    st = _store(workdir, [["DP-V", "INT"]])
    with open(workdir + "/gone.bin", "wb") as f:
        f.write(b"x")
    st.append_file_ref(T0, workdir + "/gone.bin")
    import os

    os.remove(workdir + "/gone.bin")
    body = exchange.compose(st)
    assert body.files_missing == 1 and body.items == 0 and body.length == 0
    st.append_sample(T0, {"DP-V": 1})
    body = exchange.compose(st)
    assert body.files_missing == 1 and body.sent[0] == 1 and body.items == 1
    mp.parse(mp.body_bytes(body)[0], body.content_type)


def test_cpython_email_parser_agrees(workdir, store_datapoints):
    import email.parser
    import email.policy

    st = _store(workdir, store_datapoints)
    for i in range(20):
        st.append_sample(T0 + i, {"DP-Temperature": i + 0.5, "DP-Status": f"s{i}"})
    st.append_event(T0, 2, "warn")
    with open(workdir + "/f.bin", "wb") as f:
        f.write(b"\x00\xff" * 300)
    st.append_file_ref(T0, workdir + "/f.bin")
    body, data, _ = _full_body(st)
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + body.content_type.encode() + b"\r\n\r\n" + data
    )
    assert msg.is_multipart() and msg.get_content_type() == "multipart/mixed"
    assert not msg.defects, msg.defects
    parts = msg.get_payload()
    assert len(parts) == 3
    for part in parts:
        assert part.get_content_type() == "multipart/related" and not part.defects
        meta, payload = part.get_payload()
        assert meta.get_content_type() == "application/vnd.siemens.mindsphere.meta+json"
        json.loads(meta.get_payload())
    series = json.loads(parts[0].get_payload()[1].get_payload())
    assert [e["values"][0]["value"] for e in series] == [str(i + 0.5) for i in range(20)]
    assert parts[2].get_payload()[1].get_payload(decode=True) == b"\x00\xff" * 300


def test_southgate_parser_accepts_every_item(workdir, store_datapoints):
    try:
        from southgate import multipart
    except ImportError as e:  # the service is another area's work in progress
        raise Skip(f"southgate not importable: {e}") from None
    st = _store(workdir, store_datapoints)
    for i in range(30):
        st.append_sample(T0 + i, {"DP-Temperature": i / 3, "DP-Count": i, "DP-Open": i % 2 == 1,
                                  "DP-Status": "\u00e9" * i, "DP-Seen": T0, "DP-Total": -i})
    st.append_event(T0, 1, "e1", {"a": [1, 2]})
    st.append_event(T0, 40, "e2", correlation_id="c")
    with open(workdir + "/f.bin", "wb") as f:
        f.write(b"\r\n--" * 100)
    st.append_file_ref(T0, workdir + "/f.bin", "f.bin", "text/plain")
    body, data, _ = _full_body(st)
    items = multipart.parse_exchange(body.content_type, data)
    assert len(items) == 4
    # fed in the composer's own chunks, as the server's streaming parser sees them
    parser = multipart.ExchangeParser(body.content_type)
    got = []
    body.write_to(lambda c: got.extend(parser.feed(bytes(c))))
    got.extend(parser.finish())
    assert len(got) == 4


def _heap_run(workdir, n):
    """Peak live heap (bytes above the baseline) while composing and writing a body of n readings."""
    import gc

    st = _store(f"{workdir}/h{n}", [["DP-V", "DOUBLE"], ["DP-N", "INT"]], commit_every=500,
                capacity_bytes=4 << 20)
    for i in range(n):
        st.append_sample(T0 + i, {"DP-V": i * 0.25, "DP-N": i})
    st.commit()
    st.pending_count()
    gc.collect()
    if is_micropython():
        base = gc.mem_alloc()
        measure = gc.mem_alloc
    else:
        import tracemalloc

        tracemalloc.start()
        base = 0

        def measure():
            return tracemalloc.get_traced_memory()[0]

    peak = [0]
    calls = [0]
    total = [0]

    def write(chunk):
        total[0] += len(chunk)
        calls[0] += 1
        if calls[0] % 16 == 0:
            gc.collect()
            peak[0] = max(peak[0], measure() - base)

    body = exchange.compose(st, exchange.MAX_BODY)
    assert body.sent[0] == n
    gc.collect()
    after_plan = measure() - base
    body.write_to(write)
    gc.collect()
    peak[0] = max(peak[0], measure() - base)
    if not is_micropython():
        tracemalloc.stop()
    assert total[0] == body.length
    return after_plan, peak[0], body.length


def test_heap_stays_flat_with_the_backlog(workdir):
    small = _heap_run(workdir, 100)
    big = _heap_run(workdir, 10000)
    who = "upy" if is_micropython() else "py"
    print(f"heap ({who}): 100 readings: plan {small[0]} B, peak live {small[1]} B (body {small[2]} B); "
          f"10000 readings: plan {big[0]} B, peak live {big[1]} B (body {big[2]} B)")
    assert big[2] > 90 * small[2]
    # MicroPython's GC is conservative: a stale word on the stack may keep one dead chunk alive at the
    # moment of a reading, and where that happens differs between machines (CI read 6,144 B where this
    # one reads 5,952 B). A body that grew with the backlog would differ by far more than the slack.
    slack = 1024 if is_micropython() else 2048  # CPython's allocator and int caches add some noise
    assert big[0] - small[0] < slack, (small, big)
    assert big[1] - small[1] < slack, (small, big)
    if is_micropython():
        assert big[1] < 8192, big  # the 1 KiB buffer, a reader, an open file and a few small objects


def test_body_contract_on_an_empty_store(workdir):
    st = _store(workdir, [["DP-V", "INT"]])
    assert exchange.compose(st) is None
    if not hasattr(exchange, "DEFAULT_BUDGET"):
        raise Skip("no default budget")
    assert exchange.DEFAULT_BUDGET <= exchange.MAX_BODY


# -- custom data (record kind 4, mcagent.kind_custom) ------------------------------------------------------

CUSTOM = 4  # the kind's code (mcagent.kinds)


def test_custom_data_items_inline_and_from_a_file(workdir):
    st = _store(workdir, [["DP-V", "INT"]])
    spectrum = bytes(range(256)) * 3 + b"\r\n--mcagent\r\n\r\n\x00\xff"
    big = b"\xa5\r\n" * 7000  # 21 KB: too big for a record, streamed from its file
    with open(workdir + "/big.bin", "wb") as f:
        f.write(big)
    st.append(CUSTOM, T0, "vibrationSpectrum", "1.0", spectrum, "application/octet-stream",
              {"axis": "x", "bins": 256})
    st.append_sample(T0 + 1, {"DP-V": 7})
    st.append(CUSTOM, T0 + 2, "rawCapture", "2.1", workdir + "/big.bin", "application/x-capture", None)
    st.append(CUSTOM, T0 + 3, "note", "1", b"", "text/plain; charset=utf-8", None)
    body, data, _ = _full_body(st)
    assert body.sent == [1, 0, 0, 3] and body.records == 4 and body.items == 4
    items = mp.parse(data, body.content_type)
    assert items[0] == ({"type": "item", "version": "1.0",
                         "payload": {"type": "vibrationSpectrum", "version": "1.0",
                                     "details": {"axis": "x", "bins": 256}}},
                        "application/octet-stream", spectrum)
    assert items[1][0]["payload"]["type"] == "standardTimeSeries"
    assert items[2] == ({"type": "item", "version": "1.0",
                         "payload": {"type": "rawCapture", "version": "2.1"}}, "application/x-capture", big)
    assert items[3] == ({"type": "item", "version": "1.0", "payload": {"type": "note", "version": "1"}},
                        "text/plain; charset=utf-8", b"")
    st.ack(body.end, body.taken)
    assert st.pending_count() == 0 and st.stats()["pending_custom"] == 0


def test_custom_data_is_checked_before_anything_is_written(workdir):
    st = _store(workdir, [["DP-V", "INT"]])
    bad = [
        ("", "1.0", b"x", "application/octet-stream", None),  # empty type
        ("t" * 256, "1.0", b"x", "application/octet-stream", None),
        ("t", "", b"x", "application/octet-stream", None),
        ("t", "1.0", b"x", "text/plain\r\nX-Injected: 1", None),  # a header line break
        ("t", "1.0", b"x", "application/octet-stream", ["not", "a", "dict"]),
        ("t", "1.0", 12345, "application/octet-stream", None),  # neither bytes nor a path
        ("t", "1.0", workdir + "/missing.bin", "application/octet-stream", None),
        ("t", "1.0", b"x" * 5000, "application/octet-stream", None),  # does not fit a record: use a file
        ("t", "1.0", b"x", "binary", None),  # not type/subtype: the service refuses the item
        ("t", "1.0", b"x", "text/plain; charset", None),
        ("t", "1.0", b"x", "multipart/mixed; boundary=x", None),  # would be read as more parts
        ("file", "1.0", b"x", "application/octet-stream", None),  # the exchange's own item types
        ("standardTimeSeries", "1.0", b"x", "application/json", None),
    ]
    for args in bad:
        try:
            st.append(CUSTOM, T0, *args)
        except S.StoreError:
            pass
        else:
            raise AssertionError("accepted %r" % (args[:2],))
    assert st.pending_count() == 0 and st.appended == 0
    for code in (0, 5, True, "4"):  # no such kind: refused, nothing written (a kind byte 0 would end the log)
        try:
            st.append(code, T0, "t", "1.0", b"x")
        except S.StoreError:
            pass
        else:
            raise AssertionError("kind %r accepted" % (code,))
    assert st.append(CUSTOM, T0, "t", "1.0", b"x", 'text/plain; charset="utf-8"; format=flowed')
    assert st.appended == 1


def test_a_vanished_custom_data_file_is_counted_not_sent(workdir):
    import os

    st = _store(workdir, [["DP-V", "INT"]])
    with open(workdir + "/gone.bin", "wb") as f:
        f.write(b"data")
    st.append(CUSTOM, T0, "t", "1.0", workdir + "/gone.bin", "application/octet-stream", None)
    st.append_sample(T0 + 1, {"DP-V": 1})
    os.remove(workdir + "/gone.bin")
    body, data, _ = _full_body(st)
    assert body.files_missing == 1 and body.sent == [1, 0, 0, 0] and body.taken == [1, 0, 0, 1]
    assert [m["payload"]["type"] for m, _, _ in mp.parse(data, body.content_type)] == ["standardTimeSeries"]
