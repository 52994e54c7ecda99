"""The read APIs applications use (§G), as documented for Insights Hub: Token Manager, IoT Time Series v3,
IoT TS Bulk v3 (read and import jobs). Agent tokens are refused here; app tokens read their own tenant."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from . import apps, assets, importjobs, readback
from .clock import iso_ms, parse_iso
from .errors import ApiError, bad_request, forbidden
from .service import HEX32
from .webutil import (
    agent_auth,
    base_url,
    bearer,
    bool_param,
    int_param,
    is_admin,
    json_body,
    json_response,
    service,
)

routes = web.RouteTableDef()
TS = "/api/iottimeseries/v3/timeseries"
BULK = "/api/iottsbulk/v3"
MAX_TS_LIMIT = 2000
MAX_VALUES = 100_000  # property values per answer (records x properties): the rest follows on the next page
MAX_BULK_RANGE_MS = 90 * 86400 * 1000
LATEST_MIN_AGE_MS = 5 * 60 * 1000  # latestValue: values must be at least 5 minutes old ...
LATEST_MAX_AGE_MS = 90 * 86400 * 1000  # ... and at most 90 days


def read_auth(request: web.Request) -> str | None:
    """The tenant a read request may see: an app token's tenant, or None (all) for the admin token.

    As on the real service an agent's token (scope mdsp:core:Agent) is for the agent APIs: 403 here."""
    if is_admin(request):
        request["agent_id"] = "admin"
        return None
    svc = service(request)
    app = apps.app_for_token(svc, bearer(request))
    if app is not None:
        request["agent_id"] = "app:" + app["client_id"][:48]
        return str(app["tenant"])
    agent_auth(request)  # 401 for what is not even an agent token
    raise forbidden(
        "agent access tokens (scope mdsp:core:Agent) are for the agent APIs; read with a tenant token "
        "from Token Manager (southgate app create) or the admin token"
    )


@routes.post("/api/technicaltokenmanager/v3/oauth/token")
async def token_manager(request: web.Request) -> web.Response:
    key = request.headers.get("X-SPACE-AUTH-KEY", "")
    body = await json_body(request)
    return json_response(apps.issue_token(service(request), key, body))


@routes.get("/token_keys")
async def token_keys(request: web.Request) -> web.Response:
    """The signing keys of tenant tokens (what the Node SDK fetches from the gateway's PIAM URL), the PEM
    with its line breaks as UAA serves it (the agent API's one-line form is what Node's agent code wants)."""
    keys = service(request).keys
    key = keys.token_jwk()
    pem = keys.token_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key["value"] = pem.decode().strip()
    return json_response({"keys": [key]})


def _time(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError as exc:
        raise bad_request(f"query parameter {name!r}: {exc}") from exc


def _target(request: web.Request, tenant: str | None) -> tuple[str, str]:
    entity, pset = request.match_info["entity_id"], request.match_info["pset"]
    if not HEX32.match(entity):
        raise bad_request("entityId must be 32 lowercase hex characters")
    if not assets.ASPECT_RE.match(pset):
        raise bad_request("propertySetName is not a valid aspect name")
    assets.in_tenant(service(request), entity, tenant)
    return entity, pset


def _select(request: web.Request) -> list[str] | None:
    raw = request.query.get("select")
    if raw is None:
        return None
    names = [s.strip() for s in raw.split(",") if s.strip()]
    if not names or len(names) > 100 or any(not assets.NAME_RE.match(n) for n in names):
        raise bad_request("select must be a comma-separated list of at most 100 property names")
    return names


def _records_cap(svc: Any, entity: str, pset: str, select: list[str] | None) -> int:
    """Records one answer may hold so that records x properties stays under MAX_VALUES: an aspect of a
    thousand variables must not make one read a gigabyte (the next page follows by its Link or nextRecord)."""
    n = len(select) if select else svc.storage.prop_count(entity, pset)
    return max(1, MAX_VALUES // max(1, n))


def _next_link(request: web.Request, changes: dict[str, str]) -> str:
    query = {k: v for k, v in request.query.items()}
    query.update(changes)
    return f'<{base_url(request)}{request.path}?{urlencode(query)}>; rel="next"'


@routes.get(TS + "/{entity_id}/{pset}")
async def iot_timeseries(request: web.Request) -> web.Response:
    """`from` exclusive, `to` inclusive; at most `limit` (<= 2000) records, the first ones in the chosen
    order (`sort`, default asc) and a `Link: <...>; rel="next"` header when there are more; no range: the
    latest record; `latestValue=true`: each property's latest value (5 min to 90 days old)."""
    tenant = read_auth(request)
    entity, pset = _target(request, tenant)
    svc = service(request)
    st = svc.storage
    lo, hi = _time(request, "from"), _time(request, "to")
    if (lo is None) != (hi is None):
        raise bad_request("from and to must be given together")
    if lo is not None and hi is not None and lo >= hi:
        raise bad_request("from must be before to")
    limit = int_param(request, "limit", MAX_TS_LIMIT, 1, MAX_TS_LIMIT)
    select = _select(request)
    limit = min(limit, _records_cap(svc, entity, pset, select))
    sort = request.query.get("sort", "asc").lower()
    if sort not in ("asc", "desc"):
        raise bad_request("sort must be asc or desc")
    if bool_param(request, "latestValue"):
        now = svc.clock.now_ms()
        rows = await asyncio.to_thread(
            st.latest_values, entity, pset, now - LATEST_MAX_AGE_MS, now - LATEST_MIN_AGE_MS, select
        )
        return json_response(readback.records(rows, descending=False))
    if lo is None or hi is None:
        rows = await asyncio.to_thread(st.asset_page, entity, pset, -(2**62), 2**62, 1, True, select)
        return json_response(readback.records(rows, descending=False))
    rows = await asyncio.to_thread(st.asset_page, entity, pset, lo, hi, limit + 1, sort == "desc", select)
    records = readback.records(rows, descending=sort == "desc")
    headers = {}
    if len(records) > limit:
        records = records[:limit]
        last = parse_iso(records[-1]["_time"])
        # The next page starts after the last record: `from` is exclusive; going backwards `to` is
        # inclusive, so it moves one millisecond before the last record.
        change = {"from": iso_ms(last)} if sort == "asc" else {"to": iso_ms(last - 1)}
        headers["Link"] = _next_link(request, change)
    return json_response(records, headers=headers)


@routes.get(BULK + "/timeseries/{entity_id}/{pset}")
async def iot_bulk(request: web.Request) -> web.Response:
    """`{records, nextRecord?}` for (from, to] (both required, under 90 days); `limit` caps the total and
    the next URL carries what is left of it, as the real service does."""
    tenant = read_auth(request)
    entity, pset = _target(request, tenant)
    lo, hi = _time(request, "from"), _time(request, "to")
    if lo is None or hi is None:
        raise bad_request("from and to are required")
    if lo >= hi:
        raise bad_request("from must be before to")
    if hi - lo >= MAX_BULK_RANGE_MS:
        raise bad_request("the range between from and to must be less than 90 days")
    limit = int_param(request, "limit", 0, 1, 10**9) if request.query.get("limit") else None
    select = _select(request)
    # The real service answers as much as fits its size and time limits; southgate a set number.
    most = max(
        1,
        min(
            service(request).settings.bulk_page_records, _records_cap(service(request), entity, pset, select)
        ),
    )
    page = min(most, limit) if limit else most
    st = service(request).storage
    rows = await asyncio.to_thread(st.asset_page, entity, pset, lo, hi, page + 1, False, select)
    records = readback.records(rows, descending=False)
    body: dict[str, Any] = {"records": records[:page]}
    left = None if limit is None else limit - min(page, len(records))
    if len(records) > page and (left is None or left > 0):
        query = {k: v for k, v in request.query.items()}
        query["from"] = records[page - 1]["_time"]
        if left is not None:
            query["limit"] = str(left)
        body["nextRecord"] = f"{base_url(request)}{request.path}?{urlencode(query)}"
    return json_response(body)


# import jobs ----------------------------------------------------------------------------------------------
def _job_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "message": row["message"],
        "startTime": iso_ms(row["created_ms"]),
        "lastModified": iso_ms(row["modified_ms"]),
    }


@routes.post(BULK + "/importJobs")
async def create_import_job(request: web.Request) -> web.Response:
    """Checks the request at once (400), then validates and imports the files in the background: the job
    ends SUCCESS, or ERROR with the reasons and nothing imported."""
    tenant = read_auth(request)
    svc = service(request)
    body = await json_body(request)
    entity, pset, files = importjobs.check_request(body)
    row = assets.in_tenant(svc, entity, tenant)
    if pset not in svc.storage.aspect_names(entity):
        raise ApiError(404, f"aspect {pset!r} not found on asset {entity}")
    now = svc.clock.now_ms()
    job = {
        "id": uuid.uuid4().hex,
        "tenant": row["tenant"],
        "entity_id": entity,
        "property_set": pset,
        "status": "SUBMITTED",
        "message": "job submitted",
        "request": json.dumps(body),
        "created_ms": now,
        "modified_ms": now,
    }
    svc.storage.add_import_job(job)
    importjobs.start(svc, job["id"], entity, pset, files)
    return json_response(_job_json(job), status=201, headers={"Location": f"{BULK}/importJobs/{job['id']}"})


@routes.get(BULK + "/importJobs/{job_id}")
async def get_import_job(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    job = service(request).storage.import_job(request.match_info["job_id"][:64])
    if job is None or (tenant is not None and job["tenant"] != tenant):
        raise ApiError(404, "import job not found")
    return json_response(_job_json(job))
