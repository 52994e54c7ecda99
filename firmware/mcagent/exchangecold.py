"""The composer's rare paths (mcagent.exchange): streaming a payload from a file and error texts. Loaded per
use and unloaded at once: a batch of time series and events never loads it."""

from mcagent.exchange import MAX_BUF, BodyError


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
