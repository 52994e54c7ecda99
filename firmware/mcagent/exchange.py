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
Items: the records' kind modules (mcagent.kinds) say which records share an item (`key`: time series per
configuration id, events per event version; a file or custom data record is an item of its own), the item's
meta and content type (`group`) and each record's part of a JSON array payload (`element`); a payload kept
in a file on flash (a file item, big custom data) is streamed from the file. A batch holds at most eight
items (each keeps its meta JSON until the body is sent). Boundaries are random per body
(os.urandom); inner ones ("mcpart<hex>x<i>") never start with the outer one ("mcagent<hex>").

Heap: this module is resident for a whole flush; a kind's module is loaded when a record of that kind is
first composed (a batch of time series loads only kind_sample). Streaming a file and error texts are in
mcagent.exchangecold, loaded per use; the buffered writer (buf_size > 0) in mcagent.exchangebuf. The
body object follows the streaming body contract of http.py: `.length`, `.content_type`, `.write_to`.
"""

from binascii import hexlify

from micropython import const

from mcagent import compat, kinds
from mcagent.store import Reader

# Default batch budget: see docs/store-format.md ("Batch budget") for the measurement behind it.
DEFAULT_BUDGET = const(65536)
MAX_BODY = const(10485760)  # the service answers 413 above 10 MiB
MAX_BUF = const(2048)
_DEFAULT_BUF = const(1024)
_MAX_ITEMS = const(8)  # items per batch: each keeps its meta JSON until sent (~350 B for a custom item)


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


class _Item:
    """One exchange item: records of kind code with equal key (mcagent.kinds), from position first on; meta
    JSON and payload content type (None: a JSON array of the records' elements); path and size of a file
    its payload streams from (path None: the elements)."""

    def __init__(self, code, key, first, group):
        self.code = code
        self.key = key
        self.first = first
        self.meta, self.ctype, self.path, self.size = group


class Body:
    """One exchange request body over the store records [start, end); see the module docstring.

    Attributes: length, content_type, start, end (positions for store.ack), sent (records delivered per
    kind, index = code - 1), taken (records the batch takes off the store per kind, vanished files
    included), files_missing (records whose file had vanished), records (all of them), items (0: nothing
    to send, just acknowledge). groups: an _Item per item.
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
        sent = self.sent = [0] * len(kinds.NAMES)
        taken = self.taken = [0] * len(kinds.NAMES)
        mods = self._mods = [None] * len(kinds.NAMES)
        put = _Out()
        total = 4 + len(self.outer)  # the close delimiter "--M--"
        last_ts = None
        r = Reader(store, self.start)
        try:
            while True:
                rec = r.next()
                if rec is None:
                    break
                code = rec.kind
                mod = kinds.module(code, mods)
                if getattr(mod, "RISING", False):
                    # Sample timestamps rise strictly within a batch: a reading recorded twice (same data
                    # point and time) goes in the next batch, never twice in one exchange (the service
                    # refuses that); the later one wins there, as the service keeps the last value.
                    ts = rec.ts()
                    if last_ts is not None and ts <= last_ts:
                        break
                    last_ts = ts
                key = mod.key(rec)
                put.total = 0
                for g in groups:
                    if g.code == code and g.key == key:
                        put(b",")
                        new = None
                        break
                else:
                    if len(groups) >= _MAX_ITEMS:  # so a batch's heap does not grow with a backlog of items
                        break
                    new = mod.group(rec)
                    if new is None:  # its file vanished: taken off the store, reported by the uploader
                        taken[code - 1] += 1
                        self.end = rec.end
                        continue
                    g = new = _Item(code, key, (rec.seq, rec.off), new)
                    self._frame(put, len(groups), g, True)
                    self._frame(put, len(groups), g, False)
                if g.path is None:
                    mod.element(put, rec)
                else:
                    put.total += g.size
                if groups and total + put.total > budget:
                    break
                total += put.total
                if new:
                    groups.append(g)
                sent[code - 1] += 1
                taken[code - 1] += 1
                self.end = rec.end
        finally:
            r.close()
        # damaged records inside the batch go with its acknowledgement, counted (store.ack)
        self.damaged = len([p for p in r.damaged if p <= self.end])
        self.records = sum(taken)
        self.files_missing = self.records - sum(sent)
        self.items = len(groups)
        self.length = total if groups else 0

    def _frame(self, put, gi, g, head):
        """The framing of item gi before (head=True) or after its payload (a JSON array without a type)."""
        ib = self._inner + str(gi).encode()
        if head:
            put(
                b"--%s\r\nContent-Type: multipart/related;boundary=%s\r\n\r\n--%s\r\n"
                b"Content-Type: application/vnd.siemens.mindsphere.meta+json\r\n\r\n" % (self.outer, ib, ib)
            )
            put(g.meta)
            put(
                b"\r\n--%s\r\nContent-Type: %s\r\n\r\n%s"
                % (ib, g.ctype or b"application/json", b"" if g.ctype else b"[")
            )
        else:
            put(b"%s\r\n--%s--\r\n" % (b"" if g.ctype else b"]", ib))

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
            code, key = g.code, g.key
            self._frame(put, gi, g, True)
            if g.path is not None:
                _cold("put_file", put, g.path, g.size, b)
            else:
                mod = kinds.module(code, self._mods)
                sep = b""
                r = Reader(self.store, g.first, self.end)
                try:
                    while True:
                        rec = r.next()
                        if rec is None:
                            break
                        if rec.kind == code and mod.key(rec) == key:
                            put(sep)
                            sep = b","
                            mod.element(put, rec)
                            if key == g.first:  # an item of one record (keyed by its position)
                                break
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
    store.drained()
    return None
