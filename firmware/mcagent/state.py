"""Small durable files (registration, token cache, clock correction, DSC hash) in one state directory.

Each file is replaced atomically: the new content goes to NAME.tmp (written, flushed, closed = a littlefs
commit), then renamed over NAME, so a power cut leaves either the old or the new version, never a mix.
On FAT, rename is delete + rename: a cut in between leaves only NAME.tmp, which the next start promotes.
Every file ends with a checksum line, so a damaged file reads as "absent" instead of as wrong values:
the agent can always start. Files may hold secrets: they are created owner-only on a host and their
content is never printed.

File format (text): one line of compact JSON, then one line with the first 16 hex digits of its SHA-256.
"""

import hashlib
import json
import os
from binascii import hexlify

from micropython import const

from mcagent import cjson, compat

_TMP = const(".tmp")

# Fault injection for tests: when set, called as hook(name) once NAME.tmp is complete, before it is closed
# and renamed (the commit point). Raising there simulates a power cut between "answer received" and "answer
# saved".
before_commit = None


def _digest(data):
    return hexlify(hashlib.sha256(data).digest()[:8])


def decode(data):
    """File bytes -> the stored value, or None when the file is empty, cut short or damaged."""
    end = data.rfind(b"\n", 0, len(data) - 1)
    if end < 0 or not data.endswith(b"\n"):
        return None
    body, check = data[:end], data[end + 1 : -1]
    if _digest(body) != check:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def encode(value):
    """The stored value (dict, list or cjson.Obj) -> file bytes."""
    body = cjson.dumps(value).encode()
    return body + b"\n" + _digest(body) + b"\n"


class State:
    """A directory of small atomically replaced JSON files."""

    def __init__(self, path):
        self.path = path.rstrip("/") or "/"
        compat.makedirs(self.path, private=True)
        self.recover()

    def file(self, name):
        return self.path + "/" + name

    def _read(self, path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        return decode(data)

    def recover(self):
        """Finish or undo a replace that a power cut interrupted (run at start).

        NAME.tmp with a good NAME beside it: the commit never happened, drop the temp file. NAME.tmp alone
        (or beside a damaged NAME) and complete: the old file was already deleted for the rename (FAT), so
        the temp file is the committed value: finish the rename. Anything else: delete the temp file.
        """
        for name in os.listdir(self.path):
            if not name.endswith(_TMP):
                continue
            tmp = self.file(name)
            target = tmp[: -len(_TMP)]
            if self._read(target) is None and self._read(tmp) is not None:
                compat.remove(target)
                os.rename(tmp, target)
            else:
                compat.remove(tmp)

    def load(self, name, default=None):
        """The value saved under name, or default when it is absent or unreadable."""
        value = self._read(self.file(name))
        return default if value is None else value

    def save(self, name, value):
        """Replace name with value atomically (compat.write_atomic); when this returns, it is committed."""
        tmp = self.file(name) + _TMP

        def fn(write):  # the file's bytes (a function of the one name every module has for one)
            compat.make_private(tmp)
            h = hashlib.sha256()

            def out(text):
                b = compat.utf8(text) if isinstance(text, str) else text
                h.update(b)
                write(b)

            cjson.emit(value, out)
            write(b"\n")
            write(hexlify(h.digest()[:8]))
            write(b"\n")
            if before_commit is not None:
                before_commit(name)

        compat.write_atomic(self.file(name), None, fn)

    def remove(self, name):
        compat.remove(self.file(name))
        compat.remove(self.file(name) + _TMP)

    def __repr__(self):
        return "<State %s>" % self.path
