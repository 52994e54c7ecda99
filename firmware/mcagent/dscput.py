"""Putting the DSC and the mappings (docs/protocol.md §E): the network half of mcagent.dsc, which builds and
checks the DSC and is released before the requests go out (the DSC phase of a first wake is one of its heap
peaks). The DSC goes out as a streaming body; its digest, kept in state, says when it must go again.

Loaded per use (mcagent.compat.call_cold) by Agent.configure.
"""

import hashlib
from binascii import hexlify

from micropython import const

from mcagent import cjson, compat
from mcagent.errors import DscError, MappingError

_MAPPINGS_PATH = const("/api/mindconnect/v3/dataPointMappings")
_MAX_DSC = const(16384)  # bytes of the service's DSC we are willing to read back


def dsc_path(client_id):
    return "/api/agentmanagement/v3/agents/%s/dataSourceConfiguration" % client_id


def digest(text):
    """16 hex digits of SHA-256 of text (str or bytes): enough to notice a change."""
    if isinstance(text, str):
        text = text.encode()
    return hexlify(hashlib.sha256(text).digest()[:8]).decode()


class _JsonBody:
    """value as compact JSON in a streaming request body (http.Connection's contract: length, write_to):
    the DSC text is never held whole, only its length and digest (what digest(text) gives)."""

    def __init__(self, value):
        self.value = value
        self.length = 0
        h = hashlib.sha256()

        def count(piece):  # a str's length on MicroPython counts characters, not bytes
            b = memoryview(compat.utf8(piece)) if isinstance(piece, str) else piece
            self.length += len(b)
            h.update(b)

        cjson.emit(value, count)
        self.digest = hexlify(h.digest()[:8]).decode()

    def write_to(self, write):
        cjson.emit(
            self.value,
            lambda piece: write(memoryview(compat.utf8(piece)) if isinstance(piece, str) else piece),
        )


def configure(request, state, client_id, desc, force=False):
    """Make the service's DSC and mappings match desc; returns a summary dict.

    request(method, path, headers=None, body=None, max_body=...) -> Response, with authorization.
    Summary: {"dsc": "unchanged" | "same" (service already had it) | "put", "mappings": created,
    "existing": answered 409, "configurationId": id}.
    """
    dsc_obj, mappings, _ = compat.call_cold("mcagent.dsc", "build", desc)  # released before the requests
    body = _JsonBody(dsc_obj)
    want = body.digest
    map_text = "|".join([",".join(m) for m in mappings])
    want_maps = digest(map_text) if mappings else None
    saved = state.load("dsc")
    if not saved or saved.get("client_id") != client_id:
        saved = {}
    summary = {"dsc": "unchanged", "mappings": 0, "existing": 0, "configurationId": desc["configurationId"]}
    if force or saved.get("hash") != want:
        path = dsc_path(client_id)
        etag = _current_etag(request, path, want, summary)
        if etag is not None:
            for attempt in (0, 1):
                headers = {"Content-Type": "application/json", "If-Match": etag}
                resp = request("PUT", path, headers, body, 4096)
                if resp.status == 412 and attempt == 0:
                    etag = _current_etag(request, path, want, summary)
                    if etag is None:
                        break
                    continue
                if resp.status != 200:
                    raise compat.call_cold("mcagent.httputil", "http_error", resp, "DSC upload")
                summary["dsc"] = "put"
                break
        saved = {"client_id": client_id, "hash": want, "maps": None}
        state.save("dsc", cjson.Obj(("client_id", client_id), ("hash", want), ("maps", None)))
    if want_maps is not None and (force or saved.get("maps") != want_maps):
        for m in mappings:
            resp = request(
                "POST",
                _MAPPINGS_PATH,
                {"Content-Type": "application/json"},
                cjson.dumps(
                    cjson.Obj(
                        ("agentId", client_id),
                        ("dataPointId", m[0]),
                        ("entityId", m[1]),
                        ("propertySetName", m[2]),
                        ("propertyName", m[3]),
                        ("keepMapping", True),
                    )
                ).encode(),
                1024,
            )
            if resp.status == 201:
                summary["mappings"] += 1
            elif resp.status == 409:  # ours already, or the property is another mapping's (raises)
                compat.call_cold("mcagent.dscconflict", "check", request, _MAPPINGS_PATH, client_id, m, resp)
                summary["existing"] += 1
            elif 400 <= resp.status < 500 and resp.status not in (401, 408, 429):
                raise MappingError(
                    "mapping %s -> %s/%s/%s refused (HTTP %d): %s"
                    % (m[0], m[1], m[2], m[3], resp.status, _message(resp))
                )
            else:
                raise compat.call_cold("mcagent.httputil", "http_error", resp, "mapping")
        state.save("dsc", cjson.Obj(("client_id", client_id), ("hash", want), ("maps", want_maps)))
    return summary


def _message(resp):
    try:
        doc = resp.json()
        if isinstance(doc, dict):
            return str(doc.get("message") or doc.get("error_description") or doc)[:200]
    except ValueError:
        pass
    return repr(bytes(resp.body[:200]))


def _current_etag(request, path, want, summary):
    """The service's eTag for the next PUT, or None when its DSC already equals ours."""
    resp = request("GET", path, None, None, _MAX_DSC)
    if resp.status == 404:
        return "0"
    if resp.status != 200:
        raise compat.call_cold("mcagent.httputil", "http_error", resp, "DSC read")
    if getattr(resp, "truncated", False):
        raise DscError("the service's DSC is larger than %d bytes" % _MAX_DSC)
    doc = resp.json()
    if not isinstance(doc, dict):
        raise DscError("the service's DSC is not a JSON object")
    try:  # the service's DSC in our canonical form (none when it is not one we could have sent)
        theirs = _JsonBody(compat.call_cold("mcagent.dsc", "build", doc)[0]).digest
    except (DscError, TypeError, ValueError):
        theirs = None
    if theirs == want:
        summary["dsc"] = "same"
        return None
    etag = doc.get("eTag")
    if etag is None:
        etag = resp.headers.get("etag", "0")
    return str(etag)
