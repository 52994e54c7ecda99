"""Pending store records -> the multipart/mixed body of POST /api/mindconnect/v3/exchange
(docs/protocol.md §D).

Why two passes: the body is never held in RAM. `compose()` reads the pending records once to decide where
the batch ends (byte budget) and to compute the exact Content-Length; `Body.write_to(write)` reads the same
records again and writes the bytes as pieces of at most MAX_BUF (or through one reused buffer). Both passes
run the same emitters, so the count and the bytes cannot disagree; write_to can be repeated (a retry) and
gives the same bytes.

Layout (strict RFC 2046: CRLF, no preamble, no epilogue, compact JSON), one item per group of records:
    --M CRLF Content-Type: multipart/related;boundary=R CRLF CRLF
    --R CRLF Content-Type: application/vnd.siemens.mindsphere.meta+json CRLF CRLF <meta JSON>
    CRLF --R CRLF Content-Type: <payload type> CRLF CRLF <payload> CRLF --R-- CRLF
    ... next item ... --M--
Groups: one standardTimeSeries item per configuration id (several timestamps each), one businessEvent item
per event version (1.0: severity 1/2/3, 2.0: 20/30/40), one `file` item per file (bytes streamed from
flash). Boundaries are random per body (os.urandom); inner ones ("mcpart<hex>x<i>") never start with the
outer one ("mcagent<hex>").

Heap: this module is resident for a whole flush, so it keeps only what time series and events need. File
items and error texts are in mcagent.exchangecold, loaded per use; the buffered writer (buf_size > 0) in
mcagent.exchangebuf. The body object follows the streaming body contract of http.py: `.length`,
`.content_type`, `.write_to`.
"""

from binascii import hexlify

from micropython import const

from mcagent import cjson, clock, compat
from mcagent.store import Reader

# Default batch budget: see docs/store-format.md ("Batch budget") for the measurement behind it.
DEFAULT_BUDGET = const(65536)
MAX_BODY = const(10485760)  # the service answers 413 above 10 MiB
MAX_BUF = const(2048)
_DEFAULT_BUF = const(1024)

_SAMPLE = const(1)  # store.KIND_*
_FILE = const(3)
_T_DOUBLE = const(1)
_T_BOOL = const(4)
_T_STRING = const(5)
_T_BIG_STRING = const(6)
_T_TIMESTAMP = const(7)


class BodyError(OSError):
    """The records or a file changed between the length pass and the write pass: compose again."""


def _cold(fn, *args):
    return compat.call_cold("mcagent.exchangecold", fn, *args)


class _Out:
    """put(data): counts bytes (write=None) or hands each piece to write as it is, in slices of at most
    MAX_BUF: the HTTP connection's own buffer coalesces them, so an upload needs no buffer of its own."""

    def __init__(self, write=None):
        self.write = write
        self.total = 0

    def __call__(self, data):
        if isinstance(data, str):
            data = data.encode()
        n = len(data)
        self.total += n
        w = self.write
        if w:
            if n <= MAX_BUF:
                w(data)
            else:
                data = memoryview(data)
                for i in range(0, n, MAX_BUF):
                    w(data[i : i + MAX_BUF])


def _key(rec):
    """Which item a record goes in: its Config (a sample), its event version (True: 2.0), None (a file)."""
    k = rec.kind
    return rec.cfg if k == _SAMPLE else None if k == _FILE else rec.buf[24] >= 20  # the severity byte


def _element(put, rec):
    """One array element of a standardTimeSeries (a sample) or businessEvent (an event) payload."""
    if rec.kind == _SAMPLE:
        ts, quality, values = rec.sample(True)
        cfg = rec.cfg
        q = ',"qualityCode":%s}' % cjson.quote(quality)
        put('{"timestamp":"%s","values":[' % clock.iso_ms(ts))
        sep = b'{"dataPointId":'
        for dp_id, t, v in values:
            put(sep)
            sep = b',{"dataPointId":'
            put(cfg.qids[cfg.index[dp_id]])
            put(b',"value":')
            if t == _T_STRING or t == _T_BIG_STRING:
                # A run of UTF-8 bytes in the record, streamed: a long string is never copied whole.
                put(b'"')
                start = 0
                for i in range(len(v)):
                    c = v[i]
                    if c == 34 or c == 92 or c < 32:  # escaped as cjson.quote does
                        put(v[start:i])
                        k = '"\\\n\r\t'.find(chr(c))
                        put("\\" + '"\\nrt'[k] if k >= 0 else "\\u%04x" % c)
                        start = i + 1
                put(v[start:])
                put(b'"')
            else:
                if t == _T_DOUBLE:
                    v = repr(v)  # shortest text that reads back as the same double
                elif t == _T_BOOL:
                    v = "true" if v else "false"
                elif t == _T_TIMESTAMP:
                    v = clock.iso_ms(v)
                put('"%s"' % v)
            put(q)
        put(b"]}")
        return
    ts, eid, severity, desc, details, corr = rec.event()
    h = hexlify(eid)  # the id was drawn when the event was recorded: retries keep it
    put(b'{"id":"%s-%s-%s-%s-%s"' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
    if corr:
        put(',"correlationId":' + cjson.quote(corr))
    put(',"timestamp":"%s","severity":%d,"description":%s,"type":"MindSphereStandardEvent","version":"1.0",'
        '"details":' % (clock.iso_ms(ts), severity, cjson.quote(desc)))
    put(details)
    put(b"}")


class Body:
    """One exchange request body over the store records [start, end); see the module docstring.

    Attributes: length, content_type, start, end (positions for store.ack), readings, events, files,
    files_missing, records (all records covered), items (0: nothing to send, just acknowledge).
    groups: [kind, key, meta, path, size] per item, key as _key gives it.
    """

    def __init__(self, store, budget, buf_size):
        """The length pass: take records while the body stays within budget (the first always fits)."""
        self.store = store
        self.start = self.end = store.cursor
        self._buf_size = buf_size
        self._buf = None
        hx = hexlify(compat.urandom(16))
        self.outer = b"mcagent" + hx
        self._inner = b"mcpart" + hx + b"x"
        self.content_type = "multipart/mixed; boundary=" + self.outer.decode()
        groups = self.groups = []
        n = [0, 0, 0, 0]  # readings, events, files, vanished files
        put = _Out()
        total = 4 + len(self.outer)  # the close delimiter "--M--"
        last_ts = None
        r = Reader(store, self.start)
        try:
            while True:
                rec = r.next()
                if rec is None:
                    break
                kind = rec.kind
                key = _key(rec)
                if kind == _SAMPLE:
                    # Sample timestamps rise strictly within a batch: a reading recorded twice (same data
                    # point and time) goes in the next batch, never twice in one exchange (the service
                    # refuses that); the later one wins there, as the service keeps the last value.
                    ts = rec.ts()
                    if last_ts is not None and ts <= last_ts:
                        break
                    last_ts = ts
                put.total = 0
                new = None
                if kind == _FILE:
                    g = new = _cold("file_group", rec)
                    if g is None:  # vanished: taken off the store, reported by the uploader
                        n[3] += 1
                        self.end = rec.end
                        continue
                    put.total = g[4]
                else:
                    for g in groups:
                        if g[1] is key:
                            put(b",")
                            break
                    else:
                        if kind == _SAMPLE:
                            meta = (b"standardTimeSeries", b"1",
                                    b'"configurationId":' + cjson.quote(key.configuration_id).encode())
                        else:
                            meta = (b"businessEvent", b"2" if key else b"1", b"")
                        g = new = [kind, key, b'{"type":"item","version":"1.0","payload":{"type":"%s",'
                                   b'"version":"%s.0","details":{%s}}}' % meta, None, 0]
                    _element(put, rec)
                if new:
                    self._frame(put, len(groups), g, True)
                    self._frame(put, len(groups), g, False)
                if groups and total + put.total > budget:
                    break
                total += put.total
                if new:
                    groups.append(g)
                n[kind - 1] += 1
                self.end = rec.end
        finally:
            r.close()
        self.readings, self.events, self.files, self.files_missing = n
        self.records = sum(n)
        self.items = len(groups)
        self.length = total if groups else 0

    def counts(self):
        """(readings, events, files) this batch takes off the store (vanished files included)."""
        return (self.readings, self.events, self.files + self.files_missing)

    def _frame(self, put, gi, g, head):
        """The framing of item gi before (head=True) or after its payload."""
        ib = self._inner + str(gi).encode()
        if head:
            put(b"--%s\r\nContent-Type: multipart/related;boundary=%s\r\n\r\n--%s\r\n"
                b"Content-Type: application/vnd.siemens.mindsphere.meta+json\r\n\r\n" % (self.outer, ib, ib))
            put(g[2])
            put(b"\r\n--%s\r\nContent-Type: application/%s"
                % (ib, b"octet-stream\r\n\r\n" if g[0] == _FILE else b"json\r\n\r\n["))
        else:
            put(b"%s\r\n--%s--\r\n" % (b"" if g[0] == _FILE else b"]", ib))

    def write_to(self, write):
        """Write the body: exactly self.length bytes, in chunks of at most MAX_BUF (or the buffer size)."""
        groups = self.groups
        if not groups:
            return
        b = None
        if self._buf_size:
            if self._buf is None:
                self._buf = bytearray(self._buf_size)  # kept for a retry: one buffer per body
            b = write = compat.load("mcagent.exchangebuf").Buffer(self._buf, write)
            compat.unload("mcagent.exchangebuf")  # b keeps what it needs
        put = _Out(write)
        for gi in range(len(groups)):
            g = groups[gi]
            self._frame(put, gi, g, True)
            if g[0] == _FILE:
                _cold("put_file", put, g[3], g[4], b)
            else:
                sep = b""
                r = Reader(self.store, self.start, self.end)
                try:
                    while True:
                        rec = r.next()
                        if rec is None:
                            break
                        if _key(rec) is g[1]:
                            put(sep)
                            sep = b","
                            _element(put, rec)
                finally:
                    r.close()
            self._frame(put, gi, g, False)
        put(b"--%s--" % self.outer)
        if b:
            b.flush()
        if put.total != self.length:
            _cold("changed", put.total, self.length)


def compose(store, budget=DEFAULT_BUDGET, buf_size=_DEFAULT_BUF):
    """The next batch of pending records as a Body, or None when nothing is pending.

    budget: upper bound of the body length in bytes (capped at 10 MiB); one record larger than the budget
    still goes out alone. buf_size: the write buffer (capped at 2 KiB), allocated once per body; 0: none,
    pieces go to write() as they are (for a writer that buffers, like http.Connection).
    """
    store.commit()
    body = Body(store, min(budget, MAX_BODY), min(buf_size, MAX_BUF))
    if body.records:
        return body
    store._pending = [0, 0, 0]  # nothing left after the cursor: the store knows it without a rescan
    return None
