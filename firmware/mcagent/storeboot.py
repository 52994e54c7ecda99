"""Cold paths of the store: opening it (argument checks, boot recovery), old configurations, quarantine.

Imported by store.Store when needed and unloaded right after (compat.load/unload, compat.call_cold), so this
code costs RAM only while it runs: once per boot, when a segment of an older configuration is read, and
when the service rejects a batch.

Boot recovery brings the directory to a consistent state after a power cut at any instant and never raises
for bad content (only for I/O errors of the filesystem itself):
- a complete state.bin is used; if it is missing or damaged, a complete state.bin.tmp (left by a FAT-style
  rename, or by a cut before the first rename) is renamed to state.bin and used; if neither, the cursor
  starts at the oldest segment (re-send, never lose);
- *.tmp files are removed (half-done atomic writes: the old version is still in place);
- segments behind the cursor are removed (their acknowledgement was committed, the deletion was not);
- an empty or header-short newest segment is removed (created, never committed); a newest segment with a
  bad header and content is renamed to q<seq>.bad (kept, never deleted silently) and counted as corrupt.
  Older segments are not opened at boot (a cut can only touch the newest one); a reader skips one whose
  header is damaged (bit rot), and it goes when the cursor passes it;
- the last segment is scanned; a torn tail (a short or bad-CRC record) is cut off by rewriting the valid
  prefix (tmp + rename: there is no truncate), so appends continue after the last valid record;
- configuration files no segment refers to are removed (checked only when there are several); the current
  one is written if missing.
"""

import os
import struct

from micropython import const

from mcagent import compat, kinds
from mcagent import store as S

# Data point types as stored (code = index + 1).
TYPES = S.TYPES
_T_BIG_STRING = const(6)
# Literals only this module uses, as constants: a literal of up to 10 characters would be a name in the
# heap for the rest of the wake (the store opens in every wake that samples or uploads).
_SEG_EXT = const(".seg")
_CFG_EXT = const(".cfg")
_CFG_PREFIX = const("c")
_CFG_NAME = const("c%08x.cfg")
_Q_PREFIX = const("q")
_Q_EXT = const(".mp")
_DATA_POINTS = const("dataPoints")
_BAD_MOVED = const("bad_moved")


def start(
    st,
    root_dir,
    datapoints,
    configuration_id,
    capacity_bytes,
    policy,
    commit_every,
    segment_bytes,
    quality,
    quarantine_bytes,
):
    """Store.__init__ (its arguments are documented there): check them, then recover the directory.

    The append side (storewrite) is not loaded here: opening costs only this module, and an opening that
    only reads (a flush after a restart, a status report) never loads the append code."""
    st.root = root_dir.rstrip("/") or "/"
    st.policy = policy
    st.commit_every = max(1, int(commit_every))
    st.segment_bytes = segment_bytes
    st.quarantine_bytes = quarantine_bytes
    st.quality = quality_code("0" if quality is None else quality)
    # Segment files are numbered _lo.._hi (empty when _lo > _hi); a gap (a damaged file moved aside)
    # is skipped by readers. Two ints, not a list: RAM must not grow with the backlog.
    st._lo = 1
    st._hi = 0
    st._f = None  # open tail segment (append mode) between commits
    st._tail_off = 0  # valid length of the last segment
    st._tail_hash = None  # config hash of the last segment
    st._next_seq = 1
    st.cursor = (0, 0)
    st.counters = {}
    for name in S.COUNTERS:
        st.counters[name] = 0
    st._dirty = False  # counters changed since the state file was written
    st._pending = None  # records pending per kind (index = code - 1), or None = unknown (count lazily)
    st._wbuf = bytearray(128)
    st._spare_rec = None  # a Record lent to one Reader at a time (see store.Reader)
    st._uncommitted = 0
    st.appended = 0  # appends accepted since start (RAM only; tests use these)
    st.committed = 0  # of which committed
    st.commits = 0
    st.config = check_args(st, datapoints, configuration_id, capacity_bytes)
    st._configs = {st.config.hash: st.config}
    if _T_BIG_STRING in st.config.types:
        # Records may fill a segment: take the read buffer for that now, while the heap is young
        # (later a fragmented heap may not have the block in one piece).
        # One block serves both ways: an append builds and writes its record within the call, and
        # no Reader is open then (the uploader appends its events between batches).
        st._spare_rec = S.Record()
        st._spare_rec.buf = st._wbuf = bytearray(segment_bytes - S.HDR)
    st.recovered = recover(st)
    st.max_segments = clamp(st, capacity_bytes // segment_bytes)


def quality_code(quality):
    """The default quality code as stored (storewrite.quality_code checks a sample's own the same way)."""
    if isinstance(quality, int) and not isinstance(quality, bool):
        quality = str(quality)
    if not isinstance(quality, str):
        raise S.StoreError("quality code must be a string")
    b = quality.encode()
    if len(b) > 32:
        raise S.StoreError("quality code is longer than 32 bytes")
    return b


def config(configuration_id, pairs):
    """A store.Config of [(id, type name), ...]."""
    from mcagent import cjson

    c = S.Config()
    c.configuration_id = configuration_id
    c.ids = [p[0] for p in pairs]
    c.types = [TYPES.index(p[1]) + 1 for p in pairs]
    c.index = {}
    for i in range(len(c.ids)):
        c.index[c.ids[i]] = i
    c.text = cjson.dumps(
        cjson.Obj(("configurationId", configuration_id), (_DATA_POINTS, [list(p) for p in pairs]))
    ).encode()
    c.hash = S.crc32(c.text)
    c.qids = [cjson.quote(i).encode() for i in c.ids]  # JSON-quoted ids, ready for the composer
    return c


def names(root):
    """Names in a directory, one at a time where the port can (a long backlog must not cost a long list)."""
    il = getattr(os, "ilistdir", None)
    if il is None:
        for n in os.listdir(root):
            yield n
    else:
        for e in il(root):
            yield e[0]


def quarantined_files(st):
    return sorted([n for n in names(st.root) if n[0] == _Q_PREFIX and n.endswith(_Q_EXT)])


def _full_form(desc):
    """True for the DSC's own shape: a list of data sources, each with a list of data point dicts."""
    sources = desc.get("dataSources")
    if not isinstance(sources, list):
        return sources is None
    for source in sources:
        points = source.get(_DATA_POINTS) if isinstance(source, dict) else None
        if not isinstance(points, list):
            return False
        for p in points:
            if not isinstance(p, dict):
                return False
    return True


def parse_datapoints(datapoints, configuration_id=None):
    """(configuration_id, [(id, type), ...]) from (id, type) pairs, {"id","type"} dicts or a DSC dict.

    The DSC form is the JSON of docs/protocol.md §E.1:
    {"configurationId", "dataSources": [{"dataPoints": [...]}]}, or the compact description mcagent.dsc
    accepts (dataSources / dataPoints as dicts, type shortcuts).
    """
    if isinstance(datapoints, dict) and not _full_form(datapoints):
        # The compact description mcagent.dsc accepts (dicts, shortcuts): its own reader expands it.
        from mcagent.errors import DscError

        try:
            cid, datapoints = compat.call_cold("mcagent.dsc", "datapoints", datapoints)
        except DscError as e:
            raise S.StoreError(str(e))
        configuration_id = configuration_id or cid
    if isinstance(datapoints, dict):
        configuration_id = configuration_id or datapoints.get("configurationId") or datapoints.get("id")
        flat = []
        for source in datapoints.get("dataSources") or ():
            flat.extend(source.get(_DATA_POINTS) or ())
        datapoints = flat
    pairs = []
    seen = {}
    for dp in datapoints or ():
        if isinstance(dp, dict):
            dp_id, dp_type = dp.get("id"), dp.get("type")
        else:
            dp_id, dp_type = dp[0], dp[1]
        if not isinstance(dp_id, str) or not dp_id:
            raise S.StoreError("data point id must be a non-empty string: %r" % (dp_id,))
        if dp_type not in TYPES:
            raise S.StoreError(
                "data point %s: unknown type %r (one of %s)" % (dp_id, dp_type, ", ".join(TYPES))
            )
        if dp_id in seen:
            raise S.StoreError("data point %s configured twice" % dp_id)
        seen[dp_id] = 1
        pairs.append((dp_id, dp_type))
    if len(pairs) > 255:
        raise S.StoreError("at most 255 data points per configuration (got %d)" % len(pairs))
    if pairs and not configuration_id:
        raise S.StoreError("data points need a configuration id (the DSC's configurationId)")
    return configuration_id or "", pairs


def check_args(st, datapoints, configuration_id, capacity_bytes):
    """Validate the Store arguments; the current Config."""
    if st.policy not in ("drop_oldest", "stop"):
        raise S.StoreError("policy must be 'drop_oldest' or 'stop', not %r" % (st.policy,))
    if not 256 <= st.segment_bytes <= 65535:
        raise S.StoreError("segment_bytes must be 256..65535")
    if capacity_bytes < 2 * st.segment_bytes:
        raise S.StoreError(
            "capacity_bytes must hold at least two segments (%d bytes)" % (2 * st.segment_bytes)
        )
    cid, pairs = parse_datapoints(datapoints, configuration_id)
    return config(cid, pairs)


def _read(path, limit):
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _cfg_path(st, h):
    return "%s/c%08x.cfg" % (st.root, h)


def _decode_state(st, data):
    """Read the state file; a shorter one (written before a kind was added) reads its counters as 0."""
    n = len(data) if data is not None else 0
    if n < 64 or n > S.STATE_LEN or n % 4:
        return False
    if S.crc32(memoryview(data)[: n - 4]) != struct.unpack_from("<I", data, n - 4)[0]:
        return False
    cursor = struct.unpack_from("<4sII", data, 0)  # magic, cursor seq, cursor offset
    if cursor[0] != b"MCK1":
        return False
    st.cursor = (cursor[1], cursor[2])
    for i in range(min(len(S.COUNTERS), (n - 16) // 4)):
        st.counters[S.COUNTERS[i]] = struct.unpack_from("<I", data, 12 + 4 * i)[0]
    return True


def recover(st):
    """See the module docstring. Returns what was repaired (for logs and tests).

    Costs one pass over the directory names (no list of them: the backlog may be a thousand segments),
    a header check of the newest segment(s) and a scan of the last one; other segments are only opened
    when several configuration files exist (a configuration change: rare).
    """
    done = {"tmp_removed": 0, "empty_removed": 0, "torn_repaired": 0, _BAD_MOVED: 0}
    root = st.root
    compat.makedirs(root)
    state = root + "/state.bin"
    if not _decode_state(st, _read(state, S.STATE_LEN + 1)) and _decode_state(
        st, _read(state + ".tmp", S.STATE_LEN + 1)
    ):
        # The state write finished but its rename did not (FAT; or the very first write on littlefs). Make
        # it the state before acting on it: deleting what it acknowledged and then losing it in a second
        # cut would lose data without a count.
        os.rename(state + ".tmp", state)
    cur = st.cursor[0]
    lo = hi = None
    junk = []  # short: tmp files and segments whose acknowledgement was committed before their deletion
    cfgs = []
    for name in names(root):
        if name.endswith(".tmp"):
            junk.append(name)
            done["tmp_removed"] += 1
        elif name.endswith(_SEG_EXT) and len(name) == 12:
            try:
                seq = int(name[:8], 16)
            except ValueError:
                continue
            if seq < cur:
                junk.append(name)
            else:
                lo = seq if lo is None or seq < lo else lo
                hi = seq if hi is None or seq > hi else hi
        elif name.endswith(_CFG_EXT) and name[0] == _CFG_PREFIX and len(name) == 13:
            cfgs.append(name)
    for name in junk:
        # Only the tail repair rewrites a segment, and FAT renames over a file by deleting it first: a cut
        # between the two leaves the new copy alone, whole (it was closed before the rename). Taken back here,
        # after the pass over the names (renaming while the directory is read could skip or repeat names).
        seg = name[:-4]
        if len(name) == 16 and seg.endswith(_SEG_EXT) and not compat.exists(root + "/" + seg):
            try:
                seq = int(seg[:8], 16)
            except ValueError:
                continue
            if seq >= cur:
                os.rename(root + "/" + name, root + "/" + seg)
                done["tmp_removed"] -= 1
                lo = seq if lo is None or seq < lo else lo
                hi = seq if hi is None or seq > hi else hi
    for name in junk:
        compat.remove(root + "/" + name)  # a copy taken back is gone from under its .tmp name: a no-op
    while hi is not None and hi >= lo:  # the newest segment may be empty (cut right after open) or bad
        path = st.seg_path(hi)
        if S.check_header(_read(path, S.HDR), hi) is not None:
            break
        if compat.file_size(path) > S.HDR:  # foreign or damaged content: kept aside, never deleted silently
            try:
                os.rename(path, "%s/q%08x.bad" % (root, hi))
            except OSError:
                compat.remove(path)
            done[_BAD_MOVED] += 1
            st.counters["corrupt_segments"] += 1
            st._dirty = True
        elif compat.remove(path):
            done["empty_removed"] += 1
        hi -= 1
    if hi is not None and hi >= lo:
        st._lo, st._hi = lo, hi
        done["torn_repaired"] = _repair_tail(st)
    else:
        st._pending = [0] * len(kinds.NAMES)  # nothing on flash: pending is known without a scan
    st._next_seq = max(st._hi, cur) + 1
    if st._hi < st._lo:
        st._lo, st._hi = st._next_seq, st._next_seq - 1
    mine = _CFG_NAME % st.config.hash
    if len(cfgs) > 1 or (cfgs and cfgs[0] != mine):
        used = {st.config.hash: 1}
        for seq in range(st._lo, st._hi + 1):
            h = S.check_header(_read(st.seg_path(seq), S.HDR), seq)
            if h is not None:
                used[h] = 1
        for name in cfgs:
            try:
                if int(name[1:9], 16) not in used:
                    compat.remove(root + "/" + name)
            except ValueError:
                pass
    if mine not in cfgs:
        compat.write_atomic(root + "/" + mine, st.config.text)
    if st._dirty:
        st.save_state()
    return done


def _repair_tail(st):
    """Find the last segment's valid length; rewrite it without a torn tail. 1 if it was rewritten.

    Only what lies after the cursor is read: what it passed was delivered, and cutting the file short of the
    cursor would put new records where no reader looks. A damaged record (read_record < 0) is stepped over:
    the records after it are good, and readers skip it."""
    seq = st._hi
    path = st.seg_path(seq)
    rec = S.Record()
    hb = bytearray(4)
    with open(path, "rb") as f:
        st._tail_hash = S.check_header(f.read(S.HDR), seq)
        off = S.HDR
        if st.cursor[0] == seq and st.cursor[1] > off:
            off = st.cursor[1]
            f.seek(off)
        while True:
            n = S.read_record(f, hb, rec)
            if not n:
                break
            off += n if n > 0 else -n
    st._tail_off = off
    size = compat.file_size(path)
    if off > size:  # the cursor is past the end (cut short by an older version): append to a new segment
        st._tail_off = st.segment_bytes + 1
    if off >= size:
        return 0
    mv = memoryview(rec.buf)

    def fn(write):  # the valid prefix
        with open(path, "rb") as src:
            left = off
            while left:
                k = src.readinto(mv[: min(left, len(mv))])
                if not k:
                    break
                write(mv[:k])
                left -= k

    compat.write_atomic(path, producer=fn)
    return 1


def clamp(st, n):
    """Segments allowed: the configured capacity, but never more than the filesystem can still hold
    (littlefs needs a few spare blocks for copy-on-write of the state file and of the tail block)."""
    limit = n
    statvfs = getattr(os, "statvfs", None)
    if statvfs is not None:
        try:
            v = statvfs(st.root)
            bsize = v[1] or v[0]
            per_seg = max(1, (st.segment_bytes + bsize - 1) // bsize)
            limit = min(n, max(0, st._hi - st._lo + 1) + max(0, v[4] // per_seg - 4))
        except OSError:
            pass
    return max(2, limit)


def load_config(st, h):
    """The Config a segment header refers to (None if its file is missing or damaged)."""
    import json

    text = _read(_cfg_path(st, h), 65536)
    try:
        if text is None or S.crc32(text) != h:
            return None
        doc = json.loads(text)
        cfg = config(doc["configurationId"], [(p[0], p[1]) for p in doc[_DATA_POINTS]])
        return cfg if cfg.text == text else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def quarantine(st, body, end, counts):
    """Keep a batch the service rejected (400) in a file, then acknowledge it: not lost, not retried.

    The file holds the exact multipart body that was rejected; its name comes from the batch start, so a
    retry after a power cut rewrites the same file. Oldest quarantine files are evicted (and counted)
    beyond quarantine_bytes. Counters and the acknowledgement are committed in one state write.
    Returns the file's path, or None when the filesystem had no room for it (the records are then counted
    as dropped: a rejected batch that cannot be kept must not block the queue).
    """
    at = st.cursor
    path = "%s/q%08x-%08x.mp" % (st.root, at[0], at[1])
    old = quarantined_files(st)
    total = body.length
    sizes = []
    for n in old:
        sizes.append(compat.file_size(st.root + "/" + n))
        total += sizes[-1]
    i = 0
    while total > st.quarantine_bytes and i < len(old):
        compat.remove(st.root + "/" + old[i])
        total -= sizes[i]
        st.counters["quarantine_evicted"] += 1
        i += 1
    kept = "quarantined_"
    try:
        compat.write_atomic(path, producer=body.write_to)
        st.counters["quarantined_batches"] += 1
    except OSError as e:
        if e.errno != compat.enospc():
            raise
        # No room for the copy: the service rejected these records and they cannot be kept. Count them
        # as dropped and acknowledge anyway; a batch that never fits must not block everything behind it.
        compat.remove(path + ".tmp")
        st.counters["quarantine_evicted"] += 1
        kept = "dropped_"
        path = None
    for i in range(len(counts)):
        st.counters[kept + kinds.NAMES[i]] += counts[i]
    st._dirty = True
    st.ack(end, counts, body.damaged)
    if st._dirty:
        st.save_state()
    return path
