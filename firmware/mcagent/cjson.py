"""Compact JSON text that is byte-identical on CPython and MicroPython.

`json.dumps` differs between the two (key order, separators, non-ASCII escaping), which matters wherever
bytes are signed or measured. Objects whose key order matters are given as `Obj(("k", v), ...)`; plain dicts
are written with sorted keys. Non-ASCII text is written as raw UTF-8.
"""


class Obj:
    """A JSON object with a fixed key order."""

    def __init__(self, *pairs):
        self.pairs = pairs


def quote(text):
    """A JSON string literal for text (str)."""
    out = ['"']
    start = 0
    for i in range(len(text)):
        c = text[i]
        if c == '"' or c == "\\" or c < " ":
            out.append(text[start:i])
            if c == '"':
                out.append('\\"')
            elif c == "\\":
                out.append("\\\\")
            elif c == "\n":
                out.append("\\n")
            elif c == "\r":
                out.append("\\r")
            elif c == "\t":
                out.append("\\t")
            else:
                out.append("\\u%04x" % ord(c))
            start = i + 1
    out.append(text[start:])
    out.append('"')
    return "".join(out)


def dumps(value):
    """Compact JSON text for value: None, bool, int, float, str, list/tuple, dict, Obj."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("JSON has no NaN or infinity")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join([dumps(v) for v in value]) + "]"
    if isinstance(value, Obj):
        pairs = value.pairs
    elif isinstance(value, dict):
        pairs = sorted(value.items())
    else:
        raise TypeError("not JSON serialisable: %s" % type(value).__name__)
    return "{" + ",".join([quote(k) + ":" + dumps(v) for k, v in pairs]) + "}"
