"""Data source configuration (DSC) and data point mappings (docs/protocol.md §E), sent only when they changed.

A PUT of the DSC deletes the agent's mappings that lack `keepMapping`, and every request costs a board
battery and time: so the DSC text is built deterministically, its hash is kept in state after a successful
PUT, and nothing is sent while the hash is unchanged. When it did change, the service's copy is fetched
first (for its eTag) and compared, so a board whose state was wiped does not PUT an identical DSC.

Description accepted by `build` (the §E shape, plus shortcuts):
    {"configurationId": "CF-1",
     "entityId": "<asset id>", "propertySetName": "<aspect>",        # optional defaults for mappings
     "dataSources": [{"name": "DS-1", "description"?, "customData"?,
                      "dataPoints": [{"id": "DP-T", "name"?, "type": "DOUBLE", "unit"?, "description"?,
                                      "customData"?, "property"?: "<property of the default aspect>",
                                      "mappings"?: [{"entityId", "propertySetName", "propertyName"}]}]}]}
`dataSources` may also be a dict name -> dataPoints, and `dataPoints` a dict id -> "TYPE",
["TYPE", "unit"], ["TYPE", "unit", "property"] or the dict form without "id" (sorted by id then).
`name` defaults to the id, `unit` to "".
"""

import hashlib
from binascii import hexlify

from micropython import const

from mcagent import cjson, compat
from mcagent.errors import TYPES, DscError, MappingError

_MAPPINGS_PATH = const("/api/mindconnect/v3/dataPointMappings")
_MAX_DSC = const(16384)  # bytes of the service's DSC we are willing to read back


def dsc_path(client_id):
    return "/api/agentmanagement/v3/agents/%s/dataSourceConfiguration" % client_id


def _text(d, key, where, default=None):
    value = d.get(key, default)
    if not isinstance(value, str) or (not value and default is None):
        raise DscError("%s: %r must be a non-empty string" % (where, key))
    return value


def _opt_text(d, key, where):
    value = d.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DscError("%s: %r must be a string" % (where, key))
    return value


def _point_dict(pid, spec, where):
    """Turn the shortcut forms of a data point into the dict form."""
    if isinstance(spec, str):
        return {"id": pid, "type": spec}
    if isinstance(spec, (list, tuple)):
        if not 1 <= len(spec) <= 3:
            raise DscError("%s: give [type, unit, property]" % where)
        d = {"id": pid, "type": spec[0]}
        if len(spec) > 1:
            d["unit"] = spec[1]
        if len(spec) > 2:
            d["property"] = spec[2]
        return d
    if isinstance(spec, dict):
        d = dict(spec)
        d["id"] = pid
        return d
    raise DscError("%s: must be a type name, a list or a dict" % where)


def _items(value, where, what):
    """A list as is, a dict as a list of (key, value) sorted by key (dict order differs on MicroPython)."""
    if isinstance(value, dict):
        return sorted(value.items())
    if isinstance(value, (list, tuple)):
        return value
    raise DscError("%s: %s must be a list or a dict" % (where, what))


def _targets(dp, desc, where):
    """The mapping targets of one data point as (entityId, propertySetName, propertyName) tuples."""
    out = []
    prop = dp.get("property")
    if prop is not None:
        entity = dp.get("entityId", desc.get("entityId"))
        aspect = dp.get("propertySetName", desc.get("propertySetName"))
        if not entity or not aspect:
            raise DscError(
                "%s: 'property' needs 'entityId' and 'propertySetName' (here or at the top)" % where
            )
        out.append((entity, aspect, prop))
    maps = dp.get("mappings", ())
    if not isinstance(maps, (list, tuple)):
        raise DscError("%s: 'mappings' must be a list" % where)
    for m in maps:
        if not isinstance(m, dict):
            raise DscError("%s: each mapping must be a dict" % where)
        out.append(
            (_text(m, "entityId", where), _text(m, "propertySetName", where), _text(m, "propertyName", where))
        )
    for t in out:
        for part in t:
            if not isinstance(part, str) or not part:
                raise DscError("%s: mapping targets must be non-empty strings" % where)
    return out


def build(desc):
    """Description -> (DSC as cjson.Obj, [(dataPointId, entityId, propertySetName, propertyName)], types).

    types maps each data point id to its type (the uploader needs it to format values).
    """
    if not isinstance(desc, dict):
        raise DscError("the DSC description must be a dict")
    config_id = _text(desc, "configurationId", "DSC")
    sources = desc.get("dataSources")
    if not sources:
        raise DscError("DSC: 'dataSources' must list at least one data source")
    out_sources = []
    mappings = []
    types = {}
    for entry in _items(sources, "DSC", "'dataSources'"):
        if isinstance(entry, tuple):
            ds = {"name": entry[0], "dataPoints": entry[1]}
        elif isinstance(entry, dict):
            ds = entry
        else:
            raise DscError("DSC: each data source must be a dict")
        name = _text(ds, "name", "data source")
        where = "data source %r" % name
        points = ds.get("dataPoints")
        if not points:
            raise DscError("%s: 'dataPoints' must list at least one data point" % where)
        out_points = []
        for p in _items(points, where, "'dataPoints'"):
            if isinstance(p, tuple):
                p = _point_dict(p[0], p[1], "%s point %r" % (where, p[0]))
            elif not isinstance(p, dict):
                raise DscError("%s: each data point must be a dict" % where)
            pid = _text(p, "id", where + " data point")
            pwhere = "data point %r" % pid
            if pid in types:
                raise DscError("%s: the id is used twice (ids are unique per agent)" % pwhere)
            dtype = p.get("type")
            if dtype not in TYPES:
                raise DscError("%s: type %r is not one of %s" % (pwhere, dtype, ", ".join(TYPES)))
            unit = p.get("unit", "")
            if unit is None:
                unit = ""
            if not isinstance(unit, str):
                raise DscError("%s: 'unit' must be a string" % pwhere)
            types[pid] = dtype
            fields = [("id", pid), ("name", _text(p, "name", pwhere, pid))]
            text = _opt_text(p, "description", pwhere)
            if text is not None:
                fields.append(("description", text))
            fields.append(("type", dtype))
            fields.append(("unit", unit))
            if p.get("customData") is not None:
                fields.append(("customData", p["customData"]))
            out_points.append(cjson.Obj(*fields))
            for t in _targets(p, desc, pwhere):
                mappings.append((pid, t[0], t[1], t[2]))
        fields = [("name", name)]
        text = _opt_text(ds, "description", where)
        if text is not None:
            fields.append(("description", text))
        if ds.get("customData") is not None:
            fields.append(("customData", ds["customData"]))
        fields.append(("dataPoints", out_points))
        out_sources.append(cjson.Obj(*fields))
    dsc = cjson.Obj(("configurationId", config_id), ("dataSources", out_sources))
    return dsc, mappings, types


def datapoints(desc):
    """(configurationId, [(id, type), ...]) of a description in any form `build` accepts, in the DSC's
    order: the table the store records samples against (mcagent.storeboot asks for it)."""
    dsc = build(desc)[0]
    pairs = []
    for source in dsc.pairs[1][1]:
        for point in source.pairs[-1][1]:
            p = dict(point.pairs)
            pairs.append((p["id"], p["type"]))
    return dsc.pairs[0][1], pairs


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

        def count(piece):
            b = _utf8(piece)
            self.length += len(b)
            h.update(b)

        cjson.emit(value, count)
        self.digest = hexlify(h.digest()[:8]).decode()

    def write_to(self, write):
        cjson.emit(self.value, lambda piece: write(_utf8(piece)))


def _utf8(piece):
    """A piece of cjson.emit as bytes (a str's length on MicroPython counts characters, not bytes)."""
    return memoryview(compat.utf8(piece)) if isinstance(piece, str) else piece


def _mapping_body(client_id, m):
    return cjson.dumps(
        cjson.Obj(
            ("agentId", client_id),
            ("dataPointId", m[0]),
            ("entityId", m[1]),
            ("propertySetName", m[2]),
            ("propertyName", m[3]),
            ("keepMapping", True),
        )
    ).encode()


def _server_digest(doc):
    """Hash of the service's DSC in our canonical form (None when it is not one we could have sent)."""
    try:
        return _JsonBody(build(doc)[0]).digest
    except (DscError, TypeError, ValueError):
        return None


def _error(resp, what):
    """The HttpError for an unexpected answer (mcagent.httputil.http_error)."""
    return compat.call_cold("mcagent.httputil", "http_error", resp, what)


def configure(request, state, client_id, desc, force=False):
    """Make the service's DSC and mappings match desc; returns a summary dict.

    request(method, path, headers=None, body=None, max_body=...) -> Response, with authorization.
    Summary: {"dsc": "unchanged" | "same" (service already had it) | "put", "mappings": created,
    "existing": answered 409, "configurationId": id}.
    """
    dsc_obj, mappings, _ = build(desc)
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
                    raise _error(resp, "DSC upload")
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
                _mapping_body(client_id, m),
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
                raise _error(resp, "mapping")
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
        raise _error(resp, "DSC read")
    if getattr(resp, "truncated", False):
        raise DscError("the service's DSC is larger than %d bytes" % _MAX_DSC)
    doc = resp.json()
    if not isinstance(doc, dict):
        raise DscError("the service's DSC is not a JSON object")
    if _server_digest(doc) == want:
        summary["dsc"] = "same"
        return None
    etag = doc.get("eTag")
    if etag is None:
        etag = resp.headers.get("etag", "0")
    return str(etag)
