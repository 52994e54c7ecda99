"""The flash log: round trips, recovery of torn/empty/garbage files, capacity policies, cursor, validation."""

import os

from checks import raises
from mcagent import compat, kind_sample, kinds
from mcagent import store as S

T0 = 1700000000000
KIND_SAMPLE, KIND_EVENT, KIND_FILE, KIND_CUSTOM = 1, 2, 3, 4  # codes (mcagent.kinds)
REC = 28  # one INT sample, quality "0": 4 header + 8 ts + 2 quality + 1 count + 9 value + 4 crc


def _ls(d):
    return sorted(os.listdir(d))


def _all(st, start=None, end=None):
    """Every pending record decoded: [(kind, decoded tuple)]."""
    out = []
    r = st.reader(start, end)
    while True:
        rec = r.next()
        if rec is None:
            break
        out.append((rec.kind, compat.load(kinds.MODULES[rec.kind - 1]).decode(rec)))
    return out


def _seqs(st):
    return [s[1][2][0][2] for s in _all(st) if s[0] == KIND_SAMPLE]


def _segfiles(d):
    return [n for n in _ls(d) if n.endswith(".seg")]


def _sample_store(d, n, **kw):
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", **kw)
    for i in range(n):
        st.append_sample(T0 + i, {"DP-Seq": i})
    st.commit()
    return st


def test_round_trip_every_type(workdir, store_datapoints):
    d = workdir + "/st"
    st = S.Store(d, store_datapoints, "cfg-1")
    values = {
        "DP-Temperature": 21.5,
        "DP-Count": -7,
        "DP-Total": 9007199254740993,
        "DP-Open": True,
        "DP-Status": "ok \u00e9\u20ac \"q\" \\ \n",
        "DP-Log": "x" * 2000,
        "DP-Seen": "2024-05-01T12:00:00.123Z",
    }
    assert st.append_sample(T0, values, quality="00000000")
    assert st.append_sample(T0 + 1, {"DP-Temperature": 0.1 + 0.2, "DP-Open": False, "DP-Count": None})
    assert st.append_event(T0 + 2, "warning", "door open", {"door": 3, "ok": False}, correlation_id="c-1")
    with open(workdir + "/pic.bin", "wb") as f:
        f.write(b"\x00\x01" * 100)
    assert st.append_file_ref(T0 + 3, workdir + "/pic.bin", mime="image/x-test")
    st.close()

    st = S.Store(d, store_datapoints, "cfg-1")
    recs = _all(st)
    assert [k for k, _ in recs] == [1, 1, 2, 3]
    ts, q, vals = recs[0][1]
    assert ts == T0 and q == "00000000"
    got = {}
    for dp, _t, v in vals:
        got[dp] = v
    assert got["DP-Temperature"] == 21.5 and got["DP-Count"] == -7 and got["DP-Total"] == 9007199254740993
    assert got["DP-Open"] is True and got["DP-Status"] == values["DP-Status"] and got["DP-Log"] == "x" * 2000
    assert got["DP-Seen"] == 1714564800123
    # values come back in configuration order whatever the dict order was
    assert [v[0] for v in vals] == [p[0] for p in store_datapoints]
    ts, q, vals = recs[1][1]
    assert ts == T0 + 1 and q == "0"
    assert vals == [("DP-Temperature", 1, 0.1 + 0.2), ("DP-Open", 4, False)]
    ts, eid, sev, desc, details, corr = recs[2][1]
    assert (ts, sev, desc, details, corr) == (T0 + 2, 2, "door open", '{"door":3,"ok":false}', "c-1")
    assert len(eid) == 16 and eid[6] >> 4 == 4
    assert recs[3][1] == (T0 + 3, 200, workdir + "/pic.bin", "pic.bin", "image/x-test")
    assert st.pending_count() == 4
    s = st.stats()
    assert (s["pending_readings"], s["pending_events"], s["pending_files"]) == (2, 1, 1)


def test_reopen_appends_to_the_same_segment(workdir):
    d = workdir + "/st"
    for i in range(5):
        st = S.Store(d, [["DP-Seq", "INT"]], "cfg")
        st.append_sample(T0 + i, {"DP-Seq": i})
        st.close()
    assert len(_segfiles(d)) == 1  # a board that wakes every few minutes must not burn a block per boot
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg")
    assert _seqs(st) == [0, 1, 2, 3, 4]


def test_rollover_and_reader_ranges(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 200, segment_bytes=512, capacity_bytes=64 * 512)
    assert len(_segfiles(d)) > 5
    for name in _segfiles(d):
        assert os.stat(d + "/" + name)[6] <= 512
    assert _seqs(st) == list(range(200))
    # a sub-range, read twice, gives the same records
    r = st.reader()
    for _ in range(50):
        r.next()
    mid = r.pos
    r.close()
    assert _seqs(st) == list(range(200))
    part = [x[1][2][0][2] for x in _all(st, None, mid)]
    assert part == list(range(50))
    assert [x[1][2][0][2] for x in _all(st, mid)] == list(range(50, 200))


def test_commit_every(workdir):
    d = workdir + "/st"
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg", commit_every=4)
    for i in range(10):
        st.append_sample(T0 + i, {"DP-Seq": i})
    assert st.committed == 8 and st.appended == 10 and st.commits == 2
    st.commit()
    assert st.committed == 10


def test_torn_tail_at_every_length(workdir):
    """Cut the last segment at every byte: recovery keeps exactly the whole records and stays appendable."""
    src = workdir + "/src"
    st = _sample_store(src, 12)
    st.close()
    seg = src + "/" + _segfiles(src)[0]
    with open(seg, "rb") as f:
        full = f.read()
    rec_len = (len(full) - 16) // 12
    for cut in range(len(full) + 1):
        d = f"{workdir}/t{cut}"
        os.mkdir(d)
        for name in os.listdir(src):
            with open(src + "/" + name, "rb") as f:
                data = f.read()
            if name.endswith(".seg"):
                data = data[:cut]
            with open(d + "/" + name, "wb") as f:
                f.write(data)
        st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
        whole = max(0, (cut - 16) // rec_len) if cut >= 16 else 0
        assert _seqs(st) == list(range(whole)), (cut, _seqs(st))
        st.append_sample(T0 + 99, {"DP-Seq": 99})
        st.close()
        st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
        assert _seqs(st) == list(range(whole)) + [99], cut
        for name in os.listdir(d):
            os.remove(d + "/" + name)
        os.rmdir(d)


def test_garbage_tail_and_flipped_bit(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 10)
    st.close()
    seg = d + "/" + _segfiles(d)[0]
    with open(seg, "ab") as f:
        f.write(b"\x01\x00\x10\x00" + b"\xee" * 9)  # a header promising 16 bytes, then too few
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    assert st.recovered["torn_repaired"] == 1 and _seqs(st) == list(range(10))
    st.close()
    with open(seg, "rb") as f:
        data = bytearray(f.read())
    data[16 + REC * 5 + 9] ^= 0x40  # a bit flip in record 5: the reader steps over it
    with open(seg, "wb") as f:
        f.write(data)
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    assert _seqs(st) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    data[16 + REC * 5 + 1] ^= 0x40  # and in its header's reserved byte: nothing after it can be framed
    with open(seg, "wb") as f:
        f.write(data)
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    assert _seqs(st) == [0, 1, 2, 3, 4]


def test_a_segment_left_only_as_its_rewrite_is_kept(workdir):
    """FAT renames over a file by deleting it first: a cut inside the tail repair's rename leaves only the
    rewritten copy (.seg.tmp, whole). Boot takes it for the segment instead of deleting it as junk."""
    d = workdir + "/st"
    st = _sample_store(d, 30)
    st.close()
    seg = d + "/" + _segfiles(d)[0]
    os.rename(seg, seg + ".tmp")
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    assert _seqs(st) == list(range(30)) and _segfiles(d) == [seg.rsplit("/", 1)[1]]


def test_boot_cleans_tmp_empty_and_foreign_files(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 3)
    st.close()
    for name, data in (
        ("00000007.seg", b""),  # created, never committed
        ("00000008.seg", b"MCS1\x08"),  # header cut short
        ("00000009.seg", b"not a segment at all, but longer than a header"),
        ("state.bin.tmp", b"half"),
        ("00000001.seg.tmp", b"x" * 40),
    ):
        with open(d + "/" + name, "wb") as f:
            f.write(data)
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    want = {"tmp_removed": 2, "empty_removed": 2, "torn_repaired": 0, "bad_moved": 1}
    assert st.recovered == want, st.recovered
    assert "q00000009.bad" in _ls(d)
    assert [n for n in _ls(d) if n.endswith(".tmp")] == []
    assert st.stats()["corrupt_segments"] == 1
    assert _seqs(st) == [0, 1, 2]
    st.append_sample(T0, {"DP-Seq": 3})
    st.close()
    assert _seqs(S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")) == [0, 1, 2, 3]


def test_cursor_survives_and_damaged_state_never_blocks_start(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 30, segment_bytes=256, capacity_bytes=64 * 256)
    r = st.reader()
    for _ in range(17):
        r.next()
    end = r.pos
    r.close()
    st.ack(end, (17, 0, 0))
    assert st.pending_count() == 13
    segs_after_ack = len(_segfiles(d))
    st.close()
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256, capacity_bytes=64 * 256)
    assert _seqs(st) == list(range(17, 30)) and st.pending_count() == 13
    assert len(_segfiles(d)) == segs_after_ack
    st.ack((0, 0))  # behind the cursor: nothing happens
    assert st.pending_count() == 13
    st.close()
    # FAT-style cut between delete and rename: only state.bin.tmp is left -> it is used
    os.rename(d + "/state.bin", d + "/state.bin.tmp")
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256, capacity_bytes=64 * 256)
    assert _seqs(st) == list(range(17, 30))
    assert "state.bin" in _ls(d)  # promoted before anything is deleted on its word
    st.close()
    # a damaged state file: start anyway, re-send (duplicates), never lose
    with open(d + "/state.bin", "wb") as f:
        f.write(b"\x00" * 64)
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256, capacity_bytes=64 * 256)
    assert set(range(17, 30)) <= set(_seqs(st))


def test_ack_deletes_spent_segments(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 100, segment_bytes=256)
    assert len(_segfiles(d)) > 5
    r = st.reader()
    while r.next() is not None:
        pass
    st.ack(r.pos, (100, 0, 0))
    assert len(_segfiles(d)) == 1 and st.pending_count() == 0
    st.append_sample(T0, {"DP-Seq": 100})
    assert _seqs(st) == [100]


def test_drop_oldest_counts_exactly(workdir):
    d = workdir + "/st"
    kw = {"segment_bytes": 256, "capacity_bytes": 4 * 256, "commit_every": 3}
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg", **kw)
    for i in range(40):  # not yet full
        assert st.append_sample(T0 + i, {"DP-Seq": i})
    r = st.reader()
    for _ in range(5):
        r.next()
    st.ack(r.pos, (5, 0, 0))
    r.close()
    st.append_event(T0, 3, "an event in the oldest data")
    for i in range(40, 200):
        assert st.append_sample(T0 + i, {"DP-Seq": i})
    st.commit()
    seqs = _seqs(st)
    s = st.stats()
    assert len(_segfiles(d)) == 4
    assert seqs == list(range(200 - len(seqs), 200)), seqs  # the newest survive, contiguous
    assert s["dropped_readings"] == 200 - 5 - len(seqs), s  # the acked 5 are not "dropped"
    assert s["dropped_events"] == 1
    st.close()
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg", **kw)
    assert st.stats()["dropped_readings"] == 200 - 5 - len(seqs)  # persisted


def test_stop_policy_refuses_and_counts(workdir):
    d = workdir + "/st"
    kw = {"segment_bytes": 256, "capacity_bytes": 3 * 256, "policy": "stop", "commit_every": 4}
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg", **kw)
    stored = []
    for i in range(100):
        if st.append_sample(T0 + i, {"DP-Seq": i}):
            stored.append(i)
    assert stored == list(range(len(stored))) and 0 < len(stored) < 100
    assert st.stats()["dropped_readings"] == 100 - len(stored)
    st.close()
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg", **kw)
    assert st.stats()["dropped_readings"] == 100 - len(stored)
    assert _seqs(st) == stored
    # acknowledging frees room: recording resumes
    r = st.reader()
    while r.next() is not None:
        pass
    st.ack(r.pos, (len(stored), 0, 0))
    assert st.append_sample(T0, {"DP-Seq": 1000})
    assert _seqs(st) == [1000]


def test_capacity_is_clamped_to_free_space(workdir):
    st = S.Store(workdir + "/st", (), None, capacity_bytes=1 << 40)
    assert 2 <= st.max_segments < (1 << 40) // 4096


def test_bad_input_is_refused_and_nothing_written(workdir, store_datapoints):
    d = workdir + "/st"
    st = S.Store(d, store_datapoints, "cfg-1")
    bad = [
        {},
        {"DP-Nope": 1},
        {"DP-Temperature": "21"},
        {"DP-Temperature": True},
        {"DP-Temperature": float("nan")},
        {"DP-Temperature": float("inf")},
        {"DP-Temperature": 10**400},  # past a double's range (CPython: OverflowError; MicroPython: inf)
        {"DP-Count": 1.5},
        {"DP-Count": 2147483648},
        {"DP-Count": False},
        {"DP-Total": 1 << 63},
        {"DP-Open": 1},
        {"DP-Status": b"bytes"},
        {"DP-Status": "x" * 256},
        {"DP-Log": "x" * 5000},
        {"DP-Seen": "yesterday"},
        {"DP-Count": None},
    ]
    for values in bad:
        raises(S.StoreError, st.append_sample, T0, values)
    e = raises(S.StoreError, st.append_sample, T0, {"DP-Temperature": 1.5, "DP-Count": 2147483648})
    assert e.dp_id == "DP-Count"  # the value refused, named: the runtime drops it and records the others
    raises(S.StoreError, st.append_sample, "now", {"DP-Count": 1})
    raises(S.StoreError, st.append_sample, -1, {"DP-Count": 1})
    raises(S.StoreError, st.append_sample, T0, {"DP-Count": 1}, "q" * 40)
    raises(S.StoreError, st.append_event, T0, 5, "x")
    raises(S.StoreError, st.append_event, T0, True, "x")
    raises(S.StoreError, st.append_event, T0, 1.0, "x")  # a float is no severity code (struct refuses it)
    os.mkdir(workdir + "/photos")
    e = raises(S.StoreError, st.append_file_ref, T0, workdir + "/photos")  # it could never be streamed
    assert "a directory" in str(e)
    raises(S.StoreError, st.append_event, T0, 1, "x" * 256)
    raises(S.StoreError, st.append_event, T0, 1, "x", ["not", "a", "dict"])
    raises(S.StoreError, st.append_event, T0, 1, "x", {1: "a key JSON has no form for"})
    raises(S.StoreError, st.append_file_ref, T0, workdir + "/missing.bin")
    assert st.pending_count() == 0 and st.appended == 0
    raises(S.StoreError, S.Store, d, [["A", "FLOAT"]], "c")
    raises(S.StoreError, S.Store, d, [["A", "INT"], ["A", "INT"]], "c")
    raises(S.StoreError, S.Store, d, [["A", "INT"]], None)
    raises(S.StoreError, S.Store, d, [], None, capacity_bytes=100)
    raises(S.StoreError, S.Store, d, [], None, policy="drop_newest")


def test_config_change_keeps_old_records_decodable(workdir):
    d = workdir + "/st"
    st = S.Store(d, [["DP-A", "INT"]], "cfg-old")
    st.append_sample(T0, {"DP-A": 1})
    st.close()
    dsc = {"configurationId": "cfg-new", "dataSources": [{"name": "s", "dataPoints": [
        {"id": "DP-B", "name": "b", "type": "DOUBLE", "unit": ""},
        {"id": "DP-A", "name": "a", "type": "INT", "unit": ""}]}]}
    st = S.Store(d, dsc)
    st.append_sample(T0 + 1, {"DP-A": 2, "DP-B": 2.5})
    st.close()
    st = S.Store(d, dsc)
    r = st.reader()
    got = []
    while True:
        rec = r.next()
        if rec is None:
            break
        got.append((rec.cfg.configuration_id, kind_sample.decode(rec)[2]))
    assert got == [("cfg-old", [("DP-A", 2, 1)]), ("cfg-new", [("DP-B", 1, 2.5), ("DP-A", 2, 2)])], got
    cfgs = [n for n in _ls(d) if n.endswith(".cfg")]
    assert len(cfgs) == 2
    # once the old segment is acknowledged, its config file goes at the next boot
    r = st.reader()
    r.next()
    st.ack(r.pos, (1, 0, 0))
    r.close()
    st.close()
    S.Store(d, dsc).close()
    assert len([n for n in _ls(d) if n.endswith(".cfg")]) == 1


def test_reader_skips_a_short_middle_segment(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 60, segment_bytes=256)
    st.close()
    names = _segfiles(d)
    mid = d + "/" + names[1]
    with open(mid, "rb") as f:
        data = f.read()
    with open(mid, "wb") as f:
        f.write(data[: 16 + REC * 2 + 7])  # keeps 2 whole records of this segment
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256)
    seqs = _seqs(st)
    per = (256 - 16) // REC
    assert seqs == list(range(per + 2)) + list(range(2 * per, 60)), seqs


def test_cold_code_is_released(workdir):
    """What an upload keeps loaded is mcagent.store alone: opening (storeboot), counting and reporting
    (storeinfo) load their code for the call; the append side (storewrite) goes with release_writer."""
    import sys

    d = workdir + "/st"
    _sample_store(d, 30).release_writer()
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    assert st.pending_count() == 30 and st.stats()["pending_readings"] == 30 and st.quarantined_files() == []
    st.ack(st.cursor)
    if sys.implementation.name == "micropython":  # compat.unload is a no-op on CPython
        cold = ("mcagent.storeboot", "mcagent.storeinfo", "mcagent.storewrite")
        assert [m for m in cold if m in sys.modules] == [], sys.modules
    e = raises(S.StoreError, st.append_sample, T0, {"DP-Seq": "x"})
    assert str(e) == "DP-Seq (INT): bad value 'x'", e  # the type name comes from cold code


class _NoCrc:
    """A binascii without crc32 (as some ports are built)."""


def test_crc32_fallback_matches():
    """Where binascii has no crc32, the store defines its own (only there: elsewhere it costs no heap)."""
    import sys

    import mcagent

    mods = sys.modules
    real, real_ba = mods.pop("mcagent.store"), mods.get("binascii")
    mods["binascii"] = _NoCrc()
    try:
        slow = __import__("mcagent.store", None, None, ("store",))
    finally:
        mods["mcagent.store"] = real
        mcagent.store = real
        if real_ba is None:
            mods.pop("binascii")
        else:
            mods["binascii"] = real_ba
    assert slow is not real and slow.crc32 is not real.crc32
    got = [slow.crc32(b"123456789"), slow.crc32(b"", 5), slow.crc32(b"6789", slow.crc32(b"12345"))]
    assert got[0] == 0xCBF43926 == S.crc32(b"123456789")
    assert got[1] == S.crc32(b"", 5) and got[2] == 0xCBF43926


def test_damaged_or_missing_older_segments_are_skipped(workdir):
    d = workdir + "/st"
    st = _sample_store(d, 60, segment_bytes=256)
    st.close()
    names = _segfiles(d)
    per = (256 - 16) // REC
    with open(d + "/" + names[1], "r+b") as f:
        f.write(b"XXXX")  # bit rot in the header of an older segment
    os.remove(d + "/" + names[3])  # and a gap
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256)
    want = [i for i in range(60) if not (per <= i < 2 * per or 3 * per <= i < 4 * per)]
    assert _seqs(st) == want
    r = st.reader()
    while r.next() is not None:
        pass
    st.ack(r.pos, None)
    assert st.pending_count() == 0 and len(_segfiles(d)) == 1


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 1]))


def _drain(st):
    r = st.reader()
    while r.next() is not None:
        pass
    r.close()
    return r


def test_a_damaged_record_costs_only_itself(workdir):
    """Bit rot in one record's payload, in an older segment and in the tail: its neighbours are read, boot
    keeps the tail whole and appends after it, and the damaged records are counted when acknowledged."""
    d = workdir + "/st"
    st = _sample_store(d, 30, segment_bytes=256)
    st.close()
    names = _segfiles(d)
    per = (256 - 16) // REC
    _flip(d + "/" + names[0], 16 + 3 * REC + 20)  # record 3's value
    _flip(d + "/" + names[-1], 16 + 1 * REC + 20)  # the tail's second record
    size = os.stat(d + "/" + names[-1])[6]
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256)
    assert st.recovered["torn_repaired"] == 0 and os.stat(d + "/" + names[-1])[6] == size
    lost = (3, (len(names) - 1) * per + 1)
    assert _seqs(st) == [i for i in range(30) if i not in lost]
    st.append_sample(T0 + 99, {"DP-Seq": 99})
    st.commit()
    assert _seqs(st)[-2:] == [29, 99]
    r = _drain(st)
    assert len(r.damaged) == 2
    st.ack(r.pos, None, len(r.damaged))
    assert st.counters["damaged_records"] == 2
    st.close()
    assert S.Store(d, [["DP-Seq", "INT"]], "cfg-seq", segment_bytes=256).counters["damaged_records"] == 2


def test_damage_behind_the_cursor_never_hides_new_records(workdir):
    """Records already delivered may rot (a damaged header ends a segment's framing): boot does not cut the
    tail short of the cursor, so what is appended after it is read and delivered."""
    for where in (20, 0):  # a payload byte, the header's kind byte
        d = "%s/st%d" % (workdir, where)
        st = _sample_store(d, 8)
        r = _drain(st)
        st.ack(r.pos, None)
        st.close()
        seg = d + "/" + _segfiles(d)[0]
        _flip(seg, 16 + 2 * REC + where)
        st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
        assert st.cursor == (1, 16 + 8 * REC) and os.stat(seg)[6] == 16 + 8 * REC, where
        for i in range(3):
            st.append_sample(T0 + 100 + i, {"DP-Seq": 100 + i})
        st.commit()
        assert _seqs(st) == [100, 101, 102], where


def test_wrapping_store_with_big_string_points_counts_every_reading(workdir):
    """Regression: with a BIG_STRING point the write buffer is shared with the readers' record buffer;
    dropping the oldest segment inside an append must not read over the record being appended."""
    for big in (False, True):
        root = workdir + ("/big" if big else "/small")
        points = [("t", "DOUBLE"), ("s", "BIG_STRING" if big else "STRING")]
        st = S.Store(root, points, "cfg1", capacity_bytes=3 * 4096, commit_every=1)
        n = 1200
        for i in range(n):
            st.append_sample(1700000000000 + i, {"t": float(i)})
        st.commit()
        r = st.reader()
        got = []
        while True:
            rec = r.next()
            if rec is None:
                break
            got.append(kind_sample.decode(rec)[2][0][2])
        r.close()
        dropped = st.stats()["dropped_readings"]
        assert len(got) + dropped == n, (big, len(got), dropped)
        assert got == [float(i) for i in range(dropped, n)], big


def test_custom_data_round_trip_and_counters(workdir):
    from mcagent import kind_custom

    d = workdir + "/st"
    st = S.Store(d, [["DP-V", "INT"]], "cfg-1", capacity_bytes=8192, segment_bytes=4096, policy="stop")
    with open(workdir + "/f.bin", "wb") as f:
        f.write(b"abc")
    assert st.append(KIND_CUSTOM, T0, "spectrum", "1.0", b"\x00\x01\r\n", "application/x-s", {"n": 1})
    assert st.append(KIND_CUSTOM, T0 + 1, "capture", "2.0", workdir + "/f.bin", "text/csv", None)
    st.commit()
    got = [v for k, v in _all(st) if k == KIND_CUSTOM]
    assert got == [(T0, "spectrum", "1.0", "application/x-s", {"n": 1}, b"\x00\x01\r\n", None),
                   (T0 + 1, "capture", "2.0", "text/csv", None, None, workdir + "/f.bin")], got
    assert kind_custom.decode  # the kind's own module decodes its records
    s = st.stats()
    assert (s["pending_readings"], s["pending_custom"], s["dropped_custom"]) == (0, 2, 0)
    while st.append(KIND_CUSTOM, T0 + 2, "fill", "1", b"x" * 1000, "application/octet-stream", None):
        pass
    assert st.stats()["dropped_custom"] == 1  # refused by the "stop" policy, counted by its kind's name
    st.close()
    st = S.Store(d, [["DP-V", "INT"]], "cfg-1", capacity_bytes=8192, segment_bytes=4096, policy="stop")
    assert st.stats()["dropped_custom"] == 1  # the counter survives a restart (state file)


def test_a_state_file_from_before_the_custom_kind_still_reads(workdir):
    """The state file had 10 counters and 8 reserved bytes: the two custom counters read those as 0."""
    import struct

    d = workdir + "/st"
    st = _sample_store(d, 3)
    st.ack(st.reader().next().end)
    st.close()
    b = bytearray(64)
    struct.pack_into("<4sII10I", b, 0, b"MCK1", st.cursor[0], st.cursor[1], 5, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    struct.pack_into("<I", b, 60, S.crc32(memoryview(b)[:60]))
    with open(d + "/state.bin", "wb") as f:
        f.write(b)
    st = S.Store(d, [["DP-Seq", "INT"]], "cfg-seq")
    s = st.stats()
    assert s["cursor"] == st.cursor and s["dropped_readings"] == 5 and s["dropped_custom"] == 0
    assert s["pending_readings"] == 2
