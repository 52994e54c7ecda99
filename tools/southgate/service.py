"""The state of one southgate instance and the identity rules: agents, onboarding, rotation, tokens.

Used by the HTTP handlers and by the CLI alike (the CLI creates agents without a running server).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from . import certs, tokens
from .clock import ServerClock, iso_ms
from .errors import ApiError, bad_request, unauthorized
from .settings import Settings
from .storage import Conflict, Storage

HEX32 = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_TENANT = "devtenant"
DEFAULT_BASE_URL = "https://127.0.0.1:8443"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MIN_PLAUSIBLE_EPOCH_S = 1704067200  # 2024-01-01T00:00:00Z: an earlier iat/nbf/exp is an unset device clock
MAX_JTI_CHARS = 256


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


def check_tenant(tenant: str | None) -> str:
    """A tenant name (the default tenant for None); 400 for anything else."""
    tenant = tenant or DEFAULT_TENANT
    if not isinstance(tenant, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", tenant):
        raise bad_request("tenant must be lowercase letters, digits and '-' (at most 40)")
    return tenant


class Service:
    """Everything a request handler needs: storage, keys, clock and settings of DIR."""

    def __init__(self, data_dir: Path, cert_names: tuple[str, ...] = ()) -> None:
        self.data_dir = certs.ensure_dir(Path(data_dir))
        self.keys = certs.load_or_create(self.data_dir, cert_names)
        self.storage = Storage(self.data_dir / "southgate.db")
        self.settings = Settings()
        self.clock = ServerClock(0)
        self.reload_settings()
        self.files_dir = certs.ensure_dir(self.data_dir / "files")
        self.base_url = self._remembered_base_url()
        self.auto_assets = False  # serve --auto-assets: mappings create the asset, aspect, variable they name
        self.public_host: str | None = None  # serve --host 0.0.0.0: the name or address boards reach it by

    def close(self) -> None:
        self.storage.close()

    # settings -------------------------------------------------------------------------------------------
    def reload_settings(self) -> None:
        """Take the settings as stored (another process, the CLI, may have changed them)."""
        self.settings.update(self.storage.load_settings())
        self.clock.offset_s = self.settings.clock_offset_s

    def change_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        self.settings.update(changes)
        self.clock.offset_s = self.settings.clock_offset_s
        self.storage.save_settings(self.settings.to_dict())
        return self.settings.to_dict()

    # base URL -------------------------------------------------------------------------------------------
    def _remembered_base_url(self) -> str:
        try:
            return str(json.loads((self.data_dir / "server.json").read_text())["base_url"])
        except (OSError, ValueError, KeyError):
            return DEFAULT_BASE_URL

    def remember_base_url(self, base_url: str) -> None:
        self.base_url = base_url
        certs.write_public(self.data_dir / "server.json", json.dumps({"base_url": base_url}).encode())

    # agents ---------------------------------------------------------------------------------------------
    def create_agent(
        self, name: str | None, tenant: str | None = None, entity_id: str | None = None
    ) -> dict[str, Any]:
        """A new agent (its asset too, unless given); name, tenant and entityId as sent: checked here."""
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise bad_request("agent name must be a non-empty string of at most 128 characters")
        tenant = check_tenant(tenant)
        if entity_id is None:
            entity_id = new_id()
        elif not isinstance(entity_id, str) or not HEX32.match(entity_id):
            raise bad_request("entityId must be 32 lowercase hex characters")
        agent_id = new_id()
        now = self.clock.now_ms()
        try:
            with self.storage.tx():
                asset = self.storage.asset(entity_id)
                if asset is not None and asset["tenant"] not in (tenant, ""):
                    raise Conflict(f"asset {entity_id} belongs to another tenant")
                self.storage.create_agent(agent_id, tenant, name, entity_id, now)
                self.storage.ensure_asset(entity_id, now, name, tenant)
        except Conflict as exc:
            raise ApiError(409, str(exc)) from exc
        agent = self.storage.agent(agent_id)
        assert agent is not None
        return agent

    def agent_or_404(self, agent_id: str) -> dict[str, Any]:
        agent = self.storage.agent(agent_id)
        if agent is None:
            raise ApiError(404, f"agent {agent_id[:64]} not found")
        return agent

    @staticmethod
    def agent_json(agent: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": agent["id"],
            "name": agent["name"],
            "securityProfile": "SHARED_SECRET",
            "eTag": str(agent["etag"]),
            "entityId": agent["entity_id"],
            "tenant": agent["tenant"],
        }

    def _iat_claims(self, agent: dict[str, Any], jti: str, issued_s: int, exp: int) -> dict[str, Any]:
        return {
            "jti": jti,
            "sub": agent["id"],
            "ten": agent["tenant"],
            "iat": issued_s,
            "exp": exp,
            "typ": "iat",
            "scope": ["mdsp:core:agent.iat"],
            "schemas": ["urn:siemens:mindsphere:v1"],
        }

    def _current_iat(self, agent: dict[str, Any]) -> str | None:
        """The agent's unused IAT, re-signed from its claims (RS256 with PKCS#1 v1.5 is deterministic, so
        only its hash is stored); None when there is none or it can't be reproduced."""
        if agent["iat_jti"] is None or agent["iat_hash"] is None or agent["iat_issued_s"] is None:
            return None
        claims = self._iat_claims(
            agent, agent["iat_jti"], int(agent["iat_issued_s"]), int(agent["iat_expires_s"] or 0)
        )
        iat = tokens.sign_rs256(claims, self.keys.token_key, self.keys.token_kid)
        return iat if secrets.compare_digest(_hash(iat), agent["iat_hash"]) else None

    def boarding_config(self, agent_id: str, base_url: str | None = None) -> dict[str, Any]:
        """The agentconfig.json; mints a new IAT when the current one is used or expired.

        IATs are never stored in plain text: the database keeps the jti, issue time and SHA-256."""
        agent = self.agent_or_404(agent_id)
        now_s = self.clock.now_s()
        iat = None
        if not agent["iat_used"] and (agent["iat_expires_s"] or 0) > now_s:
            iat = self._current_iat(agent)
        if iat is None:
            jti = str(uuid.uuid4())
            exp = now_s + self.settings.iat_lifetime_s
            iat = tokens.sign_rs256(
                self._iat_claims(agent, jti, now_s, exp), self.keys.token_key, self.keys.token_kid
            )
            self.storage.update_agent(
                agent_id,
                iat_jti=jti,
                iat=None,
                iat_hash=_hash(iat),
                iat_issued_s=now_s,
                iat_expires_s=exp,
                iat_used=0,
            )
            agent = self.agent_or_404(agent_id)
        return {
            "content": {
                "baseUrl": base_url or self.base_url,
                "iat": iat,
                "clientCredentialProfile": ["SHARED_SECRET"],
                "clientId": agent_id,
                "tenant": agent["tenant"],
            },
            "expiration": iso_ms(int(agent["iat_expires_s"]) * 1000),
        }

    def offboard(self, agent_id: str) -> dict[str, Any]:
        self.agent_or_404(agent_id)
        self.storage.update_agent(
            agent_id,
            status="NOT_ONBOARDED",
            status_since_ms=self.clock.now_ms(),
            secret=None,
            secret_expires_s=None,
            rat_hash=None,
            prev_rat_hash=None,
            iat=None,
            iat_jti=None,
            iat_hash=None,
            iat_issued_s=None,
        )
        return {"status": "OFFBOARDING"}

    # onboarding and rotation -----------------------------------------------------------------------------
    def _registration(
        self, agent: dict[str, Any], base_url: str, used_rat_hash: str | None, keep_prev: bool
    ) -> dict[str, Any]:
        secret = secrets.token_urlsafe(32)
        rat = secrets.token_urlsafe(48)
        expires = self.clock.now_s() + self.settings.secret_lifetime_s
        prev = agent["prev_rat_hash"] if keep_prev else used_rat_hash
        self.storage.update_agent(
            agent["id"],
            secret=secret,
            secret_expires_s=expires,
            secret_used=0,
            rat_hash=_hash(rat),
            prev_rat_hash=prev,
        )
        return {
            "client_id": agent["id"],
            "client_secret": secret,
            "client_secret_expires_at": expires,
            "grant_types": ["client_credentials"],
            "registration_access_token": rat,
            "registration_client_uri": "{}/api/agentmanagement/v3/register/{}".format(base_url, agent["id"]),
            "token_endpoint_auth_method": "client_secret_jwt",
        }

    def register(self, iat: str, base_url: str) -> dict[str, Any]:
        try:
            claims = tokens.verify_rs256(iat, self.keys.token_key, self.keys.token_kid)
        except tokens.TokenError as exc:
            raise unauthorized(f"initial access token rejected: {exc}") from exc
        if claims.get("typ") != "iat":
            raise unauthorized("initial access token rejected: not an initial access token")
        agent = self.storage.agent(str(claims.get("sub")))
        if (
            agent is None
            or claims.get("jti") != agent["iat_jti"]
            or agent["iat_hash"] is None
            or not secrets.compare_digest(_hash(iat), agent["iat_hash"])
        ):
            raise unauthorized("initial access token rejected: it was replaced or the agent was deleted")
        if agent["iat_used"]:
            raise unauthorized("initial access token rejected: it was already used (single use)")
        if (agent["iat_expires_s"] or 0) <= self.clock.now_s():
            raise unauthorized("initial access token rejected: it has expired")
        with self.storage.tx():
            self.storage.update_agent(
                agent["id"],
                iat_used=1,
                status="ONBOARDED",
                status_since_ms=self.clock.now_ms(),
                onboard_gen=agent["onboard_gen"] + 1,
            )
            return self._registration(agent, base_url, None, keep_prev=False)

    def rotate(self, agent_id: str, rat: str, body: Any, base_url: str) -> dict[str, Any]:
        agent = self.storage.agent(agent_id)
        if agent is None or agent["status"] != "ONBOARDED" or agent["rat_hash"] is None:
            raise unauthorized("registration access token rejected")
        h = _hash(rat)
        if secrets.compare_digest(h, agent["rat_hash"]):
            keep_prev = False
        elif agent["prev_rat_hash"] is not None and secrets.compare_digest(h, agent["prev_rat_hash"]):
            keep_prev = True
        else:
            raise unauthorized("registration access token rejected")
        if not isinstance(body, dict) or body.get("client_id") != agent_id:
            raise bad_request('body must be {"client_id": "<agent id>"} naming this agent')
        if (agent["secret_expires_s"] or 0) + self.settings.rotation_grace_s <= self.clock.now_s():
            raise unauthorized("client secret expired before it was rotated; onboard again with a new IAT")
        with self.storage.tx():
            return self._registration(agent, base_url, h, keep_prev=keep_prev)

    # tokens ---------------------------------------------------------------------------------------------
    @staticmethod
    def parse_form(body: bytes) -> dict[str, str]:
        """Split on '&', each pair on its first '='; works for Node's percent-encoding and MCL's raw form."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "form body is not UTF-8", oauth_error="invalid_request") from exc
        form: dict[str, str] = {}
        for pair in text.strip().split("&"):
            if not pair:
                continue
            key, _, value = pair.partition("=")
            form[unquote_plus(key)] = unquote_plus(value)
        return form

    def issue_token(self, body: bytes) -> dict[str, Any]:
        form = self.parse_form(body)

        def fail(message: str) -> ApiError:
            return ApiError(401, message, oauth_error="invalid_client")

        if form.get("grant_type") != "client_credentials":
            raise ApiError(400, "grant_type must be client_credentials", oauth_error="unsupported_grant_type")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise ApiError(
                400, f"client_assertion_type must be {ASSERTION_TYPE}", oauth_error="invalid_request"
            )
        assertion = form.get("client_assertion")
        if not assertion:
            raise ApiError(400, "client_assertion is missing", oauth_error="invalid_request")
        try:
            header, claims, signing_input, sig = tokens.split(assertion)
        except tokens.TokenError as exc:
            raise fail(f"client assertion malformed: {exc}") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise fail("client assertion algorithm 'none' is not accepted")
        if alg != "HS256":
            raise fail("client assertion algorithm must be HS256 for SHARED_SECRET agents")
        iss, sub = claims.get("iss"), claims.get("sub")
        if not isinstance(iss, str) or not HEX32.match(iss):
            raise fail("client assertion iss must be the agent's client id")
        if sub != iss:
            raise fail("client assertion sub must equal iss (the client id)")
        agent = self.storage.agent(iss)
        if agent is None or agent["status"] != "ONBOARDED" or not agent["secret"]:
            raise fail("unknown or not onboarded client")
        if not tokens.verify_hs256(signing_input, sig, agent["secret"]):
            raise fail("client assertion signature does not match the current client secret")
        now = self.clock.now()
        if (agent["secret_expires_s"] or 0) <= now:
            raise ApiError(400, "client secret has expired; rotate it", oauth_error="invalid_client")
        aud = claims.get("aud")
        if not (aud == "southgate" or (isinstance(aud, list) and "southgate" in aud)):
            raise fail('client assertion aud must be "southgate" or contain it')
        if claims.get("ten") != agent["tenant"]:
            raise fail("client assertion ten does not name the agent's tenant")
        skew = self.settings.clock_skew_s
        try:
            iat = tokens.numeric_claim(claims, "iat")
            exp = tokens.numeric_claim(claims, "exp")
            nbf = tokens.numeric_claim(claims, "nbf", required=False)
        except tokens.TokenError as exc:
            raise fail(f"client assertion: {exc}") from exc
        assert iat is not None and exp is not None
        for name, value in (("iat", iat), ("nbf", nbf), ("exp", exp)):
            if value is not None and value < MIN_PLAUSIBLE_EPOCH_S:
                raise fail(
                    f"client assertion {name} is implausible (before 2024-01-01; check the device clock)"
                )
        if iat > now + skew:
            raise fail("client assertion issued in the future (check the device clock)")
        if nbf is not None and nbf > now + skew:
            raise fail("client assertion not yet valid (nbf in the future; check the device clock)")
        if exp <= now - skew:
            raise fail("client assertion expired (check the device clock)")
        if exp > now + self.settings.max_assertion_lifetime_s + skew:
            raise fail("client assertion exp is too far in the future (at most 24 h)")
        jti_claim = claims.get("jti")
        if not isinstance(jti_claim, str) or not jti_claim or len(jti_claim) > MAX_JTI_CHARS:
            raise fail(f"client assertion jti must be a string of 1 to {MAX_JTI_CHARS} characters")
        # Remember the jti until the assertion can no longer pass the exp check above (exp + skew).
        keep_until = math.ceil(exp) + skew + 1
        if not self.storage.claim_jti(agent["id"], jti_claim, keep_until, math.floor(now)):
            raise fail("client assertion was already used (replayed jti); sign a new one for each request")
        now_s = int(now)
        lifetime = self.settings.access_token_lifetime_s
        jti = str(uuid.uuid4())
        access = tokens.sign_rs256(
            {
                "jti": jti,
                "sub": agent["id"],
                "scope": ["mdsp:core:Agent"],
                "client_id": agent["id"],
                "cid": agent["id"],
                "azp": agent["id"],
                "grant_type": "client_credentials",
                "iat": now_s,
                "exp": now_s + lifetime,
                "iss": "southgate",
                "zid": agent["tenant"],
                "aud": ["southgate", "agent"],
                "ten": agent["tenant"],
                "schemas": ["urn:siemens:mindsphere:v1"],
                "gen": agent["onboard_gen"],
            },
            self.keys.token_key,
            self.keys.token_kid,
        )
        if not agent["secret_used"] or agent["prev_rat_hash"] is not None:
            self.storage.update_agent(agent["id"], secret_used=1, prev_rat_hash=None)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": "mdsp:core:Agent",
            "jti": jti,
        }

    def agent_for_token(self, token: str) -> dict[str, Any]:
        """The agent an access token belongs to; 401 for anything not currently valid."""
        try:
            claims = tokens.verify_rs256(token, self.keys.token_key, self.keys.token_kid)
        except tokens.TokenError as exc:
            raise unauthorized(f"access token rejected: {exc}") from exc
        if claims.get("typ") == "iat" or "mdsp:core:Agent" not in (claims.get("scope") or []):
            raise unauthorized("access token rejected: not an agent access token")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= self.clock.now():
            raise unauthorized("access token expired")
        agent = self.storage.agent(str(claims.get("sub")))
        if agent is None or agent["status"] != "ONBOARDED" or claims.get("gen") != agent["onboard_gen"]:
            raise unauthorized("access token rejected: the agent is not onboarded")
        return agent
