"""A small ring log of unexpected exceptions on flash, for the person who visits the node months later.

Two files: PATH (appended, one line per entry) and PATH.1 (the previous PATH). When PATH would grow past
max_bytes it replaces PATH.1 (one atomic rename on littlefs), so the log never takes more than about
2 * max_bytes of flash, and a power cut leaves at worst a torn last line. Entries per boot are capped, so a
fault that repeats every cycle cannot wear the flash. Messages come from exceptions: keep secrets out of
exception texts (the agent does).
"""

import os

from micropython import const

from mcagent import compat

_LINE_MAX = const(240)


def describe(exc):
    """Type, message and the innermost frames of an exception, on one line."""
    try:
        import io

        buf = io.StringIO()
        compat.print_exception(exc, buf)
        lines = [ln.strip() for ln in buf.getvalue().split("\n") if ln.strip()]
    except Exception:  # never fail while reporting a failure
        lines = []
    head = "%s: %s" % (type(exc).__name__, exc)
    # Deployed .mpy files carry no line numbers (mcagent deploy compiles with mpy-cross -O3): every frame
    # says "line 1", which would only take room from the message.
    frames = [ln.replace(", line 1,", ",") for ln in lines if ln.startswith("File ")][-2:]
    text = head if not frames else head + " | " + " | ".join(frames)
    return text.replace("\n", " ")[:_LINE_MAX]


class RunLog:
    def __init__(self, path="runlog.txt", max_bytes=2048, per_boot=20, written=0):
        self.path = path
        self.max_bytes = max_bytes
        self.per_boot = per_boot
        self.written = written  # entries this boot (a caller that makes a RunLog per entry carries it over)
        self.suppressed = 0  # entries beyond per_boot, counted only

    def add(self, what, stamp=""):
        """Append one entry (an exception or a text). Never raises: logging must not crash the node."""
        if self.written >= self.per_boot:
            self.suppressed += 1
            return False
        text = describe(what) if isinstance(what, BaseException) else str(what)[:_LINE_MAX]
        line = ("%s %s\n" % (stamp, text)) if stamp else text + "\n"
        try:
            if compat.file_size(self.path) + len(line) > self.max_bytes:
                try:
                    os.rename(self.path, self.path + ".1")
                except OSError:  # FAT does not rename over an existing file
                    os.remove(self.path + ".1")
                    os.rename(self.path, self.path + ".1")
            with open(self.path, "a") as f:
                f.write(line)
            self.written += 1
            return True
        except OSError:
            return False

    def lines(self):
        """All entries, oldest first."""
        out = []
        for path in (self.path + ".1", self.path):
            try:
                with open(path) as f:
                    for ln in f.read().split("\n"):
                        if ln:
                            out.append(ln)
            except OSError:
                pass
        return out
