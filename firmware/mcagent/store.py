"""Append-only flash log of readings, events and file references; nothing leaves it before the server
said 200.

Why a log of small CRC'd records in 4 KiB segment files: on littlefs an append only becomes visible at the
file's next commit (flush/close), a cut leaves a whole-record prefix, and a new file's directory entry is
committed when it is opened (so a cut can leave it empty). A reader that stops at the first bad CRC and a boot
that drops empty segments and rewrites a torn tail therefore recover every committed record, whatever the
instant of the cut. Segments of one erase block each make "drop the oldest data" a single file deletion.

The acknowledged position (cursor) and the exact drop/quarantine counters live in one small CRC'd state file
replaced atomically (write .tmp, flush, close, rename). Acknowledged segments are deleted only after that
file is committed, so a cut between the two just deletes them at the next boot.

This module keeps only what an upload - the heap peak of a wake - runs while it streams records out and
acknowledges them: reading, committing, the state file. The rest is cold code, imported when needed and
unloaded right after (compat.call_cold; code deployed as .mpy lives in the heap): `storeboot` opens the
store (argument checks, boot recovery), reads old configurations and quarantines rejected batches;
`storeinfo` counts the backlog and reports counters; `storewrite`, the append side, goes before an upload.
Format and recovery rules: docs/store-format.md.

Wiring (done by the Agent): `record(values, timestamp_ms)` -> `append_sample(ts or clock.now_ms(), values)`,
`event(...)` -> `append_event(clock.now_ms(), ...)`, `upload_file(...)` -> `append_file_ref(...)`, and
`flush()` -> `commit()` then `uploader.Uploader(store, conn, identity).flush()`.
"""


import os
import struct

from micropython import const

from mcagent import compat

try:
    from binascii import crc32
except ImportError:  # ports built without binascii.crc32 (defined only there: elsewhere it costs no heap)

    def crc32(data, crc=0):
        """CRC-32 (IEEE, as zlib/binascii) of a bytes-like, continuing from crc."""
        crc ^= 0xFFFFFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
        return crc ^ 0xFFFFFFFF


# Record kinds (public: the composer and the append side use them).
KIND_SAMPLE = const(1)
KIND_EVENT = const(2)
KIND_FILE = const(3)

# Data point type codes as stored (names in storeboot.TYPES, code = index + 1).
_T_DOUBLE = const(1)
_T_BOOL = const(4)
_T_STRING = const(5)
_T_BIG_STRING = const(6)

_SEGMENT_BYTES = const(4096)  # one littlefs erase block on ESP32
_DEFAULT_CAPACITY = const(262144)
_DEFAULT_COMMIT_EVERY = const(10)
_DEFAULT_QUARANTINE_BYTES = const(65536)

SEG_MAGIC = b"MCS1"
HDR = const(16)  # segment header: magic, seq, config hash, CRC
STATE_LEN = const(64)  # state file: b"MCK1", cursor seq, cursor offset, 10 counters, 8 reserved, CRC32

COUNTERS = (
    "dropped_readings",
    "dropped_events",
    "dropped_files",
    "quarantined_readings",
    "quarantined_events",
    "quarantined_files",
    "quarantined_batches",
    "quarantine_evicted",
    "corrupt_segments",
    "files_missing",
)  # the first three: dropped records by kind (KIND_x - 1), the next three: quarantined ones


class StoreError(ValueError):
    """A reading, event or file reference that cannot be stored as given (nothing was written)."""


def size_of(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def remove(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def write_atomic(path, data=None, producer=None):
    """Replace path with data (or what producer(write) writes): tmp, flush, close (= commit), rename."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        if data is not None:
            f.write(data)
        if producer is not None:
            producer(f.write)
        f.flush()
    os.rename(tmp, path)


def read_full(f, mv):
    """readinto until mv is full or EOF; returns the byte count (short on a torn file)."""
    got = 0
    n = len(mv)
    while got < n:
        k = f.readinto(mv[got:])
        if not k:
            break
        got += k
    return got


class Config:
    """The data point table samples refer to by position; identified on flash by the CRC32 of its text.

    Attributes: configuration_id, ids, types (codes), index (id -> position), text, hash, qids (JSON-quoted
    ids). Built by storeboot.config (cold: once per boot, and for an old segment's configuration)."""


def _text(b, p, k):
    return bytes(b[p : p + k]).decode()


class Record:
    """One record read from flash (reused by a Reader: copy what you keep).

    kind: KIND_SAMPLE/EVENT/FILE; seq/off: where it starts; end: position (seq, offset) just after it;
    cfg: the segment's Config; buf[:n]: the payload.
    """

    def __init__(self):
        self.kind = 0
        self.seq = 0
        self.off = 0
        self.end = None
        self.cfg = None
        self.buf = bytearray(256)
        self.n = 0

    def sample(self, raw_strings=False):
        """(ts_ms, quality str, [(data point id, type code, value), ...]); value typed as recorded.

        raw_strings: STRING/BIG_STRING values as memoryviews of the UTF-8 bytes in this record's buffer
        (valid until the next record is read), so the composer can stream them without copies."""
        b = self.buf
        ql = b[8]
        p = 10 + ql
        cfg = self.cfg
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
                v = memoryview(b)[p + 2 : p + 2 + k] if raw_strings else _text(b, p + 2, k)
                p += 2 + k
            else:  # INT, LONG, TIMESTAMP
                v = struct.unpack_from("<q", b, p)[0]
                p += 8
            values.append((cfg.ids[i], t, v))
        return struct.unpack_from("<q", b, 0)[0], _text(b, 9, ql), values

    def ts(self):
        """The record's timestamp (Unix ms), without decoding the rest."""
        return struct.unpack_from("<q", self.buf, 0)[0]

    def event(self):
        """(ts_ms, id bytes(16), severity, description, details JSON text, correlation id or "")."""
        b = self.buf
        k = b[25] | (b[26] << 8)
        p = 27 + k
        k2 = b[p] | (b[p + 1] << 8)
        q = p + 2 + k2
        return (struct.unpack_from("<q", b, 0)[0], bytes(b[8:24]), b[24], _text(b, 27, k),
                _text(b, p + 2, k2), _text(b, q + 1, b[q]))

    def file(self):
        """(ts_ms, size, path, name, mime)."""
        b = self.buf
        ts, size, k = struct.unpack_from("<qIH", b, 0)
        p = 14 + k
        q = p + 1 + b[p]
        return ts, size, _text(b, 14, k), _text(b, p + 1, b[p]), _text(b, q + 1, b[q])


def check_header(head, seq):
    """Config hash of a valid segment header (None if short, foreign or damaged)."""
    if head is None or len(head) < HDR or head[:4] != SEG_MAGIC:
        return None
    hseq, cfg_hash, crc = struct.unpack_from("<III", head, 4)
    if crc != crc32(memoryview(head)[:12]) or hseq != seq:
        return None
    return cfg_hash


def read_record(f, hb, rec):
    """Read one record into rec; its total length, or 0 at EOF / a short or damaged record."""
    if read_full(f, memoryview(hb)) != 4:
        return 0
    kind = hb[0]
    n = hb[2] | (hb[3] << 8)
    if kind < KIND_SAMPLE or kind > KIND_FILE or hb[1] != 0:
        return 0
    need = n + 4
    if len(rec.buf) < need:
        rec.buf = bytearray(need)
    mv = memoryview(rec.buf)
    if read_full(f, mv[:need]) != need:
        return 0
    if crc32(mv[:n], crc32(hb)) != struct.unpack_from("<I", rec.buf, n)[0]:
        return 0
    rec.kind = kind
    rec.n = n
    return need + 4


class Reader:
    """Committed records from start (inclusive) to end (exclusive), one at a time, without loading them all.

    Positions are (segment seq, byte offset) tuples. `next()` returns the reused Record or None at the end;
    `pos` is the position after the last record returned. Create another Reader over the same range to read
    it again (the composer's length pass and write pass). Stops a segment at its first short or bad record.
    """

    def __init__(self, store, start, end=None):
        self._store = store
        self._start = start
        self._end = end
        self._f = None
        self._seq = start[0] - 1  # last segment opened
        self._off = 0
        # Borrow the store's spare Record: its buffer has grown to the largest record read so far, and a
        # fragmented heap may not offer that block again (a 4 KB record needs 4 KB in one piece).
        self.rec = store._spare_rec or Record()
        store._spare_rec = None
        self._hb = bytearray(4)
        self.pos = start

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._store._spare_rec is None:
            self._store._spare_rec = self.rec

    def _open_next(self):
        store = self._store
        last = store._hi if self._end is None else min(store._hi, self._end[0])
        seq = max(self._seq + 1, store._lo)
        while seq <= last:
            self._seq = seq
            try:
                f = open(store.seg_path(seq), "rb")
            except OSError:  # a gap
                seq += 1
                continue
            h = check_header(f.read(HDR), seq)
            cfg = store.config_for(h) if h is not None else None
            if cfg is None:  # damaged (bit rot) or its configuration file is lost: skipped
                f.close()
                seq += 1
                continue
            off = self._start[1] if seq == self._start[0] else 0
            if off > HDR:
                f.seek(off)
            self._f = f
            self._off = max(off, HDR)
            self.rec.cfg = cfg
            return True
        return False

    def next(self):
        rec = self.rec
        while True:
            if self._f is None and not self._open_next():
                return None
            end = self._end
            if end is not None and self._seq == end[0] and self._off >= end[1]:
                self.close()
                return None
            n = read_record(self._f, self._hb, rec)
            if not n:
                self.close()
                continue
            rec.seq = self._seq
            rec.off = self._off
            self._off += n
            rec.end = self.pos = (self._seq, self._off)
            return rec


class Store:
    """The flash log. Single-threaded: call it from one task (the agent's loop).

    datapoints: [(id, type), ...], [{"id","type"}, ...] or a DSC dict; configuration_id: the DSC's id.
    capacity_bytes: flash the segments may use (clamped to the filesystem's free space at start).
    policy: "drop_oldest" (default: newest data wins, dropped readings counted) or "stop" (new data refused
    and counted while full). commit_every: appends per littlefs commit (each commit costs at least one block
    program; a power cut loses at most the appends since the last commit). Never refuses to start over
    damaged files (see storeboot.recover); bad arguments raise StoreError.
    """

    def __init__(
        self,
        root_dir,
        datapoints=(),
        configuration_id=None,
        capacity_bytes=_DEFAULT_CAPACITY,
        policy="drop_oldest",
        commit_every=_DEFAULT_COMMIT_EVERY,
        segment_bytes=_SEGMENT_BYTES,
        quality="0",
        quarantine_bytes=_DEFAULT_QUARANTINE_BYTES,
    ):
        boot = compat.load("mcagent.storeboot")  # opening and recovery: cold code, once per boot
        try:
            boot.start(self, root_dir, datapoints, configuration_id, capacity_bytes, policy, commit_every,
                       segment_bytes, quality, quarantine_bytes)
        finally:
            compat.unload("mcagent.storeboot")

    def seg_path(self, seq):
        return "%s/%08x.seg" % (self.root, seq)

    # ---- state file --------------------------------------------------------------------------------------

    def save_state(self):
        b = bytearray(STATE_LEN)
        struct.pack_into("<4sII", b, 0, b"MCK1", self.cursor[0], self.cursor[1])
        p = 12
        for name in COUNTERS:
            struct.pack_into("<I", b, p, self.counters[name] & 0xFFFFFFFF)
            p += 4
        struct.pack_into("<I", b, STATE_LEN - 4, crc32(memoryview(b)[: STATE_LEN - 4]))
        write_atomic(self.root + "/state.bin", b)
        self._dirty = False

    # ---- appending (mcagent.storewrite: loaded on the first append, released by release_writer) -----------

    def append_sample(self, ts_ms, values, quality=None):
        """Queue one sample: {data point id: value}. True if stored, False if refused (policy "stop", full).

        Values are checked against the configured types (StoreError, nothing written, on a mismatch).
        """
        return compat.load("mcagent.storewrite").append_sample(self, ts_ms, values, quality)

    def append_event(self, ts_ms, severity, description, details=None, correlation_id=None):
        """Queue a businessEvent. severity 1/2/3 (error/warning/info, v1.0) or 20/30/40 (v2.0), or a name.

        The event id (UUID v4) is drawn now, so a re-sent batch carries the same id.
        """
        return compat.load("mcagent.storewrite").append_event(self, ts_ms, severity, description, details,
                                                               correlation_id)

    def append_file_ref(self, ts_ms, path, name=None, mime=None):
        """Queue a file on flash for upload as a `file` item (its bytes are read at upload time, not copied).

        The file must stay in place, unchanged, until it has been sent (the summary counts files_sent).
        """
        return compat.load("mcagent.storewrite").append_file_ref(self, ts_ms, path, name, mime)

    def release_writer(self):
        """Commit, and let the GC have the append code until the next append (before an upload: the heap
        peak of a wake, which only reads the log)."""
        self.commit()
        compat.unload("mcagent.storewrite")

    def _close_tail(self):
        f = self._f
        if f is not None:
            f.close()  # the littlefs commit; on an error the handle stays for a later retry (a no-op then)
            self._f = None
            self.commits += 1
        self.committed = self.appended
        self._uncommitted = 0

    def commit(self):
        """Make every append so far durable (a littlefs commit), and any changed counters too."""
        self._close_tail()
        if self._dirty:
            self.save_state()

    close = commit

    # ---- reading and acknowledging -----------------------------------------------------------------------

    def config_for(self, h):
        cfg = self._configs.get(h)
        if cfg is None:
            cfg = compat.call_cold("mcagent.storeboot", "load_config", self, h)
            if cfg is not None:
                self._configs[h] = cfg
        return cfg

    def reader(self, start=None, end=None):
        """A Reader over committed records from start (default: the cursor) to end (default: all)."""
        self.commit()
        return Reader(self, start or self.cursor, end)

    def ack(self, end, counts=None):
        """Everything before position end was delivered: move the cursor there, then delete spent segments.

        counts: (readings, events, files) acknowledged, to keep pending_count() without a rescan.
        A position at or behind the cursor (e.g. the segment was dropped meanwhile) changes nothing.
        """
        seq, off = end
        if self._lo <= seq < self._hi and off >= size_of(self.seg_path(seq)):
            end = (seq + 1, 0)  # the end of a finished segment is the start of the next one
        if end <= self.cursor:
            return
        self.cursor = end
        self.save_state()  # the commit point of the acknowledgement
        while self._lo < end[0] and self._lo <= self._hi:
            remove(self.seg_path(self._lo))
            self._lo += 1
        p = self._pending
        if p is not None:
            if counts is None:
                self._pending = None
            else:
                for i in range(3):
                    p[i] = max(0, p[i] - counts[i])

    def count_missing_file(self):
        self.counters["files_missing"] += 1
        self._dirty = True

    # ---- rare: cold code -----------------------------------------------------------------------------------

    def quarantine(self, body, end, counts):
        """Keep a batch the service rejected in a file, then acknowledge it (see storeboot.quarantine)."""
        return compat.call_cold("mcagent.storeboot", "quarantine", self, body, end, counts)

    def quarantined_files(self):
        """Names of the quarantine files, oldest first."""
        return compat.call_cold("mcagent.storeboot", "quarantined_files", self)

    def pending_count(self):
        """Records (readings + events + files) not yet acknowledged. Counted once (a scan of the backlog
        after a restart), then kept up to date."""
        return sum(self.stats(True, False))

    def stats(self, scan=True, full=True):
        """Counters (persisted) plus pending counts (None if unknown and scan is False) and flash use
        (storeinfo.stats)."""
        return compat.call_cold("mcagent.storeinfo", "stats", self, scan, full)
