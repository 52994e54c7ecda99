"""MindConnect data APIs: exchange, data point mappings, events, diagnostics."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from . import assets, configs
from .clock import iso_ms
from .errors import ApiError, bad_request, forbidden, not_found
from .ingest import ingest
from .multipart import ExchangeParser, MultipartError, TooLarge
from .service import HEX32
from .storage import Conflict
from .validation import STANDARD_EVENT_TYPE, Invalid, check_api_event
from .webutil import agent_auth, json_body, json_response, own_agent, own_entity, page, service

routes = web.RouteTableDef()
MC = "/api/mindconnect/v3"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


LINGER_S = 2.0
LINGER_BYTES = 16 * 1024 * 1024


async def send_and_close(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Send `resp` at once, then close the connection without processing the rest of the request body.

    Before closing, up to LINGER_BYTES / LINGER_S of the unread body are discarded (never held): closing a
    TCP connection with unread input makes the kernel send a reset that can destroy the answer before
    the client reads it.
    """
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_S
    drained = 0
    try:
        while drained < LINGER_BYTES and not request.content.at_eof():
            left = deadline - loop.time()
            if left <= 0:
                break
            chunk = await asyncio.wait_for(request.content.readany(), left)
            if not chunk:
                break
            drained += len(chunk)
    except (asyncio.TimeoutError, ConnectionError, aiohttp.ClientError):
        pass
    if request.protocol is not None:
        request.protocol.force_close()
    return resp


def too_large(cap: int) -> ApiError:
    return ApiError(413, f"request body exceeds the exchange limit of {cap} bytes")


@routes.post(MC + "/exchange")
async def exchange(request: web.Request) -> web.StreamResponse:
    agent = agent_auth(request)
    svc = service(request)
    cap = svc.settings.max_exchange_bytes
    if request.content_length is not None and request.content_length > cap:
        return await send_and_close(request, too_large(cap).response())
    try:
        parser = ExchangeParser(request.headers.get("Content-Type", ""), max_bytes=cap)
    except MultipartError as exc:
        raise bad_request(str(exc)) from exc
    items: list[Any] = []
    total = 0
    try:
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > cap:
                raise TooLarge(f"request body exceeds {cap} bytes")
            items.extend(parser.feed(chunk))
        items.extend(parser.finish())
    except TooLarge:
        return await send_and_close(request, too_large(cap).response())
    except MultipartError as exc:
        raise bad_request(str(exc)) from exc
    correlation = request.headers.get("Correlation-ID") or str(uuid.uuid4())
    # Up to 10 MiB of items become ~10^5 rows: stored on a worker thread, the event loop keeps serving.
    await asyncio.to_thread(ingest, svc, agent, items, correlation[:64])
    return web.Response(status=200)


# mappings -------------------------------------------------------------------------------------------------
def _mapping_budget(request: web.Request, agent: dict[str, Any]) -> None:
    svc = service(request)
    limit = svc.settings.mapping_calls_per_hour
    if not limit:
        return
    n = svc.storage.count_mapping_call(agent["tenant"], svc.clock.now_ms(), 3600 * 1000)
    if n > limit:
        raise ApiError(429, f"mapping calls are limited to {limit} per hour", headers={"Retry-After": "60"})


@routes.post(MC + "/dataPointMappings")
async def create_mapping(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    _mapping_budget(request, agent)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("mapping must be a JSON object")
    for key in ("agentId", "dataPointId", "entityId", "propertySetName", "propertyName"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise bad_request(f"mapping field {key!r} is required and must be a non-empty string")
    keep = body.get("keepMapping", False)
    if not isinstance(keep, bool):
        raise bad_request("keepMapping must be true or false")
    own_agent(request, agent, body["agentId"])
    entity, pset, prop = body["entityId"], body["propertySetName"], body["propertyName"]
    if not HEX32.match(entity):
        raise bad_request("entityId must be 32 lowercase hex characters")
    own_entity(request, agent, entity)  # not onto another agent's asset
    if service(request).storage.entity_tenants(entity) - {agent["tenant"]}:
        raise forbidden(f"entity {entity} belongs to another tenant")
    for what, name in (("propertySetName", pset), ("propertyName", prop)):
        if not _NAME_RE.match(name):
            raise bad_request(f"{what} {name[:64]!r} is not a valid name")
    svc = service(request)
    st = svc.storage
    _, points = configs.dsc_points(st, agent["id"])
    dp = points.get(body["dataPointId"])
    if dp is None:
        raise bad_request(
            "data point {!r} is not in the agent's data source configuration".format(body["dataPointId"][:64])
        )
    now = svc.clock.now_ms()
    try:
        with st.tx():
            assets.check_mapping_target(svc, agent["tenant"], entity, pset, prop, dp, now)
            for m in st.mappings_of_property(entity, pset, prop):
                if m["agent_id"] == agent["id"] and m["data_point_id"] == dp["id"]:
                    raise Conflict("this mapping already exists (id {})".format(m["id"]))
                raise Conflict(
                    "property {}.{} of entity {} already takes data point {!r}".format(
                        pset, prop, entity, m["data_point_id"]
                    )
                )
            for m in st.mappings_of_point(agent["id"], dp["id"]):
                if m["entity_id"] == entity and m["property_set"] == pset:
                    raise Conflict(
                        "data point {!r} is already mapped to {}.{} of this entity".format(
                            dp["id"], pset, m["property"]
                        )
                    )
            row = {
                "id": uuid.uuid4().hex,
                "agent_id": agent["id"],
                "data_point_id": dp["id"],
                "entity_id": entity,
                "property_set": pset,
                "property": prop,
                "keep": int(keep),
                "validity": json.dumps({"status": "VALID", "reasons": []}),
                "created_ms": now,
            }
            st.add_mapping(row)
    except Conflict as exc:
        raise ApiError(409, str(exc)) from exc
    stored = st.mapping(row["id"])
    assert stored is not None
    return json_response(configs.mapping_json(st, stored, points), status=201)


def _filter(request: web.Request, agent: dict[str, Any]) -> dict[str, str]:
    raw = request.query.get("filter")
    if not raw:
        return {}
    try:
        flt = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request("filter must be a JSON object") from exc
    if not isinstance(flt, dict):
        raise bad_request("filter must be a JSON object")
    allowed = {"agentId", "dataPointId", "entityId", "propertySetName", "propertyName"}
    out: dict[str, str] = {}
    for key, value in flt.items():
        if key not in allowed or not isinstance(value, str):
            raise bad_request("filter supports string values of {}".format(", ".join(sorted(allowed))))
        if key == "agentId":
            if value != agent["id"]:
                raise forbidden("the access token belongs to another agent")
            continue
        out[key] = value
    return out


@routes.get(MC + "/dataPointMappings")
async def list_mappings(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    _mapping_budget(request, agent)
    st = service(request).storage
    _, points = configs.dsc_points(st, agent["id"])
    rows = [configs.mapping_json(st, m, points) for m in st.mappings(agent["id"], **_filter(request, agent))]
    return json_response(page(request, rows))


def _own_mapping(request: web.Request, agent: dict[str, Any]) -> dict[str, Any]:
    m = service(request).storage.mapping(request.match_info["mapping_id"])
    if m is None or m["agent_id"] != agent["id"]:
        raise not_found("mapping not found")
    return m


@routes.get(MC + "/dataPointMappings/{mapping_id}")
async def get_mapping(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    st = service(request).storage
    m = _own_mapping(request, agent)
    _, points = configs.dsc_points(st, agent["id"])
    return json_response(configs.mapping_json(st, m, points))


@routes.delete(MC + "/dataPointMappings/{mapping_id}")
async def delete_mapping(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    _mapping_budget(request, agent)
    m = _own_mapping(request, agent)
    service(request).storage.delete_mapping(m["id"])
    return web.Response(status=204)


# events -----------------------------------------------------------------------------------------------
@routes.post("/api/eventmanagement/v3/events")
async def post_event(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    event = await json_body(request)
    if not isinstance(event, dict):
        raise bad_request("event must be a JSON object")
    entity = event.get("entityId")
    if not isinstance(entity, str) or not HEX32.match(entity):
        raise bad_request("entityId must be 32 lowercase hex characters")
    own_entity(request, agent, entity)
    try:
        ts_ms, severity, desc = check_api_event(event)
    except Invalid as exc:
        raise bad_request(str(exc)) from exc
    type_id = STANDARD_EVENT_TYPE
    svc = service(request)
    now = svc.clock.now_ms()
    stored = dict(event)
    stored.update(
        {
            "id": str(uuid.uuid4()),
            "typeId": type_id,
            "severity": severity,
            "description": desc,
            "timestamp": iso_ms(ts_ms),
            "correlationId": event.get("correlationId") or str(uuid.uuid4()),
            "etag": 0,
        }
    )
    with svc.storage.tx():
        svc.storage.ensure_asset(entity, now, tenant=agent["tenant"])
        svc.storage.upsert_event(
            {
                "id": stored["id"],
                "agent_id": agent["id"],
                "entity_id": entity,
                "source": "eventmanagement",
                "ts_ms": ts_ms,
                "severity": severity,
                "description": desc,
                "body": json.dumps(stored),
                "received_ms": now,
            }
        )
    stored["_links"] = {
        "self": {"href": "{}/api/eventmanagement/v3/events/{}".format(svc.base_url, stored["id"])}
    }
    return json_response(stored, status=201)


# diagnostics ------------------------------------------------------------------------------------------
def _activation_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "agentId": row["agent_id"], "status": row["status"]}


def _diag_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "agentId": row["agent_id"],
        "correlationId": row["correlation_id"],
        "severity": row["severity"],
        "message": row["message"],
        "source": row["source"],
        "state": row["state"],
        "timestamp": iso_ms(row["ts_ms"]),
    }


ACTIVATION_LIFETIME_MS = 3600 * 1000  # the real service switches an activation off after an hour


def _fresh_activations(request: web.Request) -> None:
    svc = service(request)
    svc.storage.expire_activations(svc.clock.now_ms(), ACTIVATION_LIFETIME_MS)


@routes.post(MC + "/diagnosticActivations")
async def activate(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("agentId"), str):
        raise bad_request('body must be {"agentId": "<agent id>"}')
    own_agent(request, agent, body["agentId"])
    status = body.get("status", "ACTIVE")
    if status not in ("ACTIVE", "INACTIVE"):
        raise bad_request("status must be ACTIVE or INACTIVE")
    svc = service(request)
    now = svc.clock.now_ms()
    row = {
        "id": uuid.uuid4().hex,
        "agent_id": agent["id"],
        "tenant": agent["tenant"],
        "status": status,
        "created_ms": now,
        "active_since_ms": now if status == "ACTIVE" else None,
    }
    most = svc.settings.diagnostic_activations_per_tenant
    why = svc.storage.add_activation(row, most, now, ACTIVATION_LIFETIME_MS)
    if why == "exists":
        raise ApiError(409, "a diagnostic activation exists for this agent already")
    if why == "limit":
        raise bad_request(f"at most {most} agents per tenant can have diagnostics activated")
    return json_response(_activation_json(row), status=201)


@routes.get(MC + "/diagnosticActivations")
async def list_activations(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    _fresh_activations(request)
    acts = [a for a in service(request).storage.activations(agent["tenant"]) if a["agent_id"] == agent["id"]]
    return json_response(page(request, [_activation_json(a) for a in acts]))


def _own_activation(request: web.Request, agent: dict[str, Any]) -> dict[str, Any]:
    _fresh_activations(request)
    act = service(request).storage.activation(request.match_info["activation_id"])
    if act is None or act["agent_id"] != agent["id"]:
        raise not_found("diagnostic activation not found")
    return act


@routes.get(MC + "/diagnosticActivations/{activation_id}")
async def get_activation(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    return json_response(_activation_json(_own_activation(request, agent)))


@routes.put(MC + "/diagnosticActivations/{activation_id}")
async def put_activation(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    act = _own_activation(request, agent)
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("status") not in ("ACTIVE", "INACTIVE"):
        raise bad_request('body must be {"status": "ACTIVE"|"INACTIVE"}')
    svc = service(request)
    if body["status"] == "ACTIVE" and act["status"] != "ACTIVE":
        most = svc.settings.diagnostic_activations_per_tenant
        active = [a for a in svc.storage.activations(agent["tenant"]) if a["status"] == "ACTIVE"]
        if len(active) >= most:
            raise bad_request(f"at most {most} agents per tenant can have diagnostics activated")
    svc.storage.set_activation(act["id"], body["status"], svc.clock.now_ms())
    act["status"] = body["status"]
    return json_response(_activation_json(act))


@routes.delete(MC + "/diagnosticActivations/{activation_id}")
async def delete_activation(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    act = _own_activation(request, agent)
    service(request).storage.delete_activation(act["id"])
    return web.Response(status=204)


def _recorded_while_active(request: web.Request, agent_id: str) -> list[dict[str, Any]]:
    """The agent's messages from the hour its activation was on (none without an activation): the real
    service records diagnostics only for activated agents. `southgate diagnostics` shows them all."""
    st = service(request).storage
    act = next((a for a in st.activations_of_agent(agent_id)), None)
    if act is None or act["active_since_ms"] is None:
        return []
    start = act["active_since_ms"]
    end = start + ACTIVATION_LIFETIME_MS
    return [r for r in st.diagnostics([agent_id], since_ms=start) if r["ts_ms"] <= end]


@routes.get(MC + "/diagnosticActivations/{activation_id}/messages")
async def activation_messages(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    _own_activation(request, agent)
    rows = _recorded_while_active(request, agent["id"])
    return json_response(page(request, [_diag_json(r) for r in rows], default_size=20))


@routes.get(MC + "/diagnosticInformation")
async def diagnostic_information(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    wanted = request.query.get("agentId")
    if wanted:
        own_agent(request, agent, wanted)
    rows = _recorded_while_active(request, agent["id"])
    return json_response(page(request, [_diag_json(r) for r in rows], default_size=20))
