"""Asset Management, as far as a mapping needs it: assets with aspects and typed variables, per tenant.

Shaped like `/api/assetmanagement/v3` where practical; the real service models aspect types and asset types
first and instantiates assets from them, southgate takes an asset with its aspects inline. Tenant tokens
(app credentials) see and create assets of their tenant, the admin token any.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import assets
from .errors import bad_request
from .routes_read import read_auth
from .storage import Variable
from .webutil import int_param, json_body, json_response, service

routes = web.RouteTableDef()
AM = "/api/assetmanagement/v3/assets"
MAX_VARIABLES = 1000


def _variables(body: dict[str, Any]) -> list[Variable]:
    aspects = body.get("aspects", [])
    if not isinstance(aspects, list):
        raise bad_request("aspects must be a list of {name, variables: [{name, dataType, unit}]}")
    out: list[Variable] = []
    for a in aspects:
        if not isinstance(a, dict) or not isinstance(a.get("variables", []), list):
            raise bad_request("each aspect must be {name, variables: [{name, dataType, unit}]}")
        for v in a.get("variables", []):
            if not isinstance(v, dict):
                raise bad_request("each variable must be {name, dataType, unit}")
            try:
                out.append(
                    assets.check_variable(a.get("name"), v.get("name"), v.get("dataType"), v.get("unit", ""))
                )
            except ValueError as exc:
                raise bad_request(str(exc)) from exc
    if len(out) > MAX_VARIABLES:
        raise bad_request(f"at most {MAX_VARIABLES} variables per request")
    return out


@routes.post(AM)
async def create_asset(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    wanted = body.get("tenant")
    if tenant is not None and wanted not in (None, tenant):
        raise bad_request("a tenant token creates assets in its own tenant only")
    if tenant is not None and body.get("assetId") is not None:
        # As on Insights Hub the service chooses the id: a chosen one taken in another tenant would answer
        # 409 and so tell this tenant that the other's asset exists.
        raise bad_request(
            "assetId is chosen by the service; the admin token (southgate asset create --id) sets one"
        )
    created = assets.create(
        service(request), tenant or wanted, body.get("name"), _variables(body), body.get("assetId")
    )
    return json_response(created, status=201)


@routes.get(AM)
async def list_assets(request: web.Request) -> web.Response:
    """Asset Management's paged list (?page=&size=, 10 by default, at most 2000): only the page's assets
    are read, each with its aspects and variables."""
    tenant = read_auth(request)
    svc = service(request)
    size = int_param(request, "size", 10, 1, 2000)
    number = int_param(request, "page", 0, 0, 10**6)
    all_rows = svc.storage.assets(tenant)
    rows = [assets.asset_json(svc, r["entity_id"]) for r in all_rows[number * size : (number + 1) * size]]
    total = len(all_rows)
    return json_response(
        {
            "_embedded": {"assets": rows},
            "page": {"size": size, "totalElements": total, "totalPages": -(-total // size), "number": number},
        }
    )


@routes.get(AM + "/{asset_id}")
async def get_asset(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    svc = service(request)
    row = assets.in_tenant(svc, request.match_info["asset_id"][:64], tenant)
    return json_response(assets.asset_json(svc, row["entity_id"]))


@routes.get(AM + "/{asset_id}/aspects")
async def get_aspects(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    svc = service(request)
    row = assets.in_tenant(svc, request.match_info["asset_id"][:64], tenant)
    found = [assets.aspect_json(svc, row["entity_id"], a) for a in svc.storage.aspect_names(row["entity_id"])]
    return json_response({"_embedded": {"aspects": found}})
