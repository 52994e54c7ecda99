"""What a 409 to a data point mapping means: the service answers it both when this agent's mapping is there
already (a node that lost its state posts it again: fine) and when the asset property is taken by another
mapping, another agent's or another data point's. The second would leave the point's values dropped by the
service while the node counts them as sent, so it must stop the uploads with a MappingError that says why.
One GET of this agent's mappings, filtered to the one posted, tells the two apart.

Loaded only on a 409 (mcagent.compat.call_cold), and released after.
"""

from micropython import const

from mcagent import cjson, compat
from mcagent.errors import MappingError

_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
_HEX = b"0123456789ABCDEF"
_MAX_PAGE = const(4096)  # one filtered page: a mapping is ~400 bytes


def _pct(text):
    """text percent-encoded for a query (built as bytes: no character of it becomes a name)."""
    out = bytearray()
    for b in memoryview(compat.utf8(text)):
        if b in _SAFE:
            out.append(b)
        else:
            out.append(37)  # %
            out.append(_HEX[b >> 4])
            out.append(_HEX[b & 15])
    return bytes(out).decode()


def own(request, path, client_id, m):
    """True when the service lists this agent's mapping m = (dataPointId, entityId, aspect, property)."""
    flt = cjson.Obj(
        ("agentId", client_id),
        ("dataPointId", m[0]),
        ("entityId", m[1]),
        ("propertySetName", m[2]),
        ("propertyName", m[3]),
    )
    resp = request("GET", path + "?filter=" + _pct(cjson.dumps(flt)), None, None, _MAX_PAGE)
    if resp.status != 200:
        raise compat.call_cold("mcagent.httputil", "http_error", resp, "mapping check")
    try:
        page = None if getattr(resp, "truncated", False) else resp.json()
    except ValueError:
        page = None
    found = page.get("content") if isinstance(page, dict) else None
    if not isinstance(found, list):  # a proxy's page, a cut one: no answer, not another agent's mapping
        raise compat.call_cold("mcagent.httputil", "http_error", resp, "mapping check (unreadable page)")
    for f in found:
        if (
            isinstance(f, dict)
            and f.get("agentId") == client_id
            and (f.get("dataPointId"), f.get("entityId"), f.get("propertySetName"), f.get("propertyName"))
            == (m[0], m[1], m[2], m[3])
        ):
            return True
    return False


def check(request, path, client_id, m, resp):
    """After a 409 to mapping m: nothing when it is this agent's own, else MappingError naming the cause."""
    if own(request, path, client_id, m):
        return
    try:
        why = resp.json().get("message")
    except (ValueError, AttributeError):
        why = None
    raise MappingError(
        "mapping %s -> %s/%s/%s refused (HTTP 409%s): the property or the point is mapped otherwise (another "
        "agent's mapping, or this point onto another property of the asset); give this board its own asset "
        "(dsc.entityId) or remove that mapping"
        % (m[0], m[1], m[2], m[3], ": %s" % str(why)[:200] if why else "")
    )
