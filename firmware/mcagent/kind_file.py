"""Record kind 3: a file on flash, queued for upload as a `file` 1.0 item (its bytes are read at upload
time, not copied: leave the file in place, unchanged, until it has been sent).

Record payload: ts i64 | size when recorded u32 | path u16 length + UTF-8 | file name u8 length + UTF-8 |
mime type u8 length + UTF-8. Exchange: one item per file, the payload streamed from the file; a file that
is gone by then is taken off the store and counted (files_missing).
"""

import struct

from mcagent import cjson, clock, compat
from mcagent.store import StoreError


def encode(store, path, name=None, mime=None):
    """Store.append_file_ref: the file must exist and be at most 10 MiB minus the item's framing."""
    from mcagent import storewrite as W

    size = W.path_size(path)
    pb = W.text(path, "file path", 1024)
    nb = W.text(path.rsplit("/", 1)[-1] if name is None else name, "file name", 255)
    mb = W.text(mime or "application/octet-stream", "mime type", 255)
    if not nb:
        raise StoreError("file name must not be empty")
    n = 16 + len(pb) + len(nb) + len(mb)
    b = W.buffer(store, n)
    struct.pack_into("<IH", b, 12, size, len(pb))
    p = 18 + len(pb)
    b[18:p] = pb
    for t in (nb, mb):
        b[p] = len(t)
        b[p + 1 : p + 1 + len(t)] = t
        p += 1 + len(t)
    return n


def decode(rec):
    """(ts_ms, size when recorded, path, name, mime)."""
    b = rec.buf
    size, k = struct.unpack_from("<IH", b, 8)
    p = 14 + k
    q = p + 1 + b[p]
    return rec.ts(), size, rec.text(14, k), rec.text(p + 1, b[p]), rec.text(q + 1, b[q])


def key(rec):
    """Every file is an item of its own."""
    return (rec.seq, rec.off)


def group(rec):
    """(meta JSON, content type, path, size) of the file's item; None if the file has vanished."""
    ts, _, path, name, mime = decode(rec)
    size = compat.file_size(path)
    if size < 0:
        return None
    return (
        b'{"type":"item","version":"1.0","payload":{"type":"file","version":"1.0","details":{"fileName":'
        b'%s,"creationDate":"%s","fileType":%s}}}'
        % (cjson.quote(name).encode(), clock.iso_ms(ts).encode(), cjson.quote(mime).encode()),
        b"application/octet-stream",
        path,
        size,
    )
