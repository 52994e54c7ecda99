"""The append side of the flash log (mcagent.store): framing records, rolling segments over and applying
the capacity policy; what a record holds is its kind module's business (mcagent.kinds).

Apart from the store because an upload - the heap peak of a wake - only reads the log: the store imports
this module on the first append and releases it before an upload (Store.release_writer), with the kind
modules the appends loaded. It works on the store's segment bookkeeping as part of the store; the kind
modules use its checks (text, path_size) and its write buffer (buffer); nothing else calls it.
"""

import struct

from micropython import const

from mcagent import compat, kinds
from mcagent.store import (
    HDR,
    SEG_MAGIC,
    Reader,
    Record,
    StoreError,
    crc32,
)

_REC_OVERHEAD = const(8)  # record header (kind, 0, length u16) + CRC32
_MAX_FILE_BYTES = const(10420224)  # 10 MiB minus 64 KiB for the multipart framing of one file item
# The kinds' encoders appends used: they go with this module (release_writer).
_MODS = [None] * len(kinds.ENCODERS)


def append(store, code, ts_ms, args):
    """Store.append: check and encode one record of kind code (its module's encode(store, *args)), then
    append it. True if stored, False if refused (policy "stop", full)."""
    if type(code) is not int or not 0 < code <= len(kinds.MODULES):
        raise StoreError("no record kind %r (mcagent.kinds)" % (code,))
    if isinstance(ts_ms, bool) or not isinstance(ts_ms, (int, float)) or not 0 <= ts_ms < 253402300800000:
        raise StoreError("timestamp must be Unix milliseconds, not %r" % (ts_ms,))
    n = kinds.encoder(code, _MODS).encode(store, *args)
    b = store._wbuf
    struct.pack_into("<BBHq", b, 0, code, 0, n, int(ts_ms))
    return _put(store, code, n)


def text(value, what, limit):
    """value (a str) as UTF-8 of at most limit bytes, or StoreError naming what."""
    if not isinstance(value, str):
        raise StoreError("%s must be a string" % what)
    b = value.encode()
    if len(b) > limit:
        raise StoreError("%s is longer than %d bytes" % (what, limit))
    return b


def path_size(path):
    """The size of a file to be streamed at upload time; StoreError if missing or too big for one item."""
    size = compat.file_size(path) if isinstance(path, str) else -1
    if size < 0 or size > _MAX_FILE_BYTES:
        raise StoreError("file %s: missing, a directory, or larger than %d bytes" % (path, _MAX_FILE_BYTES))
    return size


def buffer(store, n):
    """The write buffer with room for a record of n payload bytes (the kind writes them from offset 12,
    after the header and the timestamp); StoreError if it cannot fit a segment."""
    if n + _REC_OVERHEAD > store.segment_bytes - HDR:
        raise StoreError("record of %d bytes does not fit a segment" % n)
    if len(store._wbuf) < n + _REC_OVERHEAD:
        store._wbuf = b = bytearray(n + _REC_OVERHEAD + 32)
        # One block serves both ways (as storeboot sets up for BIG_STRING points): an upload reads this record
        # back into the store's spare Record, and a fragmented heap may not offer such a block twice.
        spare = store._spare_rec
        if spare is None:
            spare = store._spare_rec = Record()
        if len(spare.buf) < len(b):
            spare.buf = b
    return store._wbuf


def _put(store, code, n):
    """Append the record framed in _wbuf[:4+n] with its CRC. False if refused by the stop policy."""
    b = store._wbuf
    total = n + _REC_OVERHEAD
    mv = memoryview(b)
    struct.pack_into("<I", b, 4 + n, crc32(mv[: 4 + n]))
    if not _room(store, total):
        store.counters["dropped_" + kinds.NAMES[code - 1]] += 1
        store._dirty = True
        ok = False
    else:
        if store._f is None:
            store._f = open(store.seg_path(store._hi), "ab")
        store._f.write(mv[:total])
        store._tail_off += total
        if store._pending is not None:
            store._pending[code - 1] += 1
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
    for i in range(len(counts)):
        store.counters["dropped_" + kinds.NAMES[i]] += counts[i]
        if store._pending is not None:
            store._pending[i] -= counts[i]
    store.cursor = (seq + 1, 0)
    store.save_state()  # commit point: the drop and its count happen together, or not at all
    store._lo = seq + 1
    compat.remove(store.seg_path(seq))
