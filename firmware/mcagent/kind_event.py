"""Record kind 2: a businessEvent (MindSphereStandardEvent).

Record payload: ts i64 | id (UUID v4, drawn when recorded: a re-sent batch carries the same id) 16 bytes |
severity u8 | description u16 length + UTF-8 | details JSON u16 length + text | correlation id u8 length +
UTF-8. Exchange: one businessEvent item per event version (1.0: severity 1/2/3, 2.0: 20/30/40).
"""

import struct
from binascii import hexlify

from mcagent import cjson, clock, compat
from mcagent.store import StoreError

_SEVERITY = {"error": 1, "warning": 2, "info": 3}


def encode(store, severity, description, details=None, correlation_id=None):
    """Store.append_event: severity 1/2/3 (error/warning/info, v1.0), 20/30/40 (v2.0) or a name."""
    from mcagent import storewrite as W

    sev = _SEVERITY.get(severity) if isinstance(severity, str) else severity
    if isinstance(sev, bool) or not isinstance(sev, int) or sev not in (1, 2, 3, 20, 30, 40):  # not 1.0
        raise StoreError("event severity must be 1/2/3, 20/30/40 or error/warning/info")
    desc = W.text(description or "", "event description", 1020)
    if len(description or "") > 255 or not isinstance(details or {}, dict):
        raise StoreError("event description must be < 256 characters, details a dict")
    try:
        dj = cjson.dumps(details or {}).encode()
    except (TypeError, ValueError) as e:
        raise StoreError("event details: %s" % e)
    corr = W.text(correlation_id or "", "correlation id", 255)
    size = 30 + len(desc) + len(dj) + len(corr)
    b = W.buffer(store, size)
    uid = bytearray(compat.urandom(16))
    uid[6] = (uid[6] & 0x0F) | 0x40
    uid[8] = (uid[8] & 0x3F) | 0x80
    struct.pack_into("<16sBH", b, 12, uid, sev, len(desc))
    p = 31 + len(desc)
    b[31:p] = desc
    struct.pack_into("<H", b, p, len(dj))
    b[p + 2 : p + 2 + len(dj)] = dj
    p += 2 + len(dj)
    b[p] = len(corr)
    b[p + 1 : p + 1 + len(corr)] = corr
    return size


def decode(rec, raw_strings=False):
    """(ts_ms, id bytes(16), severity, description, details JSON text, correlation id or "").

    raw_strings: the details as a memoryview of the UTF-8 bytes in the record's buffer (valid until the next
    record is read), so the composer streams them without copies, as kind_sample does its strings."""
    b = rec.buf
    k = b[25] | (b[26] << 8)
    p = 27 + k
    k2 = b[p] | (b[p + 1] << 8)
    q = p + 2 + k2
    details = memoryview(b)[p + 2 : q] if raw_strings else rec.text(p + 2, k2)
    return rec.ts(), bytes(b[8:24]), b[24], rec.text(27, k), details, rec.text(q + 1, b[q])


def key(rec):
    """Events of one version share an item: True for 2.0 (severity 20/30/40)."""
    return rec.buf[24] >= 20


def group(rec):
    """(meta JSON, content type, file path, size) of the item a new key starts; JSON array payload."""
    return (
        b'{"type":"item","version":"1.0","payload":{"type":"businessEvent","version":"%s.0",'
        b'"details":{}}}' % (b"2" if key(rec) else b"1"),
        None,
        None,
        0,
    )


def element(put, rec):
    """The event's JSON; its details go out from the record's buffer as they are (no copy: one is a few
    hundred bytes, at the flush, the heap peak of a wake)."""
    ts, eid, severity, desc, details, corr = decode(rec, True)
    h = hexlify(eid)
    put(b'{"id":"%s-%s-%s-%s-%s"' % (h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
    if corr:
        put(',"correlationId":' + cjson.quote(corr))
    put(b',"timestamp":"')  # in pieces: no ~250-byte text made and then encoded at the heap peak
    put(clock.iso_ms(ts))
    put(b'","severity":%d,"description":' % severity)
    put(cjson.quote(desc))
    put(b',"type":"MindSphereStandardEvent","version":"1.0","details":')
    put(details)
    put(b"}")
