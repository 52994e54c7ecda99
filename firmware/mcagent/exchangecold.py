"""The composer's rare paths (mcagent.exchange): file items and error texts. Loaded per use and unloaded
at once: a batch of time series and events never loads it."""

from mcagent import cjson, clock
from mcagent.exchange import MAX_BUF, BodyError


def file_group(rec):
    """The group [kind, None, meta, path, size] of a file record; None if the file has vanished."""
    import os

    ts, _, path, name, mime = rec.file()
    try:
        size = os.stat(path)[6]
    except OSError:
        return None
    meta = (b'{"type":"item","version":"1.0","payload":{"type":"file","version":"1.0","details":{"fileName":'
            b'%s,"creationDate":"%s","fileType":%s}}}'
            % (cjson.quote(name).encode(), clock.iso_ms(ts).encode(), cjson.quote(mime).encode()))
    return [rec.kind, None, meta, path, size]


def put_file(put, path, size, buf):
    """Stream size bytes of a file through the Buffer buf (or, if None, a buffer for this file only)."""
    put.total += size
    if buf:
        buf.flush()
        write = buf.write
        mv = buf.mv
    else:
        write = put.write
        mv = memoryview(bytearray(min(size, MAX_BUF) or 1))
    try:
        f = open(path, "rb")
    except OSError:
        raise BodyError("file %s vanished before it was sent" % path)
    try:
        while size:
            k = f.readinto(mv[: min(size, len(mv))])
            if not k:
                raise BodyError("file %s shrank before it was sent" % path)
            write(mv[:k])
            size -= k
    finally:
        f.close()


def changed(total, length):
    raise BodyError("body changed between passes (%d of %d bytes)" % (total, length))
