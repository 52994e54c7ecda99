"""The append side of the flash log (mcagent.store): checking and framing readings, events and file
references, rolling segments over and applying the capacity policy.

Apart from the store because an upload - the heap peak of a wake - only reads the log: the store imports
this module on the first append and releases it before an upload (Store.release_writer). It works on the
store's segment bookkeeping as part of the store; nothing else calls it.
"""

import struct

from micropython import const

from mcagent import compat
from mcagent.store import (
    COUNTERS,
    HDR,
    KIND_EVENT,
    KIND_FILE,
    KIND_SAMPLE,
    SEG_MAGIC,
    Reader,
    StoreError,
    crc32,
    remove,
    size_of,
)

_REC_OVERHEAD = const(8)  # record header (kind, 0, length u16) + CRC32
_MAX_FILE_BYTES = const(10420224)  # 10 MiB minus 64 KiB for the multipart framing of one file item
_T_DOUBLE = const(1)
_T_INT = const(2)
_T_BOOL = const(4)
_T_STRING = const(5)
_T_BIG_STRING = const(6)
_T_TIMESTAMP = const(7)


def _utf8(text, what, limit):
    if not isinstance(text, str):
        raise StoreError("%s must be a string" % what)
    b = text.encode()
    if len(b) > limit:
        raise StoreError("%s is longer than %d bytes" % (what, limit))
    return b


_SEVERITY = {"error": 1, "warning": 2, "info": 3}
_INF = float("inf")


def _check_value(dp_id, t, v):
    """The value converted for storage (bytes for text), or StoreError naming the data point."""
    ok = False
    if t == _T_BIG_STRING or (t == _T_STRING and isinstance(v, str) and len(v) <= 255):
        return _utf8(v, dp_id, 65535)  # STRING is at most 255 characters in Insights Hub (longer: BIG_STRING)
    if t == _T_TIMESTAMP and isinstance(v, str):
        from mcagent import clock

        try:
            return clock.parse_iso(v)
        except ValueError:
            pass
    elif t == _T_BOOL:
        ok = isinstance(v, bool)
    elif not isinstance(v, bool):
        if t == _T_DOUBLE:
            ok = isinstance(v, (int, float)) and v == v and v not in (_INF, -_INF)
            v = float(v) if ok else v
        elif isinstance(v, int):
            lim = 2147483648 if t == _T_INT else 9223372036854775808
            ok = -lim <= v < lim
    if not ok:
        try:  # the type names live in cold code
            name = compat.load("mcagent.storeboot").TYPES[t - 1]
        finally:
            compat.unload("mcagent.storeboot")
        raise StoreError("%s (%s): bad value %r" % (dp_id, name, v))
    return v



def quality_code(store, quality):
    if quality is None:
        return store.quality
    if isinstance(quality, int) and not isinstance(quality, bool):
        quality = str(quality)
    return _utf8(quality, "quality code", 32)

def _buf(store, n):
    if len(store._wbuf) < n:
        store._wbuf = bytearray(n + 32)
    return store._wbuf

def append_sample(store, ts_ms, values, quality=None):
    """Queue one sample: {data point id: value}. True if stored, False if refused (policy "stop", full).

    Values are checked against the configured types (StoreError, nothing written, on a mismatch).
    """
    cfg = store.config
    if not isinstance(values, dict):
        raise StoreError("a sample is a dict of data point values")
    ts = _ts(ts_ms)
    q = quality_code(store, quality)
    items = []
    size = 10 + len(q)
    for dp_id in values:
        v = values[dp_id]
        if v is None:
            continue
        i = cfg.index.get(dp_id)
        if i is None:
            raise StoreError("unknown data point %r" % (dp_id,))
        t = cfg.types[i]
        v = _check_value(dp_id, t, v)
        items.append((i, t, v))
        size += 1 + (len(v) + 2 if t == _T_STRING or t == _T_BIG_STRING else 1 if t == _T_BOOL else 8)
    if not items:
        raise StoreError("a sample needs at least one value")
    items.sort()  # configuration order: the same bytes whatever the dict order of this port
    b = _buf(store, _fits(store, size))
    struct.pack_into("<qB", b, 4, ts, len(q))
    p = 13 + len(q)
    b[13:p] = q
    b[p] = len(items)
    p += 1
    for i, t, v in items:
        b[p] = i
        p += 1
        if t == _T_DOUBLE:
            struct.pack_into("<d", b, p, v)
            p += 8
        elif t == _T_BOOL:
            b[p] = 1 if v else 0
            p += 1
        elif t == _T_STRING or t == _T_BIG_STRING:
            struct.pack_into("<H", b, p, len(v))
            b[p + 2 : p + 2 + len(v)] = v
            p += 2 + len(v)
        else:
            struct.pack_into("<q", b, p, v)
            p += 8
    return _put(store, KIND_SAMPLE, size, 0)

def append_event(store, ts_ms, severity, description, details=None, correlation_id=None):
    """Queue a businessEvent. severity 1/2/3 (error/warning/info, v1.0) or 20/30/40 (v2.0), or a name.

    The event id (UUID v4) is drawn now, so a re-sent batch carries the same id.
    """
    from mcagent import cjson

    ts = _ts(ts_ms)
    sev = _SEVERITY.get(severity) if isinstance(severity, str) else severity
    if isinstance(sev, bool) or sev not in (1, 2, 3, 20, 30, 40):
        raise StoreError("event severity must be 1/2/3, 20/30/40 or error/warning/info")
    desc = _utf8(description or "", "event description", 1020)
    if len(description or "") > 255 or not isinstance(details or {}, dict):
        raise StoreError("event description must be < 256 characters, details a dict")
    try:
        dj = cjson.dumps(details or {}).encode()
    except (TypeError, ValueError) as e:
        raise StoreError("event details: %s" % e)
    corr = _utf8(correlation_id or "", "correlation id", 255)
    size = 30 + len(desc) + len(dj) + len(corr)
    b = _buf(store, _fits(store, size))
    uid = bytearray(compat.urandom(16))
    uid[6] = (uid[6] & 0x0F) | 0x40
    uid[8] = (uid[8] & 0x3F) | 0x80
    struct.pack_into("<q16sBH", b, 4, ts, uid, sev, len(desc))
    p = 31 + len(desc)
    b[31:p] = desc
    struct.pack_into("<H", b, p, len(dj))
    b[p + 2 : p + 2 + len(dj)] = dj
    p += 2 + len(dj)
    b[p] = len(corr)
    b[p + 1 : p + 1 + len(corr)] = corr
    return _put(store, KIND_EVENT, size, 1)

def append_file_ref(store, ts_ms, path, name=None, mime=None):
    """Queue a file on flash for upload as a `file` item (its bytes are read at upload time, not copied).

    The file must stay in place, unchanged, until it has been sent (the summary counts files_sent).
    """
    ts = _ts(ts_ms)
    size = size_of(path)
    if size < 0 or size > _MAX_FILE_BYTES:
        raise StoreError("file %s: missing or larger than %d bytes" % (path, _MAX_FILE_BYTES))
    pb = _utf8(path, "file path", 1024)
    nb = _utf8(path.rsplit("/", 1)[-1] if name is None else name, "file name", 255)
    mb = _utf8(mime or "application/octet-stream", "mime type", 255)
    if not nb:
        raise StoreError("file name must not be empty")
    n = 16 + len(pb) + len(nb) + len(mb)
    b = _buf(store, _fits(store, n))
    struct.pack_into("<qIH", b, 4, ts, size, len(pb))
    p = 18 + len(pb)
    b[18:p] = pb
    for t in (nb, mb):
        b[p] = len(t)
        b[p + 1 : p + 1 + len(t)] = t
        p += 1 + len(t)
    return _put(store, KIND_FILE, n, 2)

def _fits(store, n):
    if n + _REC_OVERHEAD > store.segment_bytes - HDR:
        raise StoreError("record of %d bytes does not fit a segment" % n)
    return n + _REC_OVERHEAD

def _ts(ts_ms):
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, (int, float)) or not 0 <= ts_ms < 253402300800000:
        raise StoreError("timestamp must be Unix milliseconds, not %r" % (ts_ms,))
    return int(ts_ms)

def _put(store, kind, n, slot):
    """Frame the payload already in _wbuf[4:4+n] and append it. False if refused by the stop policy."""
    b = store._wbuf
    total = n + _REC_OVERHEAD
    struct.pack_into("<BBH", b, 0, kind, 0, n)
    mv = memoryview(b)
    struct.pack_into("<I", b, 4 + n, crc32(mv[: 4 + n]))
    if not _room(store, total):
        store.counters[COUNTERS[slot]] += 1  # dropped_readings, _events, _files
        store._dirty = True
        ok = False
    else:
        if store._f is None:
            store._f = open(store.seg_path(store._hi), "ab")
        store._f.write(mv[:total])
        store._tail_off += total
        if store._pending is not None:
            store._pending[slot] += 1
        store.appended += 1
        ok = True
    store._uncommitted += 1  # refused appends count too: their drop counters get committed
    if store._uncommitted >= store.commit_every:
        store.commit()
    return ok

def _room(store, total):
    """Make the tail segment able to take total bytes: roll over, apply the capacity policy."""
    if store._hi >= store._lo and store._tail_hash == store.config.hash:
        if store._tail_off + total <= store.segment_bytes:
            return True
    store._close_tail()  # commits whatever the old tail holds
    while store._hi - store._lo + 1 >= store.max_segments:
        if store.policy != "drop_oldest":
            return False
        _drop_oldest(store)
    seq = store._next_seq
    store._next_seq += 1
    head = bytearray(HDR)
    struct.pack_into("<4sII", head, 0, SEG_MAGIC, seq, store.config.hash)
    struct.pack_into("<I", head, 12, crc32(memoryview(head)[:12]))
    store._f = open(store.seg_path(seq), "wb")
    store._f.write(head)
    if store._hi < store._lo:
        store._lo = seq
    store._hi = seq
    store._tail_off = HDR
    store._tail_hash = store.config.hash
    return True

def _drop_oldest(store):
    """Delete the oldest segment, counting exactly the unacknowledged records it held."""
    seq = store._lo
    # This runs inside an append whose record waits in _wbuf, which may be the spare Record's buffer:
    # the counting Reader must not borrow it (it would read over the record being appended).
    spare, store._spare_rec = store._spare_rec, None
    try:
        r = Reader(store, max(store.cursor, (seq, 0)), (seq + 1, 0))
        counts = compat.call_cold("mcagent.storeinfo", "count", r)
    finally:
        store._spare_rec = spare
    for i in range(3):
        store.counters[COUNTERS[i]] += counts[i]  # dropped_readings, _events, _files
        if store._pending is not None:
            store._pending[i] -= counts[i]
    store.cursor = (seq + 1, 0)
    store.save_state()  # commit point: the drop and its count happen together, or not at all
    store._lo = seq + 1
    remove(store.seg_path(seq))
