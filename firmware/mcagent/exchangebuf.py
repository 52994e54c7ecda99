"""The buffered writer of an exchange body (compose(buf_size>0)), for a writer that does not buffer itself.
Its own small module: the Buffer holds its module's code while a body is written, and the upload's HTTP
connection buffers itself, so a flush never loads it."""


class Buffer:
    """A write() that copies pieces into buf and hands it on to write only when full (and at flush), for a
    writer that does not buffer itself."""

    def __init__(self, buf, write):
        self.mv = memoryview(buf)
        self.write = write
        self.pos = 0

    def __call__(self, data):
        mv = self.mv
        size = len(mv)
        data = memoryview(data)
        n = len(data)
        i = 0
        while i < n:
            pos = self.pos
            k = min(size - pos, n - i)
            mv[pos : pos + k] = data[i : i + k]
            self.pos = pos + k
            i += k
            if self.pos == size:
                self.flush()

    def flush(self):
        if self.pos:
            self.write(self.mv[: self.pos])
            self.pos = 0
