# A small strict multipart reader for firmware tests (CPython and MicroPython): it accepts only what the
# composer promises (RFC 2046 with CRLF everywhere, no preamble/epilogue, two levels) and fails loudly.
import json

_BCHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"


def _check_boundary(b):
    assert 1 <= len(b) <= 70, b
    for c in b:
        assert c in _BCHARS, b


def split_parts(body, boundary):
    """The body parts between --boundary CRLF ... CRLF --boundary-- (exact, nothing before or after)."""
    _check_boundary(boundary)
    delim = b"--" + boundary
    assert body.startswith(delim + b"\r\n"), body[:80]
    close = b"\r\n" + delim + b"--"
    assert body.endswith(close), body[-80:]
    inner = body[len(delim) + 2 : len(body) - len(close)]
    parts = inner.split(b"\r\n" + delim + b"\r\n")
    for p in parts:
        assert (b"\r\n" + delim) not in p, "boundary inside a part"
    return parts


def split_headers(part):
    end = part.find(b"\r\n\r\n")
    assert end >= 0, part[:80]
    head = part[:end]
    headers = {}
    for line in head.split(b"\r\n"):
        assert b"\n" not in line and b"\r" not in line, line
        name, _, value = line.partition(b":")
        assert value[:1] == b" ", line
        headers[name.decode().lower()] = value[1:].decode()
    return headers, part[end + 4 :]


def parse(body, content_type):
    """[(meta dict, payload content type, payload bytes), ...] of an exchange body."""
    prefix = "multipart/mixed; boundary="
    assert content_type.startswith(prefix), content_type
    outer = content_type[len(prefix) :].encode()
    items = []
    for part in split_parts(body, outer):
        headers, content = split_headers(part)
        ct = headers["content-type"]
        rel = "multipart/related;boundary="
        assert ct.startswith(rel), ct
        inner = ct[len(rel) :].encode()
        assert not inner.startswith(outer)
        sub = split_parts(content, inner)
        assert len(sub) == 2, len(sub)
        mh, meta = split_headers(sub[0])
        assert mh == {"content-type": "application/vnd.siemens.mindsphere.meta+json"}, mh
        ph, payload = split_headers(sub[1])
        assert list(ph.keys()) == ["content-type"], ph
        meta_doc = json.loads(meta)
        assert b" " not in meta and b"\n" not in meta, meta  # compact JSON
        items.append((meta_doc, ph["content-type"], payload))
    return items


def body_bytes(body, chunks=None):
    """Run body.write_to and return (bytes, list of chunk lengths); checks the length contract."""
    out = []
    sizes = []

    def write(chunk):
        out.append(bytes(chunk))
        sizes.append(len(chunk))

    body.write_to(write)
    data = b"".join(out)
    assert len(data) == body.length, (len(data), body.length)
    if chunks is not None:
        chunks.extend(sizes)
    return data, sizes


def readings(items):
    """{data point id: [values...]} and [(timestamp, quality)] over all standardTimeSeries items."""
    out = []
    for meta, ct, payload in items:
        if meta["payload"]["type"] != "standardTimeSeries":
            continue
        assert ct == "application/json"
        for elem in json.loads(payload):
            out.append((meta["payload"]["details"]["configurationId"], elem))
    return out
