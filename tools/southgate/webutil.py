"""Helpers shared by the route modules: getting at the service, authentication, JSON bodies, pages."""

from __future__ import annotations

import hmac
import json
import math
import re
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request, forbidden, not_found, unauthorized
from .multipart import MultipartError, parse_content_type
from .service import Service
from .validation import Invalid, parse_json

SERVICE_KEY: web.AppKey[Service] = web.AppKey("service", Service)


def service(request: web.Request) -> Service:
    return request.app[SERVICE_KEY]


_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*\Z")


def header_text(value: str) -> str | None:
    """`value` if it is printable ASCII, else None (aiohttp hands non-UTF-8 header bytes through as lone
    surrogates, which break .encode() and SQLite)."""
    return value if _PRINTABLE_ASCII.match(value) else None


MAX_CONTENT_TYPE = 1024  # a stored Content-Type longer than this is answered as octet-stream


def stored_content_type(value: str | None) -> str:
    """A Content-Type stored from an agent's upload, as a response header: the value if it is a well-formed
    header value, else application/octet-stream (a stored value never breaks the response)."""
    if value and len(value) <= MAX_CONTENT_TYPE and header_text(value) is not None:
        try:
            parse_content_type(value)
        except MultipartError:
            pass
        else:
            return value.strip()
    return "application/octet-stream"


def authorization(request: web.Request) -> str:
    """The Authorization header ('' when absent); 401 when it holds anything but printable ASCII."""
    auth = request.headers.get("Authorization", "")
    if header_text(auth) is None:
        raise unauthorized("Authorization header must be printable ASCII")
    return auth


def bearer(request: web.Request) -> str:
    auth = authorization(request)
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("missing bearer token in Authorization header")
    return token.strip()


def agent_auth(request: web.Request) -> dict[str, Any]:
    """The agent whose access token authorised this request (401 otherwise)."""
    svc = service(request)
    agent = svc.agent_for_token(bearer(request))
    request["agent_id"] = agent["id"]
    now = svc.clock.now_ms()
    if (agent["last_seen_ms"] or 0) < now - 5000:
        svc.storage.update_agent(agent["id"], last_seen_ms=now)
    return agent


def own_agent(request: web.Request, agent: dict[str, Any], agent_id: Any) -> None:
    """Access tokens are bound to their agent: agent A's token can't act for agent B."""
    if agent_id != agent["id"]:
        raise forbidden("the access token belongs to another agent")


def own_entity(request: web.Request, agent: dict[str, Any], entity_id: str) -> None:
    """An agent may write to free assets of its tenant and to its own, not to another agent's asset nor to
    an asset of another tenant (which it is not told exists)."""
    storage = service(request).storage
    row = storage.asset(entity_id)
    if row is not None and row.get("tenant") not in (None, agent["tenant"]):
        raise not_found(f"asset {entity_id} not found in tenant {agent['tenant']}")
    owner = storage.owner_of_entity(entity_id)
    if owner is not None and owner != agent["id"]:
        raise forbidden(f"entity {entity_id} belongs to another agent")


def is_admin(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    if header_text(auth) is None:
        return False
    scheme, _, token = auth.partition(" ")
    admin = service(request).keys.admin_token
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), admin.encode())


def admin_auth(request: web.Request) -> None:
    if not is_admin(request):
        raise unauthorized("admin token required (Bearer <DIR/admin-token>)")
    request["agent_id"] = "admin"


def require_json_type(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", "application/merge-patch+json"):
        raise ApiError(415, "Content-Type must be application/json")


async def json_body(request: web.Request, *, check_type: bool = True) -> Any:
    if check_type:
        require_json_type(request)
    raw = await request.read()
    try:
        return parse_json(raw)
    except Invalid as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(f"query parameter {name!r} must be an integer") from exc
    if not lo <= value <= hi:
        raise bad_request(f"query parameter {name!r} must be between {lo} and {hi}")
    return value


def bool_param(request: web.Request, name: str) -> bool:
    """A true/false query parameter of the public APIs (false when absent); a 400 for anything else."""
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise bad_request(f"query parameter {name!r} must be true or false")
    return raw == "true"


def page(
    request: web.Request, items: list[Any], default_size: int = 10, max_size: int = 2000
) -> dict[str, Any]:
    """A Spring-style page of `items` following ?page=&size=."""
    size = int_param(request, "size", default_size, 1, max_size)
    number = int_param(request, "page", 0, 0, 10**6)
    total = len(items)
    content = items[number * size : (number + 1) * size]
    pages = math.ceil(total / size) if total else 0
    return {
        "content": content,
        "last": number >= pages - 1,
        "totalPages": pages,
        "totalElements": total,
        "numberOfElements": len(content),
        "first": number == 0,
        "size": size,
        "number": number,
        "sort": [],
    }


def base_url(request: web.Request) -> str:
    """The origin the client used, for URLs handed back to it."""
    return f"{request.scheme}://{request.host}"
