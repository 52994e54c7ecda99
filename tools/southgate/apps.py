"""App credentials and Token Manager (docs/protocol.md §G.1): how applications get a tenant token.

On Insights Hub an application reads data with a token from Token Manager
(`POST /api/technicaltokenmanager/v3/oauth/token`, `X-SPACE-AUTH-KEY: Basic base64(clientId:clientSecret)`,
body `{appName, appVersion, hostTenant, userTenant}`). southgate issues app credentials with
`southgate app create`, keeps only the SHA-256 of the secret (it is random, 256 bits), and signs tenant
tokens with the same key as agent tokens; the read APIs accept them for their own tenant only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import uuid
from typing import Any

from . import tokens
from .errors import ApiError, bad_request, unauthorized
from .service import Service, check_tenant
from .storage import Conflict

APP_SCOPE = "mdsp:core:tenant.app"
APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
APP_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_app(svc: Service, tenant: str | None, name: str, version: str = "1.0.0") -> dict[str, str]:
    """New app credentials; the secret is returned once and never stored in plain text."""
    tenant = check_tenant(tenant)
    if not isinstance(name, str) or not APP_NAME_RE.match(name):
        raise bad_request(
            "app name must be lowercase letters, digits and '-', starting with a letter (<= 40)"
        )
    if not isinstance(version, str) or not APP_VERSION_RE.match(version):
        raise bad_request("app version must be letters, digits, '.', '+' or '-' (at most 32)")
    client_id = f"{tenant}-{name}-{uuid.uuid4().hex[:12]}"
    secret = secrets.token_urlsafe(32)
    try:
        svc.storage.create_app(client_id, tenant, name, version, _hash(secret), svc.clock.now_ms())
    except Conflict as exc:
        raise ApiError(409, str(exc)) from exc
    return {
        "clientId": client_id,
        "clientSecret": secret,
        "tenant": tenant,
        "appName": name,
        "appVersion": version,
    }


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise unauthorized("X-SPACE-AUTH-KEY must be 'Basic base64(clientId:clientSecret)'")
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise unauthorized("X-SPACE-AUTH-KEY is not valid base64 of clientId:clientSecret") from exc
    client_id, sep, secret = text.partition(":")
    if not sep or not client_id or not secret:
        raise unauthorized("X-SPACE-AUTH-KEY must hold clientId:clientSecret")
    return client_id, secret


def issue_token(svc: Service, auth_key: str, body: Any) -> dict[str, Any]:
    """A tenant token for valid app credentials whose body names the app, its version and tenant."""
    client_id, secret = _basic(auth_key)
    app = svc.storage.app(client_id[:200])
    if app is None or not secrets.compare_digest(_hash(secret), app["secret_hash"]):
        raise unauthorized("app credentials rejected")
    if not isinstance(body, dict):
        raise bad_request('body must be {"appName", "appVersion", "hostTenant", "userTenant"}')
    for key in ("appName", "appVersion", "hostTenant", "userTenant"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise bad_request(f"{key} is required and must be a non-empty string")
    if body["appName"] != app["app_name"] or body["appVersion"] != app["app_version"]:
        raise ApiError(403, "appName/appVersion do not match the app these credentials belong to")
    if body["hostTenant"] != app["tenant"] or body["userTenant"] != app["tenant"]:
        raise ApiError(403, "hostTenant and userTenant must be the app's tenant")
    now_s = svc.clock.now_s()
    lifetime = svc.settings.access_token_lifetime_s
    jti = str(uuid.uuid4())
    token = tokens.sign_rs256(
        {
            "jti": jti,
            "sub": client_id,
            "client_id": client_id,
            "cid": client_id,
            "scope": [APP_SCOPE],
            "grant_type": "client_credentials",
            "iat": now_s,
            "exp": now_s + lifetime,
            "iss": "southgate",
            "zid": app["tenant"],
            "ten": app["tenant"],
            "aud": ["southgate", "app"],
            "app_name": app["app_name"],
            "app_version": app["app_version"],
            "schemas": ["urn:siemens:mindsphere:v1"],
            "typ": "app",
        },
        svc.keys.token_key,
        svc.keys.token_kid,
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": APP_SCOPE,
        "jti": jti,
    }


def app_for_token(svc: Service, token: str) -> dict[str, Any] | None:
    """The app a tenant token belongs to; None when the token is not an app token (e.g. an agent's), 401
    when it is one but no longer valid."""
    claims = tokens.unverified_claims(token)
    if not claims or claims.get("typ") != "app":
        return None
    try:
        claims = tokens.verify_rs256(token, svc.keys.token_key, svc.keys.token_kid)
    except tokens.TokenError as exc:
        raise unauthorized(f"access token rejected: {exc}") from exc
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp <= svc.clock.now():
        raise unauthorized("access token expired")
    app = svc.storage.app(str(claims.get("sub")))
    if app is None or APP_SCOPE not in (claims.get("scope") or []) or claims.get("ten") != app["tenant"]:
        raise unauthorized("access token rejected: unknown app")
    return app
