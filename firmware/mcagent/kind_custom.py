"""Record kind 4: custom data, the exchange item for "data of custom data types for custom handling": the
meta names the user's own type and version, details are optional, the payload is raw bytes of any
content type. Small data travels inside the record; bigger data stays in a file on flash that is streamed
at upload time, like a file item (leave it in place until it has been sent).

Record payload: ts i64 | where u8 (0: data follows, 1: a path follows) | type u8 length + UTF-8 | version
u8 length + UTF-8 | content type u8 length + ASCII | details JSON u16 length + text | the data (the rest
of the record) or the path (u16 length + UTF-8). Exchange: one item per record.
"""

import struct

from mcagent import cjson, compat
from mcagent.store import StoreError

# The item types the exchange defines itself: a custom type must not be taken for one of them.
_RESERVED = ("standardTimeSeries", "businessEvent", "file", "dataSourceConfiguration")


def _token(value, what, limit):
    """A type, version or content type: 1..limit printable ASCII characters (it goes into a header line)."""
    from mcagent import storewrite as W

    b = W.text(value, what, limit)
    for c in b:
        if c < 32 or c > 126:
            raise StoreError("%s must be printable ASCII" % what)
    if not b:
        raise StoreError("%s must not be empty" % what)
    return b


def _content_type(value):
    """type/subtype[; name=value]... (RFC 2045), not multipart: the payload part's Content-Type header."""
    b = _token(value or "application/octet-stream", "content type", 255)
    # Parsed as bytes: a character taken from a str is interned for good on MicroPython.
    parts = b.split(b";")
    main = parts[0].strip().split(b"/")
    ok = len(main) == 2 and _is_token(main[0]) and _is_token(main[1]) and main[0].lower() != b"multipart"
    for p in parts[1:]:
        k, eq, v = p.strip().partition(b"=")
        ok = ok and eq == b"=" and _is_token(k) and (_is_token(v) or (len(v) > 1 and v[0] == v[-1] == 34))
    if not ok:
        raise StoreError("content type %r must be type/subtype[; name=value], not multipart" % value)
    return b


def _is_token(s):
    """s (bytes) is an RFC 2045 token: printable ASCII without spaces and tspecials."""
    if not s:
        return False
    for c in s:
        if c in b' ()<>@,;:\\"/[]?=' or not 32 < c <= 126:
            return False
    return True


def encode(store, type_name, version, data, content_type="application/octet-stream", details=None):
    """Agent.custom: data is bytes (kept in the record: it must fit one) or the path of a file on flash."""
    from mcagent import storewrite as W

    tb = _token(type_name, "custom data type", 255)
    if type_name in _RESERVED:
        raise StoreError("custom data type %s is an exchange item type of its own" % type_name)
    vb = _token(version, "custom data version", 64)
    cb = _content_type(content_type)
    if details is not None and not isinstance(details, dict):
        raise StoreError("custom data details must be a dict")
    try:
        dj = cjson.dumps(details).encode() if details else b""
    except (TypeError, ValueError) as e:
        raise StoreError("custom data details: %s" % e)
    if isinstance(data, str):
        W.path_size(data)
        data = W.text(data, "custom data path", 1024)
        where = 1
    elif isinstance(data, (bytes, bytearray, memoryview)):
        where = 0
    else:
        raise StoreError("custom data must be bytes or the path of a file")
    n = 14 + len(tb) + len(vb) + len(cb) + len(dj) + len(data) + 2 * where
    if n + 8 > store.segment_bytes - 16:
        raise StoreError(
            "custom data of %d bytes does not fit a record: write it to a file and pass the path" % len(data)
        )
    b = W.buffer(store, n)
    b[12] = where
    p = 13
    for t in (tb, vb, cb):
        b[p] = len(t)
        b[p + 1 : p + 1 + len(t)] = t
        p += 1 + len(t)
    struct.pack_into("<H", b, p, len(dj))
    b[p + 2 : p + 2 + len(dj)] = dj
    p += 2 + len(dj)
    if where:
        struct.pack_into("<H", b, p, len(data))
        p += 2
    b[p : p + len(data)] = data
    return n


def _fields(rec):
    """[type, version, content type, details JSON] as bytes, and where the data or path starts."""
    b = rec.buf
    p = 9
    out = []
    for _ in range(3):
        out.append(bytes(b[p + 1 : p + 1 + b[p]]))
        p += 1 + b[p]
    k = b[p] | (b[p + 1] << 8)
    out.append(bytes(b[p + 2 : p + 2 + k]))
    return out, p + 2 + k


def decode(rec):
    """(ts_ms, type, version, content type, details dict or None, data bytes or None, path or None)."""
    import json

    f, p = _fields(rec)
    b = rec.buf
    if b[8]:
        data, path = None, rec.text(p + 2, b[p] | (b[p + 1] << 8))
    else:
        data, path = bytes(b[p : rec.n]), None
    return (
        rec.ts(),
        f[0].decode(),
        f[1].decode(),
        f[2].decode(),
        json.loads(f[3]) if f[3] else None,
        data,
        path,
    )


def key(rec):
    """Every custom data record is an item of its own."""
    return (rec.seq, rec.off)


def group(rec):
    """(meta JSON, content type, path or None, size) of the record's item; None if its file has vanished."""
    f, p = _fields(rec)
    path = None
    size = 0
    if rec.buf[8]:
        path = rec.text(p + 2, rec.buf[p] | (rec.buf[p + 1] << 8))
        size = compat.file_size(path)
        if size < 0:
            return None
    meta = b'{"type":"item","version":"1.0","payload":{"type":%s,"version":%s%s}}' % (
        cjson.quote(f[0].decode()).encode(),
        cjson.quote(f[1].decode()).encode(),
        b',"details":' + f[3] if f[3] else b"",
    )
    return meta, f[2], path, size


def element(put, rec):
    """The data kept in the record, as it is."""
    _, p = _fields(rec)
    put(memoryview(rec.buf)[p : rec.n])
