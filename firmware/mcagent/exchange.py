"""Pending store records -> the multipart/mixed body of POST /api/mindconnect/v3/exchange
(docs/protocol.md §D).

Why two passes: the body is never held in RAM. `compose()` reads the pending records once to decide where
the batch ends (byte budget) and to compute the exact Content-Length; `Body.write_to(write)` reads the same
records again and writes the bytes through one reused buffer (<= 2 KiB). Both passes run the same emitters,
so the count and the bytes cannot disagree; write_to can be repeated (a retry) and gives the same bytes.

Layout (strict RFC 2046: CRLF, no preamble, no epilogue, compact JSON), one item per group of records:
    --M CRLF Content-Type: multipart/related;boundary=R CRLF CRLF
    --R CRLF Content-Type: application/vnd.siemens.mindsphere.meta+json CRLF CRLF <meta JSON>
    CRLF --R CRLF Content-Type: <payload type> CRLF CRLF <payload> CRLF --R-- CRLF
    ... next item ... --M--
Groups: one standardTimeSeries item per configuration id (several timestamps each), one businessEvent item
per event version (1.0: severity 1/2/3, 2.0: 20/30/40), one `file` item per file (bytes streamed from
flash). Boundaries are random per body (os.urandom); inner ones ("mcpart<hex>x<i>") never start with the
outer one ("mcagent<hex>").

The body object follows the streaming body contract of http.py: `.length`, `.content_type`, `.write_to`.
"""

from micropython import const

from mcagent import cjson, clock, compat
from mcagent.store import KIND_FILE, KIND_SAMPLE, Reader

# Default batch budget: see docs/store-format.md ("Batch budget") for the measurement behind it.
DEFAULT_BUDGET = const(65536)
MAX_BODY = const(10485760)  # the service answers 413 above 10 MiB
DEFAULT_BUF = const(1024)
MAX_BUF = const(2048)

_T_DOUBLE = const(1)
_T_BOOL = const(4)
_T_STRING = const(5)
_T_BIG_STRING = const(6)
_T_TIMESTAMP = const(7)
_HEX = b"0123456789abcdef"
_META = b'{"type":"item","version":"1.0","payload":{"type":"'


_ESCAPES = {34: b'\\"', 92: b"\\\\", 10: b"\\n", 13: b"\\r", 9: b"\\t"}  # as cjson.quote writes them


class BodyError(OSError):
    """The records or a file changed between the length pass and the write pass: compose again."""


class _Out:
    """Counts bytes (write=None), copies them through one buffer into write(chunk), or (buf=None) hands
    each piece to write as it is, in slices of at most MAX_BUF: the HTTP connection's own buffer
    coalesces them, so an upload needs no buffer of its own (one block less to find in a fragmented heap).
    """

    def __init__(self, buf=None, write=None):
        self.buf = buf
        self.mv = memoryview(buf) if buf is not None else None
        self.write = write
        self.pos = 0
        self.total = 0

    def put(self, data):
        if isinstance(data, str):
            data = data.encode()
        n = len(data)
        self.total += n
        if self.write is None:
            return
        if self.buf is None:
            if n <= MAX_BUF:
                self.write(data)
            else:
                mv = memoryview(data)
                for i in range(0, n, MAX_BUF):
                    self.write(mv[i : i + MAX_BUF])
            return
        pos = self.pos
        size = len(self.buf)
        if pos + n < size:
            self.mv[pos : pos + n] = data
            self.pos = pos + n
            return
        src = memoryview(data)
        i = 0
        while i < n:
            k = min(size - self.pos, n - i)
            self.mv[self.pos : self.pos + k] = src[i : i + k]
            self.pos += k
            i += k
            if self.pos == size:
                self.flush()

    def put_quoted(self, utf8):
        """A JSON string literal of UTF-8 bytes (a memoryview), escaped exactly as cjson.quote does, streamed
        in runs: a long string is never copied whole (the heap may not have one block that big)."""
        self.put(b'"')
        start = 0
        n = len(utf8)
        for i in range(n):
            c = utf8[i]
            if c == 34 or c == 92 or c < 32:
                if i > start:
                    self.put(utf8[start:i])
                self.put(_ESCAPES.get(c) or ("\\u%04x" % c).encode())
                start = i + 1
        if n > start:
            self.put(utf8[start:n])
        self.put(b'"')

    def flush(self):
        if self.pos and self.buf is not None:
            self.write(self.mv[: self.pos])
            self.pos = 0

    def put_file(self, path, size):
        """Stream size bytes of a file (no copy in RAM beyond the buffer)."""
        self.total += size
        if self.write is None:
            return
        self.flush()
        mv = self.mv
        if mv is None:  # direct mode: a buffer for this file only (files are rare, and need one)
            mv = memoryview(bytearray(min(size, MAX_BUF) or 1))
        try:
            f = open(path, "rb")
        except OSError:
            raise BodyError("file %s vanished before it was sent" % path)
        try:
            while size:
                k = f.readinto(mv[: min(size, len(mv))])
                if not k:
                    raise BodyError("file %s shrank before it was sent" % path)
                self.write(mv[:k])
                size -= k
        finally:
            f.close()


def _hex(b, dashes=()):
    out = bytearray()
    for i in range(len(b)):
        if i in dashes:
            out.append(45)  # "-"
        out.append(_HEX[b[i] >> 4])
        out.append(_HEX[b[i] & 15])
    return bytes(out)


def _element(out, rec):
    """One array element of a standardTimeSeries (a sample) or businessEvent (an event) payload."""
    if rec.kind == KIND_SAMPLE:
        ts, quality, values = rec.sample(True)
        qids = rec.cfg.qids
        index = rec.cfg.index
        q = cjson.quote(quality)
        out.put(b'{"timestamp":"')
        out.put(clock.iso_ms(ts))
        out.put(b'","values":[')
        sep = b'{"dataPointId":'
        for dp_id, t, v in values:
            out.put(sep)
            sep = b',{"dataPointId":'
            out.put(qids[index[dp_id]])
            out.put(b',"value":')
            if t == _T_STRING or t == _T_BIG_STRING:
                out.put_quoted(v)
            else:
                out.put(b'"')
                if t == _T_DOUBLE:
                    out.put(repr(v))  # shortest text that reads back as the same double
                elif t == _T_BOOL:
                    out.put(b"true" if v else b"false")
                elif t == _T_TIMESTAMP:
                    out.put(clock.iso_ms(v))
                else:
                    out.put(str(v))
                out.put(b'"')
            out.put(b',"qualityCode":')
            out.put(q)
            out.put(b"}")
        out.put(b"]}")
        return
    ts, eid, severity, desc, details, corr = rec.event()
    out.put(b'{"id":"')
    out.put(_hex(eid, (4, 6, 8, 10)))  # the id was drawn when the event was recorded: retries keep it
    if corr:
        out.put(b'","correlationId":')
        out.put(cjson.quote(corr))
        out.put(b',"timestamp":"')
    else:
        out.put(b'","timestamp":"')
    out.put(clock.iso_ms(ts))
    out.put(b'","severity":')
    out.put(str(severity))
    out.put(b',"description":')
    out.put(cjson.quote(desc))
    out.put(b',"type":"MindSphereStandardEvent","version":"1.0","details":')
    out.put(details)
    out.put(b"}")


def _size(path):
    import os

    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class Body:
    """One exchange request body over the store records [start, end); see the module docstring.

    Attributes: length, content_type, start, end (positions for store.ack), readings, events, files,
    files_missing, records (all records covered), items (0: nothing to send, just acknowledge).
    groups: [kind, key, meta, path, size] per item, key = the Config (samples) or the event version.
    """

    def __init__(self, store, start, buf_size):
        self.store = store
        self.start = self.end = start
        self.readings = self.events = self.files = self.files_missing = self.records = 0
        self.groups = []
        self.length = 0
        self._buf_size = buf_size
        self._buf = None
        hx = _hex(compat.urandom(16))
        self.outer = b"mcagent" + hx
        self._inner = b"mcpart" + hx + b"x"
        self.content_type = "multipart/mixed; boundary=" + self.outer.decode()

    @property
    def items(self):
        return len(self.groups)

    def counts(self):
        """(readings, events, files) this batch takes off the store (vanished files included)."""
        return (self.readings, self.events, self.files + self.files_missing)

    def _frame(self, out, gi, g, head):
        """The framing of item gi before (head=True) or after its payload."""
        ib = self._inner + str(gi).encode()
        if head:
            for part in (b"--", self.outer, b"\r\nContent-Type: multipart/related;boundary=", ib,
                         b"\r\n\r\n--", ib,
                         b"\r\nContent-Type: application/vnd.siemens.mindsphere.meta+json\r\n\r\n", g[2],
                         b"\r\n--", ib,
                         b"\r\nContent-Type: application/octet-stream\r\n\r\n" if g[0] == KIND_FILE
                         else b"\r\nContent-Type: application/json\r\n\r\n["):
                out.put(part)
        else:
            out.put(b"\r\n--" if g[0] == KIND_FILE else b"]\r\n--")
            out.put(ib)
            out.put(b"--\r\n")

    def _key(self, rec):
        return rec.cfg if rec.kind == KIND_SAMPLE else (1 if rec.buf[24] >= 20 else 0)  # severity byte

    def _plan(self, budget):
        """Length pass: take records while the body stays within budget (the first record always fits)."""
        count = _Out()
        total = 4 + len(self.outer)  # the close delimiter "--M--"
        groups = self.groups
        last_ts = None
        r = Reader(self.store, self.start)
        try:
            while True:
                rec = r.next()
                if rec is None:
                    break
                kind = rec.kind
                if kind == KIND_SAMPLE:
                    # Sample timestamps rise strictly within a batch: a reading recorded twice (same data
                    # point and time) goes in the next batch, never twice in one exchange (the service
                    # refuses that); the later one wins there, as the service keeps the last value.
                    ts = rec.ts()
                    if last_ts is not None and ts <= last_ts:
                        break
                    last_ts = ts
                count.total = 0
                g = None
                if kind == KIND_FILE:
                    ts, _, path, name, mime = rec.file()
                    size = _size(path)
                    if size < 0:
                        self.files_missing += 1
                        self.records += 1
                        self.end = rec.end
                        continue
                    g = [kind, None, b"".join((_META, b'file","version":"1.0","details":{"fileName":',
                                               cjson.quote(name).encode(), b',"creationDate":"',
                                               clock.iso_ms(ts).encode(), b'","fileType":',
                                               cjson.quote(mime).encode(), b"}}}")), path, size]
                    new = True
                    count.total = size
                else:
                    key = self._key(rec)
                    for cand in groups:
                        if cand[0] == kind and cand[1] == key:
                            g = cand
                            count.put(b",")
                            break
                    new = g is None
                    if new:
                        if kind == KIND_SAMPLE:
                            meta = (_META + b'standardTimeSeries","version":"1.0",'
                                    b'"details":{"configurationId":'
                                    + cjson.quote(key.configuration_id).encode() + b"}}}")
                        else:
                            meta = _META + (b'businessEvent","version":"2.0","details":{}}}' if key
                                            else b'businessEvent","version":"1.0","details":{}}}')
                        g = [kind, key, meta, None, 0]
                    _element(count, rec)
                if new:
                    self._frame(count, len(groups), g, True)
                    self._frame(count, len(groups), g, False)
                if self.records > self.files_missing and total + count.total > budget:
                    break
                total += count.total
                if new:
                    groups.append(g)
                if kind == KIND_SAMPLE:
                    self.readings += 1
                elif kind == KIND_FILE:
                    self.files += 1
                else:
                    self.events += 1
                self.records += 1
                self.end = rec.end
        finally:
            r.close()
        self.length = total if groups else 0

    def write_to(self, write):
        """Write the body: exactly self.length bytes, in chunks of at most the buffer size."""
        if not self.groups:
            return
        if self._buf is None and self._buf_size:
            self._buf = bytearray(self._buf_size)  # kept for a retry: one buffer per body
        out = _Out(self._buf, write)
        for gi in range(len(self.groups)):
            g = self.groups[gi]
            self._frame(out, gi, g, True)
            if g[0] == KIND_FILE:
                out.put_file(g[3], g[4])
            else:
                r = Reader(self.store, self.start, self.end)
                first = True
                try:
                    while True:
                        rec = r.next()
                        if rec is None:
                            break
                        if rec.kind == g[0] and self._key(rec) == g[1]:
                            if not first:
                                out.put(b",")
                            _element(out, rec)
                            first = False
                finally:
                    r.close()
            self._frame(out, gi, g, False)
        out.put(b"--")
        out.put(self.outer)
        out.put(b"--")
        out.flush()
        if out.total != self.length:
            raise BodyError("body changed between passes (%d of %d bytes)" % (out.total, self.length))


def compose(store, budget=DEFAULT_BUDGET, buf_size=DEFAULT_BUF):
    """The next batch of pending records as a Body, or None when nothing is pending.

    budget: upper bound of the body length in bytes (capped at 10 MiB); one record larger than the budget
    still goes out alone. buf_size: the write buffer (capped at 2 KiB), allocated once per body; 0: none,
    pieces go to write() as they are (for a writer that buffers, like http.Connection).
    """
    store.commit()
    body = Body(store, store.cursor, min(buf_size, MAX_BUF))
    body._plan(min(budget, MAX_BODY))
    if body.records:
        return body
    store._pending = [0, 0, 0]  # nothing left after the cursor: the store knows it without a rescan
    return None
