"""Compact JSON text that is byte-identical on CPython and MicroPython.

`json.dumps` differs between the two (key order, separators, non-ASCII escaping), which matters wherever
bytes are signed or measured. Objects whose key order matters are given as `Obj(("k", v), ...)`; plain dicts
are written with sorted keys. Non-ASCII text is written as raw UTF-8.
"""

from mcagent import compat


class Obj:
    """A JSON object with a fixed key order."""

    def __init__(self, *pairs):
        self.pairs = pairs


def quote(text):
    """A JSON string literal for text (str). It scans the UTF-8 bytes, never the characters: on MicroPython
    a character taken from a str is interned for good (a token's letters and digits: ~0.5 KB of heap).
    Every character JSON escapes is ASCII, so a byte slice between two of them is whole UTF-8 text."""
    data = memoryview(compat.utf8(text))
    out = None
    start = 0
    for i in range(len(data)):
        c = data[i]
        if c == 34 or c == 92 or c < 32:
            if out is None:
                out = [b'"']
            out.append(bytes(data[start:i]))
            out.append(_ESCAPES.get(c) or ("\\u%04x" % c).encode())
            start = i + 1
    if out is None:
        return '"' + text + '"'
    out.append(bytes(data[start:]))
    out.append(b'"')
    return b"".join(out).decode()


_ESCAPES = {34: b'\\"', 92: b"\\\\", 10: b"\\n", 13: b"\\r", 9: b"\\t"}


def dumps(value):
    """Compact JSON text for value: None, bool, int, float, str, list/tuple, dict, Obj (see emit)."""
    out = []
    emit(value, out.append)
    return "".join(out)


def emit(value, out):
    """Write value as compact JSON through out(piece), piece by piece: the text dumps returns, never held
    whole (a request body, a state file, a 1 KB token). A piece is a str, or a memoryview when value holds
    one (UTF-8 text as a slice of a bigger string: its bytes are written as they are)."""
    if isinstance(value, (str, memoryview)):
        # Its bytes, never its characters: a character taken from a str is interned for good on MicroPython.
        for c in value if isinstance(value, memoryview) else memoryview(compat.utf8(value)):
            if c == 34 or c == 92 or c < 32:
                out(quote(value if isinstance(value, str) else bytes(value).decode()))
                return
        out('"')
        out(value)
        out('"')
    elif isinstance(value, (dict, Obj)):
        pairs = value.pairs if isinstance(value, Obj) else sorted(value.items())
        sep = "{"
        for k, v in pairs:
            out(sep)
            emit(k, out)
            out(":")
            emit(v, out)
            sep = ","
        out("}" if sep == "," else "{}")
    elif isinstance(value, (list, tuple)):
        sep = "["
        for v in value:
            out(sep)
            emit(v, out)
            sep = ","
        out("]" if sep == "," else "[]")
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(str(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("JSON has no NaN or infinity")
        out(repr(value))
    else:
        raise TypeError("not JSON serialisable: %s" % type(value).__name__)
