"""Who may see the console: the admin token, a session cookie it opened, or a one-time login link.

Sessions live in memory (a restart logs everybody out); the cookie is HttpOnly, SameSite=Strict, Secure over
TLS and scoped to /console. Only the login page answers without one; everything else is refused with 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from ..webutil import SERVICE_KEY, header_text

COOKIE = "southgate_console"
SESSION_S = 12 * 3600
MAX_SESSIONS = 1000
LOGIN_PATHS = ("/console/login",)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ConsoleAuth:
    """Console sessions and the one-time login link's key (kept as hashes, never the values)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.sessions: dict[str, float] = {}  # sha256(session id) -> expiry (monotonic)
        self.link_key: str | None = None  # sha256 of the unused one-time key

    def new_link_key(self) -> str:
        key = secrets.token_urlsafe(32)
        self.link_key = _digest(key)
        return key

    def use_link_key(self, key: str) -> bool:
        """True once for the key last handed out; it is spent then."""
        if self.link_key is None or not hmac.compare_digest(_digest(key), self.link_key):
            return False
        self.link_key = None
        return True

    def open_session(self) -> str:
        now = self.clock()
        self.sessions = {k: v for k, v in self.sessions.items() if v > now}
        while len(self.sessions) >= MAX_SESSIONS:  # oldest first out; a login flood can't grow memory
            self.sessions.pop(min(self.sessions, key=self.sessions.__getitem__))
        sid = secrets.token_urlsafe(32)
        self.sessions[_digest(sid)] = now + SESSION_S
        return sid

    def close_session(self, sid: str) -> None:
        self.sessions.pop(_digest(sid), None)

    def valid_session(self, sid: str | None) -> bool:
        if not sid or header_text(sid) is None:
            return False
        expiry = self.sessions.get(_digest(sid))
        return expiry is not None and expiry > self.clock()


AUTH_KEY: web.AppKey[ConsoleAuth] = web.AppKey("console_auth", ConsoleAuth)


def is_admin_token(request: web.Request, token: str) -> bool:
    admin = request.config_dict[SERVICE_KEY].keys.admin_token
    return bool(token) and hmac.compare_digest(token.strip().encode(), admin.encode())


def authorised(request: web.Request) -> bool:
    """A valid session cookie, or `Authorization: Bearer <admin token>` (scripts, curl)."""
    auth = request.config_dict[AUTH_KEY]
    if auth.valid_session(request.cookies.get(COOKIE)):
        return True
    header = header_text(request.headers.get("Authorization", "")) or ""
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and is_admin_token(request, token)


def set_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    sid = request.config_dict[AUTH_KEY].open_session()
    response.set_cookie(
        COOKIE,
        sid,
        max_age=SESSION_S,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def refusal(request: web.Request) -> web.Response:
    """401: the login form for a page, a JSON message for anything else."""
    from .views import login_page  # the page module imports this one

    if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
        return login_page(request, status=401, message="Log in with the admin token to see this page.")
    return web.json_response(
        {"message": "console: log in with the admin token (or Authorization: Bearer <DIR/admin-token>)"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="southgate console"'},
    )


@web.middleware
async def require_login(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every console URL but the login page refuses without the admin token; security headers on all."""
    if request.path in LOGIN_PATHS or authorised(request):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a 4xx of a console handler: short JSON, with the headers below
            if exc.status < 400:
                raise
            response = web.json_response({"message": exc.text or exc.reason}, status=exc.status)
    else:
        response = refusal(request)
    headers = response.headers
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    )
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cache-Control", "no-store")
    return response
