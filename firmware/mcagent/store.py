"""Append-only flash log of records of every kind (readings, events, file references, custom data: see
mcagent.kinds); nothing leaves it before the server said 200.

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

What a record holds is its kind's business (mcagent.kinds: one module per kind encodes, decodes and
sends it); the store frames records, keeps segments, cursor and capacity, and counts records per kind.
Wiring (done by the Agent): `record(values, timestamp_ms)` -> `append_sample(ts or clock.now_ms(), values)`,
`event(...)` -> `append_event(clock.now_ms(), ...)`, `upload_file(...)` -> `append_file_ref(...)`,
`custom(...)` -> `append(4, clock.now_ms(), ...)`, and `flush()` -> `commit()` then
`uploader.Uploader(store, conn, identity).flush()`.
"""

import struct

from micropython import const

from mcagent import compat, kinds
from mcagent.errors import TYPES  # noqa: F401 - the data point types; code on flash = index + 1

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


_SEGMENT_BYTES = const(4096)  # one littlefs erase block on ESP32
_DEFAULT_CAPACITY = const(262144)
_DEFAULT_COMMIT_EVERY = const(10)
_DEFAULT_QUARANTINE_BYTES = const(65536)

SEG_MAGIC = b"MCS1"
HDR = const(16)  # segment header: magic, seq, config hash, CRC

# Counters kept in the state file, by name: records dropped by the capacity policy and records quarantined,
# per kind (readings, events, files in this order), then the others, then the pairs of the kinds after the
# third (custom, and any later one) in registry order.
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
) + tuple(p + n for n in kinds.NAMES[3:] for p in ("dropped_", "quarantined_"))
# Counters added since go last (a state file's counters are positional; an older file reads them as 0).
COUNTERS += ("damaged_records",)
STATE_LEN = max(64, 16 + 4 * len(COUNTERS))  # b"MCK1", cursor seq, cursor offset, counters, CRC32


class StoreError(ValueError):
    """A reading, event or file reference that cannot be stored as given (nothing was written)."""


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


class Record:
    """One record read from flash (reused by a Reader: copy what you keep).

    kind: its code (mcagent.kinds; its module decodes the payload); seq/off: where it starts; end: position
    (seq, offset) just after it; cfg: the segment's Config; buf[:n]: the payload.
    """

    def __init__(self):
        self.kind = 0
        self.seq = 0
        self.off = 0
        self.end = None
        self.cfg = None
        self.buf = bytearray(256)
        self.n = 0

    def ts(self):
        """The record's timestamp (Unix ms): every kind's payload starts with it."""
        return struct.unpack_from("<q", self.buf, 0)[0]

    def text(self, p, k):
        """k bytes of the payload from p, as a str."""
        return bytes(self.buf[p : p + k]).decode()


def check_header(head, seq):
    """Config hash of a valid segment header (None if short, foreign or damaged)."""
    if head is None or len(head) < HDR or head[:4] != SEG_MAGIC:
        return None
    hseq, cfg_hash, crc = struct.unpack_from("<III", head, 4)
    if crc != crc32(memoryview(head)[:12]) or hseq != seq:
        return None
    return cfg_hash


def read_record(f, hb, rec):
    """Read one record into rec; its total length, or 0 at EOF / a short record / a damaged header, or minus
    its total length when it is all there but its CRC fails (bit rot in the record: the file is positioned
    after it, so its neighbours still read; see Reader)."""
    if read_full(f, memoryview(hb)) != 4:
        return 0
    kind = hb[0]
    n = hb[2] | (hb[3] << 8)
    if kind < 1 or kind > len(kinds.NAMES) or hb[1] != 0:
        return 0
    need = n + 4
    if len(rec.buf) < need:
        rec.buf = bytearray(need)
    mv = memoryview(rec.buf)
    if read_full(f, mv[:need]) != need:
        return 0
    if crc32(mv[:n], crc32(hb)) != struct.unpack_from("<I", rec.buf, n)[0]:
        return -(need + 4)
    rec.kind = kind
    rec.n = n
    return need + 4


class Reader:
    """Committed records from start (inclusive) to end (exclusive), one at a time, without loading them all.

    Positions are (segment seq, byte offset) tuples. `next()` returns the reused Record or None at the end;
    `pos` is the position after the last record returned. Create another Reader over the same range to read
    it again (the composer's length pass and write pass). A damaged record (its CRC fails) is skipped and its
    end noted in `damaged`, so one bad record costs only itself; a segment ends at its first short record or
    damaged record header (what follows cannot be framed).
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
        self.damaged = []  # ends of the damaged records skipped (rare: a list costs nothing until then)

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
            if n < 0:
                self._off -= n
                self.damaged.append((self._seq, self._off))
                continue
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
        # opening and recovery: cold code, once per boot
        compat.call_cold(
            "mcagent.storeboot",
            "start",
            self,
            root_dir,
            datapoints,
            configuration_id,
            capacity_bytes,
            policy,
            commit_every,
            segment_bytes,
            quality,
            quarantine_bytes,
        )

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
        compat.write_atomic(self.root + "/state.bin", b)
        self._dirty = False

    # ---- appending (mcagent.storewrite: loaded on the first append, released by release_writer) -----------

    def append(self, code, ts_ms, *args):
        """Queue a record of kind code (mcagent.kinds) at ts_ms; args go to its module's encode(store, ...).
        True if stored, False if refused (policy "stop", full); StoreError (nothing written) if wrong."""
        return compat.load("mcagent.storewrite").append(self, code, ts_ms, args)

    def append_sample(self, ts_ms, values, quality=None):
        """Queue one sample {data point id: value}, checked against the configured types (kind_sample)."""
        return self.append(1, ts_ms, values, quality)

    def append_event(self, ts_ms, severity, description, details=None, correlation_id=None):
        """Queue a businessEvent: severity 1/2/3 (error/warning/info, v1.0), 20/30/40 (v2.0) or a name."""
        return self.append(2, ts_ms, severity, description, details, correlation_id)

    def append_file_ref(self, ts_ms, path, name=None, mime=None):
        """Queue a file on flash for upload; its bytes are read at upload time (kind_file)."""
        return self.append(3, ts_ms, path, name, mime)

    def release_writer(self):
        """Commit, and let the GC have the append code until the next append (before an upload: the heap
        peak of a wake, which only reads the log)."""
        self.commit()
        compat.unload("mcagent.storewrite")
        for m in kinds.ENCODERS + kinds.MODULES:  # the kinds' code (the composer loads its own again)
            compat.unload(m)

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

    def ack(self, end, counts=None, damaged=0):
        """Everything before position end was delivered: move the cursor there, then delete spent segments.

        counts: records acknowledged per kind (index = code - 1), to keep pending_count() without a rescan.
        damaged: records in the range that could not be read (Reader.damaged), counted with the ack.
        A position at or behind the cursor (e.g. the segment was dropped meanwhile) changes nothing.
        """
        seq, off = end
        if self._lo <= seq < self._hi and off >= compat.file_size(self.seg_path(seq)):
            end = (seq + 1, 0)  # the end of a finished segment is the start of the next one
        if end <= self.cursor:
            return
        self.counters["damaged_records"] += damaged
        self.cursor = end
        self.save_state()  # the commit point of the acknowledgement
        while self._lo < end[0] and self._lo <= self._hi:
            compat.remove(self.seg_path(self._lo))
            self._lo += 1
        p = self._pending
        if p is not None:
            if counts is None:
                self._pending = None
            else:
                for i in range(len(counts)):
                    p[i] = max(0, p[i] - counts[i])

    def pending_known(self):
        """Records pending per kind (index = code - 1) when known without a scan of the backlog, else None
        (the uploader's summary: storeinfo is not loaded for it)."""
        return self._pending

    def drained(self):
        """A composer found nothing after the cursor: no record is pending (known now without a scan)."""
        self._pending = [0] * len(kinds.NAMES)

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
        """Records of every kind not yet acknowledged. Counted once (a scan of the backlog
        after a restart), then kept up to date."""
        return sum(self.stats(True, False))

    def stats(self, scan=True, full=True):
        """Counters (persisted) plus pending counts (None if unknown and scan is False) and flash use
        (storeinfo.stats)."""
        return compat.call_cold("mcagent.storeinfo", "stats", self, scan, full)
