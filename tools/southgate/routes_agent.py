"""Agent management: onboarding, key rotation, OAuth token and key, DSC, status, tenant-admin boarding."""

from __future__ import annotations

from aiohttp import web

from . import configs, tokens
from .clock import iso_ms
from .errors import ApiError, bad_request, not_found
from .validation import Invalid
from .webutil import (
    admin_auth,
    agent_auth,
    base_url,
    bearer,
    is_admin,
    json_body,
    json_response,
    own_agent,
    page,
    require_json_type,
    service,
)

routes = web.RouteTableDef()
AM = "/api/agentmanagement/v3"


@routes.post(AM + "/register")
async def register(request: web.Request) -> web.Response:
    iat = bearer(request)
    require_json_type(request)
    body = await json_body(request)
    if body != {}:
        raise bad_request("onboarding body must be exactly {} for SHARED_SECRET agents")
    reg = service(request).register(iat, base_url(request))
    request["agent_id"] = reg["client_id"]
    return json_response(reg, status=201)


@routes.put(AM + "/register/{agent_id}")
async def rotate(request: web.Request) -> web.Response:
    rat = bearer(request)
    agent_id = request.match_info["agent_id"]
    svc = service(request)
    # The token is checked before the body so that a bad token never learns anything about the body rules.
    agent = svc.storage.agent(agent_id)
    if agent is None:
        raise ApiError(401, "registration access token rejected")
    request["agent_id"] = agent["id"]  # a known id only: the path is the client's, and it is logged
    require_json_type(request)
    body = await json_body(request)
    return json_response(svc.rotate(agent_id, rat, body, base_url(request)))


@routes.post(AM + "/oauth/token")
async def token(request: web.Request) -> web.Response:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise ApiError(
            400, "Content-Type must be application/x-www-form-urlencoded", oauth_error="invalid_request"
        )
    body = await request.read()
    result = service(request).issue_token(body)
    claims = tokens.unverified_claims(result["access_token"]) or {}
    request["agent_id"] = claims.get("sub")
    return json_response(result, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@routes.get(AM + "/oauth/token_key")
async def token_key(request: web.Request) -> web.Response:
    return json_response(service(request).keys.token_jwk())


@routes.get(AM + "/agents/{agent_id}/dataSourceConfiguration")
async def get_dsc(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    own_agent(request, agent, request.match_info["agent_id"])
    row = service(request).storage.dsc(agent["id"])
    if row is None:
        raise not_found("no data source configuration stored for this agent yet")
    return json_response(configs.dsc_json(row), headers={"ETag": str(row["etag"])})


@routes.put(AM + "/agents/{agent_id}/dataSourceConfiguration")
async def put_dsc(request: web.Request) -> web.Response:
    agent = agent_auth(request)
    own_agent(request, agent, request.match_info["agent_id"])
    if_match = request.headers.get("If-Match")
    if if_match is None:
        raise ApiError(428, "If-Match header is required (0 for the first configuration, then the eTag)")
    body = await json_body(request)
    svc = service(request)
    try:
        result = configs.apply_dsc(svc.storage, agent["id"], body, svc.clock.now_ms(), if_match)
    except Invalid as exc:
        raise bad_request(str(exc)) from exc
    except ValueError as exc:
        raise ApiError(
            412, "If-Match does not match the stored eTag of the data source configuration"
        ) from exc
    return json_response(result, headers={"ETag": result["eTag"]})


@routes.get(AM + "/agents/{agent_id}/status")
async def agent_status(request: web.Request) -> web.Response:
    """ONLINE when the agent made an authenticated call in the last 10 minutes (the admin may ask too)."""
    svc = service(request)
    if is_admin(request):
        agent = svc.agent_or_404(request.match_info["agent_id"])
    else:
        agent = agent_auth(request)
        own_agent(request, agent, request.match_info["agent_id"])
        agent = svc.agent_or_404(agent["id"])
    now = svc.clock.now_ms()
    seen = agent["last_seen_ms"]
    online = seen is not None and now - seen < 600_000
    since = seen if online else (seen or agent["created_ms"])
    return json_response({"status": "ONLINE" if online else "OFFLINE", "since": iso_ms(min(since, now))})


# tenant-admin side -----------------------------------------------------------------------------------------
@routes.post(AM + "/agents")
async def create_agent(request: web.Request) -> web.Response:
    admin_auth(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    profile = body.get("securityProfile", "SHARED_SECRET")
    if profile != "SHARED_SECRET":
        raise bad_request("only securityProfile SHARED_SECRET is supported")
    svc = service(request)
    agent = svc.create_agent(body.get("name"), body.get("tenant"), body.get("entityId"))
    return json_response(svc.agent_json(agent), status=201)


@routes.get(AM + "/agents")
async def list_agents(request: web.Request) -> web.Response:
    admin_auth(request)
    svc = service(request)
    return json_response(page(request, [svc.agent_json(a) for a in svc.storage.agents()]))


@routes.get(AM + "/agents/{agent_id}")
async def get_agent(request: web.Request) -> web.Response:
    admin_auth(request)
    svc = service(request)
    return json_response(svc.agent_json(svc.agent_or_404(request.match_info["agent_id"])))


@routes.get(AM + "/agents/{agent_id}/boarding/configuration")
async def boarding_configuration(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response(service(request).boarding_config(request.match_info["agent_id"], base_url(request)))


@routes.get(AM + "/agents/{agent_id}/boarding/status")
async def boarding_status(request: web.Request) -> web.Response:
    admin_auth(request)
    agent = service(request).agent_or_404(request.match_info["agent_id"])
    return json_response({"status": agent["status"], "since": iso_ms(agent["status_since_ms"])})


@routes.post(AM + "/agents/{agent_id}/boarding/offboard")
async def offboard(request: web.Request) -> web.Response:
    admin_auth(request)
    return json_response(service(request).offboard(request.match_info["agent_id"]))
