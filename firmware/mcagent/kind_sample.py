"""Record kind 1: a time series sample (one timestamp, values of configured data points, a quality code).

Record payload: ts i64 | quality length u8 | quality | value count u8 | per value: data point index u8 and
the value (DOUBLE f64, BOOLEAN u8, STRING/BIG_STRING u16 length + UTF-8, INT/LONG/TIMESTAMP i64).
Exchange: one standardTimeSeries 1.0 item per configuration, one array element per sample; samples of
one batch have strictly rising timestamps (RISING).
"""

import struct

from micropython import const

from mcagent import cjson, clock
from mcagent.store import TYPES, StoreError

RISING = True  # the composer ends a batch before a timestamp that is not above the last one
_T_DOUBLE = const(1)
_T_INT = const(2)
_T_BOOL = const(4)
_T_STRING = const(5)
_T_BIG_STRING = const(6)
_T_TIMESTAMP = const(7)
_INF = float("inf")


def _check(dp_id, t, v, text):
    """The value converted for storage (bytes for text), or StoreError naming the data point."""
    ok = False
    if t == _T_BIG_STRING or (t == _T_STRING and isinstance(v, str) and len(v) <= 255):
        return text(v, dp_id, 65535)  # STRING is at most 255 characters in Insights Hub (longer: BIG_STRING)
    if t == _T_TIMESTAMP and isinstance(v, str):
        try:
            return clock.parse_iso(v)
        except ValueError:
            pass
    elif t == _T_BOOL:
        ok = isinstance(v, bool)
    elif not isinstance(v, bool):
        if t == _T_DOUBLE:
            ok = isinstance(v, (int, float)) and v == v and v not in (_INF, -_INF)
            if ok:
                try:
                    v = float(v)
                except OverflowError:  # CPython, an int past a double's range (MicroPython gives inf)
                    ok = False
                ok = ok and v not in (_INF, -_INF)
        elif isinstance(v, int):
            lim = 2147483648 if t == _T_INT else 9223372036854775808
            ok = -lim <= v < lim
    if not ok:
        raise StoreError("%s (%s): bad value %r" % (dp_id, TYPES[t - 1], v))
    return v


def encode(store, values, quality=None):
    """Store.append_sample: values {data point id: value} checked against the configured types."""
    from mcagent import storewrite as W

    cfg = store.config
    if not isinstance(values, dict):
        raise StoreError("a sample is a dict of data point values")
    if quality is None:
        q = store.quality
    else:
        if isinstance(quality, int) and not isinstance(quality, bool):
            quality = str(quality)
        q = W.text(quality, "quality code", 32)
    items = []
    size = 10 + len(q)
    for dp_id in values:
        v = values[dp_id]
        if v is None:
            continue
        try:
            i = cfg.index.get(dp_id)
            if i is None:
                raise StoreError("unknown data point %r" % (dp_id,))
            t = cfg.types[i]
            v = _check(dp_id, t, v, W.text)
        except StoreError as e:
            e.dp_id = dp_id  # the value refused: a caller may drop it and record the others
            raise
        items.append((i, t, v))
        size += 1 + (len(v) + 2 if t == _T_STRING or t == _T_BIG_STRING else 1 if t == _T_BOOL else 8)
    if not items:
        raise StoreError("a sample needs at least one value")
    items.sort()  # configuration order: the same bytes whatever the dict order of this port
    b = W.buffer(store, size)
    b[12] = len(q)
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
    return size


def decode(rec, raw_strings=False):
    """(ts_ms, quality str, [(data point id, type code, value), ...]); value typed as recorded.

    raw_strings: STRING/BIG_STRING values as memoryviews of the UTF-8 bytes in the record's buffer
    (valid until the next record is read), so the composer can stream them without copies."""
    b = rec.buf
    ql = b[8]
    p = 10 + ql
    cfg = rec.cfg
    values = []
    for _ in range(b[p - 1]):
        i = b[p]
        t = cfg.types[i]
        p += 1
        if t == _T_DOUBLE:
            v = struct.unpack_from("<d", b, p)[0]
            p += 8
        elif t == _T_BOOL:
            v = b[p] != 0
            p += 1
        elif t == _T_STRING or t == _T_BIG_STRING:
            k = b[p] | (b[p + 1] << 8)
            v = memoryview(b)[p + 2 : p + 2 + k] if raw_strings else rec.text(p + 2, k)
            p += 2 + k
        else:  # INT, LONG, TIMESTAMP
            v = struct.unpack_from("<q", b, p)[0]
            p += 8
        values.append((cfg.ids[i], t, v))
    return rec.ts(), rec.text(9, ql), values


def key(rec):
    """Samples of one configuration share an item."""
    return rec.cfg


def group(rec):
    """(meta JSON, content type, file path, size) of the item a new key starts; JSON array payload."""
    cid = cjson.quote(rec.cfg.configuration_id).encode()
    return (
        b'{"type":"item","version":"1.0","payload":{"type":"standardTimeSeries","version":"1.0",'
        b'"details":{"configurationId":%s}}}' % cid,
        None,
        None,
        0,
    )


def element(put, rec):
    """One element of the standardTimeSeries array: values and quality code as strings."""
    ts, quality, values = decode(rec, True)
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
            cjson.emit_text(v, put)  # a run of UTF-8 bytes in the record, streamed: never copied whole
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
