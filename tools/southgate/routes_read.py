"""Reading time series back like an application would (§G): IoT Time Series and IoT TS Bulk."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from . import readback
from .clock import parse_iso
from .errors import bad_request, forbidden
from .service import HEX32
from .webutil import agent_auth, base_url, int_param, is_admin, json_response, service

routes = web.RouteTableDef()


def read_auth(request: web.Request) -> None:
    """Reading back (IoT Time Series, TS Bulk, IoT files) is for applications with a tenant token (here the
    admin token), as on the real service: an agent's token (scope mdsp:core:Agent) is for the agent APIs."""
    if is_admin(request):
        return
    agent_auth(request)  # 401 for what is not even an agent token
    raise forbidden(
        "agent access tokens (scope mdsp:core:Agent) are for the agent APIs; read back with a tenant "
        "token (southgate: the admin token)"
    )


def _time(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError as exc:
        raise bad_request(f"query parameter {name!r}: {exc}") from exc


def _range(request: web.Request, required: bool) -> tuple[int | None, int | None]:
    lo, hi = _time(request, "from"), _time(request, "to")
    if (lo is None) != (hi is None) or (required and lo is None):
        raise bad_request("from and to must be given together" + (" (both required)" if required else ""))
    if lo is not None and hi is not None and lo >= hi:
        raise bad_request("from must be before to")
    return lo, hi


@routes.get("/api/iottimeseries/v3/timeseries/{entity_id}/{pset}")
async def iot_timeseries(request: web.Request) -> web.Response:
    read_auth(request)
    entity, pset = request.match_info["entity_id"], request.match_info["pset"]
    if not HEX32.match(entity):
        raise bad_request("entityId must be 32 lowercase hex characters")
    st = service(request).storage
    if st.asset(entity) is None:
        raise web.HTTPNotFound(reason=f"asset {entity} not found")
    lo, hi = _range(request, required=False)
    limit = int_param(request, "limit", 2000, 1, 2000)
    select = [s.strip() for s in request.query.get("select", "").split(",") if s.strip()] or None
    if lo is None or hi is None:
        records = readback.asset_records(st, entity, pset, -(2**62), 2**62, 1, select, newest_first=True)
    else:
        records = readback.asset_records(st, entity, pset, lo, hi, limit, select, newest_first=True)
    return json_response(records)


@routes.get("/api/iottsbulk/v3/timeseries")
async def iot_bulk(request: web.Request) -> web.Response:
    read_auth(request)
    entity = request.query.get("entity", "")
    pset = request.query.get("propertySetName", "")
    if not HEX32.match(entity):
        raise bad_request("entity must be 32 lowercase hex characters")
    if not pset:
        raise bad_request("propertySetName is required")
    lo, hi = _range(request, required=True)
    assert lo is not None and hi is not None
    limit = int_param(request, "limit", 2000, 1, 5000)
    st = service(request).storage
    records = readback.asset_records(st, entity, pset, lo, hi, limit + 1, None, newest_first=False)
    body: dict[str, object] = {"records": records[:limit]}
    if len(records) > limit:
        query = {
            "entity": entity,
            "propertySetName": pset,
            "from": records[limit]["_time"],
            "to": request.query["to"],
            "limit": str(limit),
        }
        body["nextRecord"] = f"{base_url(request)}/api/iottsbulk/v3/timeseries?{urlencode(query)}"
    return json_response(body)
