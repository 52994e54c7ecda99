"""The upload loop against a fake connection: 200, 401, 413, 429, 5xx/transport backoff, 400 quarantine."""

import json
import os

import multipart_check as mp
from mcagent import exchange, uploader
from mcagent import store as S

T0 = 1714564800000


class FakeResp:
    def __init__(self, status, headers=None, body=b""):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.truncated = False


class FakeConn:
    """Follows the http.Connection contract; consumes streaming bodies like the real one (twice, to check
    that a retry of write_to gives the same bytes). script: statuses, (status, headers[, body]) or
    exceptions to raise, in order; then 200. limit: answer 413 to bodies longer than this."""

    def __init__(self, script=(), limit=None):
        self.script = list(script)
        self.limit = limit
        self.requests = []
        self.bodies = []
        self.accepted = []
        self.closed = 0

    def request(self, method, path, headers=None, body=None, max_body=4096):
        data, sizes = mp.body_bytes(body)
        assert mp.body_bytes(body)[0] == data
        assert max(sizes) <= exchange.MAX_BUF
        self.requests.append((method, path, dict(headers or {}), body.length, body.content_type))
        self.bodies.append(data)
        if self.limit is not None and body.length > self.limit:
            return FakeResp(413)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple):
            resp = FakeResp(*step)
        else:
            resp = FakeResp(step)
        if resp.status == 200:
            self.accepted.append(mp.parse(data, body.content_type))
        return resp

    def close(self):
        self.closed += 1

    def seqs(self):
        out = []
        for items in self.accepted:
            for _, elem in mp.readings(items):
                out.append(int(elem["values"][0]["value"]))
        return out

    def events(self):
        out = []
        for items in self.accepted:
            for meta, _, payload in items:
                if meta["payload"]["type"] == "businessEvent":
                    out.extend(json.loads(payload))
        return out


class FakeIdentity:
    """The identity contract: authorization() ("Bearer " + token()), invalidate_token() after a 401,
    observe(response)."""

    def __init__(self, fail=None):
        self.issued = 0
        self.forced = 0
        self.fail = fail
        self.stale = True

    def invalidate_token(self):
        self.forced += 1
        self.stale = True

    def authorization(self):
        return "Bearer " + self.token()

    def observe(self, resp):
        pass

    def token(self):
        if self.fail is not None:
            raise self.fail
        if self.stale:
            self.issued += 1
            self.stale = False
        return f"tok-{self.issued}"


class InvalidatingIdentity:
    """The identity.py flavour: invalidate_token() then token()."""

    def __init__(self):
        self.n = 1
        self.invalidated = 0

    def invalidate_token(self):
        self.invalidated += 1
        self.n += 1

    def authorization(self):
        return "Bearer " + self.token()

    def observe(self, resp):
        pass

    def token(self):
        return f"tok-{self.n}"


class FakeClock:
    def now_ms(self):
        return T0

    def now_s(self):
        return T0 // 1000


def _store(workdir, n, pad=0, **kw):
    st = S.Store(workdir + "/st", [["DP-Seq", "INT"], ["DP-Pad", "BIG_STRING"]], "cfg-up", **kw)
    for i in range(n):
        st.append_sample(T0 + i, {"DP-Seq": i, "DP-Pad": "x" * pad})
    st.commit()
    return st


def _uploader(st, conn, identity=None, **kw):
    sleeps = []
    kw.setdefault("sleep", sleeps.append)
    kw.setdefault("clock", FakeClock())
    up = uploader.Uploader(st, conn, identity or FakeIdentity(), **kw)
    return up, sleeps


def test_all_batches_go_and_leave_the_store_only_after_200(workdir):
    st = _store(workdir, 250, pad=20)
    st.append_event(T0, 2, "hello")
    with open(workdir + "/f.bin", "wb") as f:
        f.write(b"file-bytes" * 50)
    st.append_file_ref(T0, workdir + "/f.bin")
    conn = FakeConn()
    up, sleeps = _uploader(st, conn, budget=4000)
    s = up.flush()
    assert s["readings_sent"] == 250 and s["events_sent"] == 1 and s["files_sent"] == 1, s
    assert s["batches"] == len(conn.requests) > 5 and s["retries"] == 0 and s["error"] is None
    assert s["quarantined"] == 0 and s["dropped"] == 0 and s["pending"] == 0 and sleeps == []
    assert conn.seqs() == list(range(250))
    for method, path, headers, length, ctype in conn.requests:
        assert method == "POST" and path == "/api/mindconnect/v3/exchange"
        assert headers == {"Authorization": "Bearer tok-1"}
        assert length <= 4000 and ctype.startswith("multipart/mixed; boundary=")
    assert st.pending_count() == 0
    assert up.flush()["batches"] == 0  # nothing left


def test_the_batches_pause_heap_packing_and_the_flush_restores_it(workdir):
    """compat.pack_heap collects every ~1 KB of allocation (MicroPython); a flush's batches make only
    garbage, so they run without it, and the flush puts it back. A program's own threshold is kept."""
    from mcagent import compat

    seen = []

    class Watching(FakeConn):
        def request(self, *args, **kw):
            seen.append(compat.gc_threshold(None))
            return FakeConn.request(self, *args, **kw)

    before = compat.gc_threshold(None)
    try:
        compat.gc_threshold(-1)
        compat.pack_heap()
        packed = compat.gc_threshold(None)
        up, _ = _uploader(_store(workdir, 30), Watching(), budget=400)
        assert up.flush()["readings_sent"] == 30
        assert compat.gc_threshold(None) == packed
        assert len(seen) > 1 and seen == [-1 if compat.MICROPYTHON else None] * len(seen)
        if compat.MICROPYTHON:
            assert packed > 0
            compat.gc_threshold(4096)  # the program's own choice
            compat.pack_heap()
            assert compat.gc_threshold(None) == 4096
        else:
            assert packed is None  # CPython: heap is no concern
    finally:
        compat.gc_threshold(before)


def test_401_gets_a_new_token_and_retries_once(workdir):
    st = _store(workdir, 30)
    ident = FakeIdentity()
    conn = FakeConn([401])
    up, _ = _uploader(st, conn, ident)
    s = up.flush()
    assert s["readings_sent"] == 30 and s["retries"] == 1 and ident.forced == 1
    assert [r[2]["Authorization"] for r in conn.requests] == ["Bearer tok-1", "Bearer tok-2"]
    # the identity.py flavour
    st.append_sample(T0, {"DP-Seq": 30})
    ident2 = InvalidatingIdentity()
    conn = FakeConn([401])
    up, _ = _uploader(st, conn, ident2)
    assert up.flush()["readings_sent"] == 1 and ident2.invalidated == 1


def test_second_401_stops_and_keeps_the_data(workdir):
    st = _store(workdir, 30)
    conn = FakeConn([401, 401])
    up, _ = _uploader(st, conn)
    s = up.flush()
    assert s["readings_sent"] == 0 and "401" in s["error"] and s["pending"] == 30
    assert len(conn.requests) == 2 and st.pending_count() == 30
    assert _uploader(st, FakeConn())[0].flush()["readings_sent"] == 30


def test_413_halves_the_batch(workdir):
    st = _store(workdir, 200, pad=10)
    conn = FakeConn(limit=3000)
    up, _ = _uploader(st, conn, budget=40000)
    s = up.flush()
    assert s["readings_sent"] == 200 and s["retries"] >= 3 and s["error"] is None, s
    assert conn.seqs() == list(range(200))
    lengths = [r[3] for r in conn.requests]
    assert lengths[0] > 3000 and lengths[1] <= lengths[0] // 2
    assert all(x <= 3000 for x in lengths[-3:])


def test_413_for_a_single_record_quarantines_it(workdir):
    st = _store(workdir, 1, pad=3500)
    st.append_sample(T0, {"DP-Seq": 1, "DP-Pad": "y"})
    conn = FakeConn(limit=3000)
    up, _ = _uploader(st, conn)
    s = up.flush()
    assert s["quarantined"] == 1 and s["readings_sent"] == 1 and conn.seqs() == [1], s
    assert len(st.quarantined_files()) == 1


def test_429_waits_retry_after(workdir):
    st = _store(workdir, 10)
    conn = FakeConn([(429, {"retry-after": "7"}), (429, {"retry-after": "Tue, 01 May 2024 12:00:30 GMT"}),
                     (429, {"retry-after": "99999"}), 200])
    up, sleeps = _uploader(st, conn, retry_after_cap_s=600)
    s = up.flush()
    assert sleeps == [7, 30, 600] and s["retries"] == 3 and s["readings_sent"] == 10, (sleeps, s)


def test_5xx_and_transport_errors_back_off_with_full_jitter(workdir):
    st = _store(workdir, 10)
    conn = FakeConn([503, OSError(104, "reset"), 500, 200])
    up, sleeps = _uploader(st, conn, backoff_base_s=2, backoff_cap_s=5, rand=lambda: 0.5)
    s = up.flush()
    assert sleeps == [0.5 * 2, 0.5 * 4, 0.5 * 5], sleeps  # min(cap, base * 2**n), scaled by the jitter draw
    assert s["readings_sent"] == 10 and s["retries"] == 3 and conn.closed == 1
    # the jitter is a fresh draw in [0, ceiling) each time
    up, _ = _uploader(st, FakeConn(), backoff_base_s=1, backoff_cap_s=60)
    draws = [up.backoff_s(6) for _ in range(200)]
    assert 0 <= min(draws) and max(draws) < 60 and len(set(draws)) > 150


def test_persistent_5xx_gives_up_and_keeps_everything(workdir):
    st = _store(workdir, 10)
    conn = FakeConn([502] * 10)
    up, sleeps = _uploader(st, conn, max_tries=3, rand=lambda: 1.0, backoff_base_s=1, backoff_cap_s=100)
    s = up.flush()
    assert len(sleeps) == 3 and sleeps == [1.0, 2.0, 4.0] and "502" in s["error"] and "gave up" in s["error"]
    assert s["pending"] == 10 and st.pending_count() == 10 and len(conn.requests) == 4


def test_400_goes_to_quarantine_reports_and_carries_on(workdir):
    st = _store(workdir, 60, pad=30)
    conn = FakeConn([(400, {}, b'{"id":"x","message":"bad envelope"}')])
    up, _ = _uploader(st, conn, budget=1)  # one record per batch: the refused one is what a split isolates
    s = up.flush()
    first_batch = conn.bodies[0]
    names = st.quarantined_files()
    assert len(names) == 1
    with open(st.root + "/" + names[0], "rb") as f:
        assert f.read() == first_batch  # the exact rejected body, byte for byte
    q = s["quarantined"]
    assert q > 0 and s["readings_sent"] == 60 - q and s["error"] is None, s
    assert conn.seqs() == list(range(q, 60))
    events = conn.events()
    assert len(events) == 1 and "quarantine" in events[0]["description"] and events[0]["severity"] == 1
    assert events[0]["details"]["status"] == 400 and "bad envelope" in events[0]["details"]["message"]
    stats = st.stats()
    assert stats["quarantined_readings"] == q and stats["quarantined_batches"] == 1
    assert st.pending_count() == 0


def test_a_service_that_rejects_everything_does_not_make_us_loop(workdir):
    st = _store(workdir, 60, pad=30)
    conn = FakeConn([400] * 100)
    up, _ = _uploader(st, conn, budget=1)
    s = up.flush()
    assert "400" in s["error"] and len(conn.requests) == 4 and s["quarantined"] > 0
    assert len(st.quarantined_files()) == 3


def test_quarantine_is_capped(workdir):
    st = _store(workdir, 200, pad=1500, quarantine_bytes=5000)
    for _ in range(6):
        up, _ = _uploader(st, FakeConn([400]), budget=1)
        up.flush(max_batches=1)
    total = sum(os.stat(st.root + "/" + n)[6] for n in st.quarantined_files())
    assert total <= 5000 and st.stats()["quarantine_evicted"] > 0


def test_other_statuses_and_token_failures_stop_without_loss(workdir):
    st = _store(workdir, 5)
    s = _uploader(st, FakeConn([403]))[0].flush()
    assert s["error"] == "HTTP 403" and s["pending"] == 5
    s = _uploader(st, FakeConn([201]))[0].flush()  # only 200 acknowledges
    assert s["error"] == "HTTP 201" and s["pending"] == 5
    conn = FakeConn()
    s = _uploader(st, conn, FakeIdentity(fail=RuntimeError("not onboarded")))[0].flush()
    assert "not onboarded" in s["error"] and conn.requests == [] and s["pending"] == 5
    s = _uploader(st, conn, FakeIdentity(fail=OSError(113, "no route")), max_tries=2)[0].flush()
    assert "gave up" in s["error"] and s["retries"] == 2
    assert _uploader(st, FakeConn())[0].flush()["readings_sent"] == 5


def test_vanished_file_is_reported_not_retried(workdir):
    st = _store(workdir, 2)
    with open(workdir + "/gone.bin", "wb") as f:
        f.write(b"x")
    st.append_file_ref(T0, workdir + "/gone.bin")
    os.remove(workdir + "/gone.bin")
    conn = FakeConn()
    s = _uploader(st, conn)[0].flush()
    assert s["readings_sent"] == 2 and s["files_sent"] == 0 and s["pending"] == 0
    assert st.stats()["files_missing"] == 1
    assert "vanished" in conn.events()[0]["description"]


class HttpErrorLike(Exception):
    def __init__(self, status, retry_after=None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class FlakyIdentity(FakeIdentity):
    def __init__(self, errors):
        super().__init__()
        self.errors = list(errors)

    def token(self):
        if self.errors:
            raise self.errors.pop(0)
        return FakeIdentity.token(self)


def test_token_endpoint_weather_is_retried_other_errors_stop(workdir):
    st = _store(workdir, 4)
    ident = FlakyIdentity([HttpErrorLike(503), HttpErrorLike(429, 3), OSError(110, "timeout")])
    up, sleeps = _uploader(st, FakeConn(), ident, rand=lambda: 0.5, backoff_base_s=2)
    s = up.flush()
    assert s["readings_sent"] == 4 and s["retries"] == 3 and sleeps == [1.0, 3, 4.0], (s, sleeps)
    st.append_sample(T0, {"DP-Seq": 4})
    s = _uploader(st, FakeConn(), FlakyIdentity([HttpErrorLike(403)]))[0].flush()
    assert "403" in s["error"] and s["pending"] == 1


def test_a_file_that_became_a_directory_counts_as_vanished(workdir):
    """It cannot be streamed: counted as missing and reported, not a failed request at every flush (which
    would block the queue behind it)."""
    st = _store(workdir, 2)
    with open(workdir + "/photos", "wb") as f:
        f.write(b"x")
    st.append_file_ref(T0, workdir + "/photos")
    st.commit()
    os.remove(workdir + "/photos")
    os.mkdir(workdir + "/photos")
    s = _uploader(st, FakeConn())[0].flush()
    assert s["error"] is None and s["readings_sent"] == 2 and s["pending"] == 0, s
    assert st.stats()["files_missing"] == 1


def test_vanished_file_is_counted_once_even_when_its_batch_is_retried(workdir):
    st = _store(workdir, 1)
    with open(workdir + "/gone.bin", "wb") as f:
        f.write(b"x")
    st.append_file_ref(T0, workdir + "/gone.bin")
    os.remove(workdir + "/gone.bin")
    conn = FakeConn([503, 500])
    s = _uploader(st, conn)[0].flush()
    assert s["readings_sent"] == 1 and st.stats()["files_missing"] == 1
    assert len(conn.events()) == 1


def test_400_with_no_room_to_quarantine_drops_counts_and_carries_on(workdir):
    """A rejected batch that cannot be copied (flash full) is counted as dropped, not retried forever."""
    from mcagent import compat

    st = _store(workdir, 60, pad=30)
    conn = FakeConn([(400, {}, b'{"id":"x","message":"bad envelope"}')])
    up, _ = _uploader(st, conn, budget=1)
    real = compat.write_atomic

    def full(path, data=None, producer=None):
        if path.endswith(".mp"):
            with open(path + ".tmp", "wb") as f:
                f.write(b"partial")
            raise OSError(compat.enospc(), "no space")
        return real(path, data, producer)

    compat.write_atomic = full
    try:
        s = up.flush()
    finally:
        compat.write_atomic = real
    q = s["quarantined"]
    assert q > 0 and s["readings_sent"] == 60 - q and s["error"] is None, s
    assert st.quarantined_files() == [] and not [n for n in os.listdir(st.root) if n.endswith(".tmp")]
    stats = st.stats()
    assert stats["dropped_readings"] == q and stats["quarantine_evicted"] == 1, stats
    events = conn.events()
    assert len(events) == 1 and "no room" in events[0]["description"], events
    assert st.pending_count() == 0


class PickyConn(FakeConn):
    """A service that refuses (400) any body holding a poisoned value or a data point twice at one instant."""

    def request(self, method, path, headers=None, body=None, max_body=4096):
        data, _ = mp.body_bytes(body)
        if b"poison" in data:
            self.requests.append((method, path, dict(headers or {}), body.length, body.content_type))
            return FakeResp(400, {}, b'{"id":"x","message":"bad value"}')
        for items in [mp.parse(data, body.content_type)]:
            seen = set()
            for _, elem in mp.readings(items):
                for v in elem["values"]:
                    key = (elem["timestamp"], v["dataPointId"])
                    assert key not in seen, ("a reading twice in one exchange", key)
                    seen.add(key)
        return super().request(method, path, headers, body, max_body)


def test_one_refused_record_costs_no_neighbour(workdir):
    """A batch the service refuses with 400 is split until the one record it refuses goes alone: that one is
    quarantined (and reported), every other record is delivered, and later batches are full again."""
    st = S.Store(workdir + "/st", [["DP-Seq", "INT"], ["DP-Pad", "BIG_STRING"]], "cfg-up")
    for i in range(100):
        st.append_sample(T0 + i, {"DP-Seq": i, "DP-Pad": "poison" if i == 37 else "ok"})
    st.commit()
    conn = PickyConn()
    up, _ = _uploader(st, conn, budget=4000)
    s = up.flush()
    assert s["error"] is None and s["quarantined"] == 1 and s["readings_sent"] == 99, s
    assert sorted(conn.seqs()) == [i for i in range(100) if i != 37]
    assert len(st.quarantined_files()) == 1 and st.pending_count() == 0
    events = conn.events()
    assert (len(events) == 1 and events[0]["details"]["records"] == 1
            and "bad value" in events[0]["details"]["message"])
    assert len(conn.requests) < 15  # a handful of halvings, then full batches again


def test_a_refused_record_behind_a_vanished_file_is_quarantined_not_retried_forever(workdir):
    """A vanished file's record is taken, never sent: a refused batch of it and one reading holds one record
    the service saw, so that reading goes to quarantine instead of the same body going out again and again."""
    st = S.Store(workdir + "/st", [["DP-Seq", "INT"], ["DP-Pad", "BIG_STRING"]], "cfg-up")
    with open(workdir + "/gone.bin", "wb") as f:
        f.write(b"x")
    st.append_file_ref(T0, workdir + "/gone.bin")
    st.append_sample(T0 + 1, {"DP-Seq": 1, "DP-Pad": "poison"})
    st.commit()
    os.remove(workdir + "/gone.bin")
    conn = PickyConn()
    s = _uploader(st, conn)[0].flush()
    assert s["quarantined"] == 2 and st.stats()["files_missing"] == 1 and len(conn.requests) < 6, s
    assert st.stats()["quarantined_readings"] == 1


def test_a_batch_holds_at_most_eight_items(workdir):
    """Every custom data record is an item of its own, and an item's meta JSON is held until the body is
    sent: batches stop at eight, so a backlog of them costs no more heap than eight."""
    st = _store(workdir, 0)
    for i in range(20):
        st.append(4, T0 + i, "blob", "1.0", b"x" * 40, "application/octet-stream", {"n": i})
    st.commit()
    conn = FakeConn()
    s = _uploader(st, conn)[0].flush()
    assert s["error"] is None and s["custom_sent"] == 20 and s["batches"] == 3, s
    assert [sum(1 for _ in items) for items in conn.accepted] == [8, 8, 4]


def test_a_reading_recorded_twice_never_goes_twice_in_one_exchange(workdir):
    """The same data point at the same instant twice: each goes in its own exchange (the later value wins at
    the service), every distinct reading arrives, nothing is quarantined."""
    st = S.Store(workdir + "/st", [["DP-Seq", "INT"], ["DP-Pad", "BIG_STRING"]], "cfg-up")
    for i in range(50):
        st.append_sample(T0 + i, {"DP-Seq": i})
        if i == 20:
            st.append_sample(T0 + i, {"DP-Seq": 1000})  # recorded twice (a retry, a clock step back)
    st.commit()
    conn = PickyConn()
    s = _uploader(st, conn)[0].flush()
    assert s["error"] is None and s["quarantined"] == 0 and s["readings_sent"] == 51, s
    assert sorted(conn.seqs()) == sorted(list(range(50)) + [1000])
    assert len(conn.accepted) == 2
