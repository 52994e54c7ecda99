"""Record kind 1: a time series sample (one timestamp, values of configured data points, a quality code).

Record payload: ts i64 | quality length u8 | quality | value count u8 | per value: data point index u8 and
the value (DOUBLE f64, BOOLEAN u8, STRING/BIG_STRING u16 length + UTF-8, INT/LONG/TIMESTAMP i64).
Exchange: one standardTimeSeries 1.0 item per configuration, one array element per sample; samples of
one batch have strictly rising timestamps (RISING). The append side (the values' checks and encode) is
mcagent.kind_sample_write: the composer, in the heap of every flush, does not carry it.
"""

import struct

from micropython import const

from mcagent import cjson, clock

RISING = True  # the composer ends a batch before a timestamp that is not above the last one
# Type codes: mcagent.store.TYPES index + 1, constants of each module that reads them (MicroPython folds
# a const() only in its own module; kind_sample_write has the writer's).
_T_DOUBLE = const(1)
_T_BOOL = const(4)
_T_STRING = const(5)
_T_BIG_STRING = const(6)
_T_TIMESTAMP = const(7)


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
