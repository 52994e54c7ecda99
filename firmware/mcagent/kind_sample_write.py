"""Record kind 1's append side: a sample's values checked against the configured types and encoded into a
record (the payload mcagent.kind_sample describes, decodes and composes). Loaded by the store's append code
(mcagent.kinds.ENCODERS) and released with it.
"""

import struct

from micropython import const

from mcagent import clock
from mcagent.store import TYPES, StoreError

# Type codes: mcagent.store.TYPES index + 1 (as in kind_sample: a const() is folded only in its module)
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
