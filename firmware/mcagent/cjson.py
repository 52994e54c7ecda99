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
    """A JSON string literal for text (str), as a str: the pieces emit_text writes."""
    out = []
    emit_text(memoryview(compat.utf8(text)), out.append)
    if len(out) == 3:  # '"', the text whole, '"': nothing was escaped
        return '"' + text + '"'
    return b"".join([bytes(p) for p in out]).decode()


def emit_text(data, out):
    """Write the JSON string literal of UTF-8 text (a memoryview) through out(piece), as slices of data
    between the escapes: the text is never copied whole (a 1 KB token, a long string value). It scans the
    bytes, never the characters: on MicroPython a character taken from a str is interned for good. Every
    character JSON escapes is ASCII, so a slice between two of them is whole UTF-8 text."""
    out(b'"')
    start = 0
    for i in range(len(data)):
        c = data[i]
        if c == 34 or c == 92 or c < 32:
            out(data[start:i])
            out(_ESCAPES.get(c) or b"\\u%04x" % c)
            start = i + 1
    out(data[start:])
    out(b'"')


_ESCAPES = {34: b'\\"', 92: b"\\\\", 10: b"\\n", 13: b"\\r", 9: b"\\t"}


def dumps(value):
    """Compact JSON text for value: None, bool, int, float, str, list/tuple, dict, Obj (see emit)."""
    out = []
    emit(value, lambda p: out.append(p if isinstance(p, str) else bytes(p).decode()))
    return "".join(out)


def emit(value, out):
    """Write value as compact JSON through out(piece), piece by piece: the text dumps returns, never held
    whole (a request body, a state file, a 1 KB token). A piece is a str, or bytes or a memoryview for
    text (emit_text: UTF-8 slices of the value; a memoryview value is UTF-8 text, e.g. part of a string)."""
    if isinstance(value, (str, memoryview)):
        emit_text(value if isinstance(value, memoryview) else memoryview(compat.utf8(value)), out)
    elif isinstance(value, (dict, Obj)):
        pairs = value.pairs if isinstance(value, Obj) else sorted(value.items())
        sep = "{"
        for k, v in pairs:
            if not isinstance(k, (str, memoryview)):
                raise TypeError("JSON object keys are strings, not %s" % type(k).__name__)
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
