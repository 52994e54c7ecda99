"""Data source configuration (DSC) and data point mappings (docs/protocol.md §E), sent only when they changed.

A PUT of the DSC deletes the agent's mappings that lack `keepMapping`, and every request costs a board
battery and time: so the DSC text is built deterministically, its hash is kept in state after a successful
PUT, and nothing is sent while the hash is unchanged. When it did change, the service's copy is fetched
first (for its eTag) and compared, so a board whose state was wiped does not PUT an identical DSC. This module
builds the DSC from a description and checks it; putting it and the mappings is mcagent.dscput's (the network
half, loaded without this one while the requests go out).

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

from mcagent import cjson
from mcagent.errors import TYPES, DscError


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
