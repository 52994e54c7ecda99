"""Admin API for tests and tools (Bearer DIR/admin-token): agents, faults, settings, counters, read-back."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from . import faults, readback
from .clock import parse_iso
from .errors import bad_request, not_found
from .webutil import SERVICE_KEY, admin_auth, base_url, json_body, json_response, service, stored_content_type

routes = web.RouteTableDef()
COUNTERS_KEY: web.AppKey[Any] = web.AppKey("counters", object)


@routes.post("/admin/agents")
async def create_agent(request: web.Request) -> web.Response:
    admin_auth(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    svc = service(request)
    agent = svc.create_agent(body.get("name"), body.get("tenant"), body.get("entityId"))
    config = svc.boarding_config(agent["id"], base_url(request))
    return json_response(config, status=201)


@routes.get("/admin/agents")
async def list_agents(request: web.Request) -> web.Response:
    admin_auth(request)
    svc = service(request)
    return json_response([dict(svc.agent_json(a), status=a["status"]) for a in svc.storage.agents()])


@routes.get("/admin/agents/{agent_id}/config")
async def agent_config(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response(service(request).boarding_config(request.match_info["agent_id"], base_url(request)))


@routes.post("/admin/agents/{agent_id}/offboard")
async def offboard(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response(service(request).offboard(request.match_info["agent_id"]))


def _range(request: web.Request) -> tuple[int | None, int | None]:
    out: list[int | None] = []
    for name in ("from", "to"):
        raw = request.query.get(name)
        try:
            out.append(parse_iso(raw) if raw else None)
        except ValueError as exc:
            raise bad_request(f"{name}: {exc}") from exc
    return out[0], out[1]


@routes.get("/admin/agents/{agent_id}/{what}")
async def read_back(request: web.Request) -> web.Response:
    admin_auth(request)
    svc = service(request)
    agent = svc.agent_or_404(request.match_info["agent_id"])
    what = request.match_info["what"]
    lo, hi = _range(request)
    # Read-back answers grow with what the agent sent: read on a worker thread, off the event loop.
    if what == "timeseries":
        return json_response(await asyncio.to_thread(readback.timeseries, svc.storage, agent["id"], lo, hi))
    if what == "events":
        return json_response(await asyncio.to_thread(readback.events, svc.storage, agent["id"], lo, hi))
    if what == "files":
        return json_response(await asyncio.to_thread(readback.files, svc.storage, agent["id"], lo, hi))
    if what == "diagnostics":
        return json_response(await asyncio.to_thread(readback.diagnostics, svc.storage, agent["id"]))
    if what == "dsc":
        row = svc.storage.dsc(agent["id"])
        from .configs import dsc_json

        return json_response(dsc_json(row) if row else None)
    if what == "items":
        full = _flag(request, "full")
        rows = await asyncio.to_thread(svc.storage.custom_items, agent["id"])
        return json_response([_custom_item_json(r, full) for r in rows])
    raise web.HTTPNotFound()


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise bad_request(f"{name}: expected true or false")


def _custom_item_json(row: dict[str, Any], full: bool) -> dict[str, Any]:
    """A custom item in a listing; `full` adds what a test needs to fetch and check it (id, details,
    receivedMs). The short form is what the listing always answered."""
    out: dict[str, Any] = {
        "type": row["type"],
        "version": row["version"],
        "contentType": row["content_type"],
        "size": row["size"],
    }
    if full:
        out["id"] = row["id"]
        out["details"] = json.loads(row["details"])
        out["receivedMs"] = row["received_ms"]
    return out


@routes.get("/admin/agents/{agent_id}/items/{item_id}")
async def custom_item(request: web.Request) -> web.Response:
    """One custom item's payload exactly as the agent sent it, as an attachment of its own Content-Type."""
    admin_auth(request)
    svc = service(request)
    agent = svc.agent_or_404(request.match_info["agent_id"])
    raw_id = request.match_info["item_id"]
    row = None
    if re.fullmatch(r"[0-9]{1,18}", raw_id):
        row = await asyncio.to_thread(svc.storage.custom_item, agent["id"], int(raw_id))
    if row is None:
        raise not_found(f"no such custom item of agent {agent['id']}")
    return web.Response(
        body=bytes(row["payload"]),
        headers={
            "Content-Type": stored_content_type(row["content_type"]),
            "Content-Disposition": f'attachment; filename="item-{row["id"]}.bin"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/admin/faults")
async def list_faults(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response([faults.public(f) for f in service(request).storage.faults()])


@routes.post("/admin/faults")
async def add_fault(request: web.Request) -> web.Response:
    admin_auth(request)
    spec = await json_body(request)
    try:
        path, method, count, kind, params = faults.validate_spec(spec)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    svc = service(request)
    fid = svc.storage.add_fault(path, method, count, kind, params, svc.clock.now_ms())
    return json_response(
        {"id": fid, "path": path, "method": method, "remaining": count, "kind": kind, **params}, status=201
    )


@routes.delete("/admin/faults")
async def clear_faults(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response({"cleared": service(request).storage.clear_faults()})


@routes.get("/admin/settings")
async def get_settings(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response(service(request).settings.to_dict())


async def _change_settings(request: web.Request) -> web.Response:
    admin_auth(request)
    changes = await json_body(request)
    if not isinstance(changes, dict):
        raise bad_request("body must be a JSON object of setting names and values")
    try:
        return json_response(service(request).change_settings(changes))
    except ValueError as exc:
        raise bad_request(str(exc)) from exc


routes.put("/admin/settings")(_change_settings)
routes.patch("/admin/settings")(_change_settings)
routes.post("/admin/settings")(_change_settings)


@routes.get("/admin/counters")
async def get_counters(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response(request.app[COUNTERS_KEY].to_dict())


@routes.delete("/admin/counters")
async def reset_counters(request: web.Request) -> web.Response:
    admin_auth(request)
    request.app[COUNTERS_KEY].reset()
    return json_response({"reset": True})


@routes.get("/admin/health")
async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    return json_response({"ok": True, "time": svc.clock.iso()})
