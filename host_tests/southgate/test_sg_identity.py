"""Onboarding (§A), key rotation (§B), tokens (§C) and the tenant-admin agent endpoints, over TLS."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt as pyjwt
import pytest
from sgclient import FORM, Agent, Client, assertion, token_form
from southgate.testing import RunningSouthgate

AM = "/api/agentmanagement/v3"


def test_onboard_answers_201_with_registration(sg: RunningSouthgate) -> None:
    a = Agent(sg)
    r = a.http.json("POST", AM + "/register", {}, token=a.config["content"]["iat"])
    assert r.status == 201
    reg = r.json()
    assert reg["client_id"] == a.id
    assert reg["token_endpoint_auth_method"] == "client_secret_jwt"
    assert reg["registration_client_uri"] == f"{sg.base_url}{AM}/register/{a.id}"
    assert reg["client_secret_expires_at"] > time.time() + 6 * 86400
    assert "client_credentials" in reg["grant_types"]
    assert reg["client_secret"] and reg["registration_access_token"]
    assert r.headers["server-time"].endswith("Z") and "date" in r.headers


def test_agentconfig_format(sg: RunningSouthgate) -> None:
    config = sg.create_agent("format-check", tenant="acme")
    content = config["content"]
    assert set(content) == {"baseUrl", "iat", "clientCredentialProfile", "clientId", "tenant"}
    assert content["baseUrl"] == sg.base_url and content["tenant"] == "acme"
    assert content["clientCredentialProfile"] == ["SHARED_SECRET"]
    assert len(content["clientId"]) == 32 and int(content["clientId"], 16) >= 0
    assert config["expiration"].endswith("Z")


def test_iat_is_single_use(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard()
    r = a.http.json("POST", AM + "/register", {}, token=a.config["content"]["iat"])
    assert r.status == 401 and "already used" in r.json()["message"]


@pytest.mark.parametrize("iat", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_bad_iat_rejected(sg: RunningSouthgate, http: Client, iat: str) -> None:
    r = http.json("POST", AM + "/register", {}, token=iat)
    assert r.status == 401
    assert set(r.json()) == {"id", "message"}


def test_register_without_token(http: Client) -> None:
    assert http.json("POST", AM + "/register", {}).status == 401


def test_iat_expires(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    a = Agent(sg)
    sg.settings(clock_offset_s=7 * 86400 + 60)
    r = a.http.json("POST", AM + "/register", {}, token=a.config["content"]["iat"])
    assert r.status == 401 and "expired" in r.json()["message"]


def test_register_body_must_be_empty_object(sg: RunningSouthgate) -> None:
    a = Agent(sg)
    iat = a.config["content"]["iat"]
    assert a.http.json("POST", AM + "/register", {"jwks": {}}, token=iat).status == 400
    r = a.http.request("POST", AM + "/register", b"{}", {"Content-Type": "text/plain"}, token=iat)
    assert r.status == 415
    assert (
        a.http.request("POST", AM + "/register", b"{", {"Content-Type": "application/json"}, token=iat).status
        == 400
    )
    # The IAT was not consumed by the failed attempts.
    assert a.http.json("POST", AM + "/register", {}, token=iat).status == 201


def rotate(a: Agent, rat: str, body: Any = None) -> Any:
    return a.http.json(
        "PUT", f"{AM}/register/{a.id}", body if body is not None else {"client_id": a.id}, token=rat
    )


def test_rotation_replaces_secret_and_old_secret_is_rejected(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    old = dict(a.reg)
    r = rotate(a, old["registration_access_token"])
    assert r.status == 200
    new = r.json()
    assert set(new) == set(old)
    assert new["client_secret"] != old["client_secret"]
    assert new["registration_access_token"] != old["registration_access_token"]
    assert new["client_secret_expires_at"] >= old["client_secret_expires_at"]
    r = a.get_token()  # still signs with the old secret
    assert r.status == 401 and "client secret" in r.json()["error_description"]
    a.reg = new
    assert a.get_token().status == 200


def test_previous_registration_token_works_until_new_secret_used(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard()
    first = dict(a.reg)
    lost = rotate(a, first["registration_access_token"]).json()  # the agent never saw this answer
    retry = rotate(a, first["registration_access_token"])
    assert retry.status == 200
    assert retry.json()["client_secret"] != lost["client_secret"]
    a.reg = lost
    assert a.get_token().status == 401  # the lost secret was replaced by the retry
    a.reg = retry.json()
    assert a.get_token().status == 200
    # Once the new secret was used, the old registration token is dead.
    assert rotate(a, first["registration_access_token"]).status == 401
    assert rotate(a, retry.json()["registration_access_token"]).status == 200


def test_rotation_rejects_bad_token_and_body(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard()
    assert rotate(a, "not-the-token").status == 401
    assert rotate(a, a.reg["client_secret"]).status == 401
    r = rotate(a, a.reg["registration_access_token"], {"client_id": "0" * 32})
    assert r.status == 400
    r = a.http.json(
        "PUT", f"{AM}/register/{'f' * 32}", {"client_id": "f" * 32}, token=a.reg["registration_access_token"]
    )
    assert r.status == 401


def test_expired_secret_gets_400_and_lockout(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    sg.settings(secret_lifetime_s=120)
    a = Agent(sg).onboard()
    sg.settings(clock_offset_s=200)
    r = a.get_token(now=time.time() + 200)
    assert r.status == 400 and r.json()["error"] == "invalid_client"
    assert "expired" in r.json()["error_description"]
    # Rotation after expiry is refused: only a new IAT helps (§B).
    assert rotate(a, a.reg["registration_access_token"]).status == 401


def test_rotation_in_time_then_token(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    sg.settings(secret_lifetime_s=120)
    a = Agent(sg).onboard()
    sg.settings(clock_offset_s=100)
    r = rotate(a, a.reg["registration_access_token"])
    assert r.status == 200
    a.reg = r.json()
    assert a.reg["client_secret_expires_at"] >= time.time() + 100 + 110
    assert a.get_token(now=time.time() + 100).status == 200


# tokens ---------------------------------------------------------------------------------------------------
def test_token_response_and_rs256_verifiable_with_token_key(sg: RunningSouthgate, http: Client) -> None:
    a = Agent(sg).onboard()
    r = a.get_token()
    assert r.status == 200
    body = r.json()
    assert (
        body["token_type"] == "bearer" and body["expires_in"] == 1800 and body["scope"] == "mdsp:core:Agent"
    )
    assert "server-time" in r.headers
    key = http.request("GET", AM + "/oauth/token_key").json()
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["kid"]
    value = key["value"]
    assert "\n" not in value
    assert value.startswith("-----BEGIN PUBLIC KEY-----") and value.endswith("-----END PUBLIC KEY-----")
    pem = value.replace("-----BEGIN PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\n").replace(
        "-----END PUBLIC KEY-----", "\n-----END PUBLIC KEY-----"
    )
    claims = pyjwt.decode(body["access_token"], pem, algorithms=["RS256"], options={"verify_aud": False})
    assert claims["sub"] == a.id and claims["ten"] == a.tenant and "nbf" not in claims
    assert claims["scope"] == ["mdsp:core:Agent"] and isinstance(claims["exp"], int)
    assert claims["aud"] == ["southgate", "agent"]
    assert pyjwt.get_unverified_header(body["access_token"])["kid"] == key["kid"]


def test_token_mcl_style_form_padding_and_string_aud(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard()
    jwt = assertion(
        a.id, a.tenant, a.reg["client_secret"], pad=True, aud="southgate", exp=int(time.time()) + 86400
    )
    assert "=" in jwt
    r = a.http.request("POST", AM + "/oauth/token", token_form(jwt, encode=False), FORM)
    assert r.status == 200, r.body


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


BAD_ASSERTIONS = {
    "alg none": {"alg": "none"},
    "alg HS512": {"alg": "HS512"},
    "alg RS256": {"alg": "RS256"},
    "wrong secret": {"sign_key": "not-the-secret"},
    "expired": {"iat": -7200, "nbf": -7200, "exp": -3600},
    "not yet valid": {"nbf": 3600},
    "issued in future": {"iat": 3600},
    "exp beyond 24h": {"exp": 2 * 86400},
    "wrong aud": {"aud": ["northgate"]},
    "missing aud": {"aud": None},
    "wrong iss": {"iss": "0" * 32},
    "sub differs": {"sub": "0" * 32},
    "wrong ten": {"ten": "othertenant"},
    "missing exp": {"exp": None},
    "string iat": {"iat": "now"},
}


@pytest.fixture(scope="module")
def onboarded(sg: RunningSouthgate) -> Agent:
    return Agent(sg).onboard()


@pytest.mark.parametrize("case", sorted(BAD_ASSERTIONS))
def test_bad_assertion_rejected(onboarded: Agent, case: str) -> None:
    a = onboarded
    spec = dict(BAD_ASSERTIONS[case])
    now = int(time.time())
    kw: dict[str, Any] = {}
    for k in ("iat", "nbf", "exp"):
        if isinstance(spec.get(k), int):
            kw[k] = now + spec.pop(k)
    kw.update(spec)
    r = a.get_token(**kw)
    assert r.status == 401, (case, r.body)
    body = r.json()
    assert set(body) == {"id", "error", "error_description"} and body["error"] == "invalid_client"
    assert a.reg["client_secret"] not in r.body.decode()


def test_malformed_token_requests(sg: RunningSouthgate, http: Client) -> None:
    a = Agent(sg).onboard()
    good = a.assertion()
    cases = [
        (b"grant_type=password&client_assertion_type=x&client_assertion=" + good.encode(), 400),
        (b"grant_type=client_credentials&client_assertion_type=wrong&client_assertion=" + good.encode(), 400),
        (
            b"grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type"
            b"%3Ajwt-bearer",
            400,
        ),
        (token_form("not.a.jwt"), 401),
        (token_form("onlyonepart"), 401),
        (token_form(_b64({"alg": "HS256"}) + "." + "!!!" + ".x"), 401),
    ]
    for body, status in cases:
        r = http.request("POST", AM + "/oauth/token", body, FORM)
        assert r.status == status, (body, r.body)
    r = http.request("POST", AM + "/oauth/token", token_form(good), {"Content-Type": "application/json"})
    assert r.status == 400


def test_clock_skew_tolerance_is_configurable(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    a = Agent(sg).onboard()
    now = int(time.time())
    assert a.get_token(iat=now + 200, nbf=now + 200, exp=now + 3800).status == 200
    sg.settings(clock_skew_s=60)
    assert a.get_token(iat=now + 200, nbf=now + 200, exp=now + 3800).status == 401
    # A device whose clock is off by the server's offset is fine once it learns Server-Time.
    sg.settings(clock_offset_s=-3600)
    r = a.get_token()
    assert r.status == 401
    server_time = r.headers["server-time"]
    from southgate.clock import parse_iso

    learned = parse_iso(server_time) / 1000
    assert abs(learned - (time.time() - 3600)) < 5
    assert a.get_token(now=learned).status == 200


def test_access_token_rules(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    a = Agent(sg).onboard().login()
    b = Agent(sg).onboard().login()
    dsc_path = f"{AM}/agents/{a.id}/dataSourceConfiguration"
    assert a.http.request("GET", dsc_path, token=a.token).status == 404  # valid token, no DSC yet
    assert a.http.request("GET", dsc_path).status == 401
    assert a.http.request("GET", dsc_path, token="garbage").status == 401
    assert (
        a.http.request("GET", dsc_path, token=a.config["content"]["iat"]).status == 401
    )  # IAT is no access token
    assert a.http.request("GET", dsc_path, token=sg.admin_token).status == 401
    r = b.http.request("GET", dsc_path, token=b.token)
    assert r.status == 403  # bound to its agent
    r = b.put_dsc()
    assert r.status == 200
    assert (
        a.http.json(
            "PUT", f"{AM}/agents/{b.id}/dataSourceConfiguration", {}, token=a.token, headers={"If-Match": "1"}
        ).status
        == 403
    )
    sg.settings(access_token_lifetime_s=60)
    short = Agent(sg).onboard().login()
    sg.settings(clock_offset_s=61)
    r = short.http.request("GET", f"{AM}/agents/{short.id}/dataSourceConfiguration", token=short.token)
    assert r.status == 401 and "expired" in r.json()["message"]


def test_agent_status(sg: RunningSouthgate, agent: Agent) -> None:
    r = agent.http.request("GET", f"{AM}/agents/{agent.id}/status", token=agent.token)
    assert r.status == 200 and r.json()["status"] == "ONLINE" and r.json()["since"].endswith("Z")
    fresh = Agent(sg)
    r = agent.http.request("GET", f"{AM}/agents/{fresh.id}/status", token=sg.admin_token)
    assert r.status == 200 and r.json()["status"] == "OFFLINE"
    assert agent.http.request("GET", f"{AM}/agents/{fresh.id}/status", token=agent.token).status == 403
    assert agent.http.request("GET", f"{AM}/agents/{agent.id}/status").status == 401


# tenant admin side ----------------------------------------------------------------------------------------
def test_admin_agent_endpoints(sg: RunningSouthgate, http: Client) -> None:
    admin = sg.admin_token
    r = http.json("POST", AM + "/agents", {"name": "adm-1", "securityProfile": "SHARED_SECRET"}, token=admin)
    assert r.status == 201
    agent = r.json()
    assert agent["securityProfile"] == "SHARED_SECRET" and agent["eTag"] and len(agent["entityId"]) == 32
    aid = agent["id"]
    assert http.json("POST", AM + "/agents", {"name": "adm-1"}, token=admin).status == 409
    assert http.json("POST", AM + "/agents", {"name": "adm-1", "tenant": "other"}, token=admin).status == 201
    assert (
        http.json("POST", AM + "/agents", {"name": "x", "securityProfile": "RSA_3072"}, token=admin).status
        == 400
    )
    assert http.json("POST", AM + "/agents", {"name": "y", "entityId": "XYZ"}, token=admin).status == 400
    assert http.json("POST", AM + "/agents", {"name": "z"}).status == 401
    assert http.json("POST", AM + "/agents", {"name": "z"}, token="nope").status == 401
    assert http.request("GET", f"{AM}/agents/{aid}", token=admin).json()["id"] == aid
    assert any(
        x["id"] == aid for x in http.request("GET", AM + "/agents?size=2000", token=admin).json()["content"]
    )
    config = http.request("GET", f"{AM}/agents/{aid}/boarding/configuration", token=admin).json()
    assert config["content"]["clientId"] == aid
    assert http.request("GET", f"{AM}/agents/{aid}/boarding/configuration").status == 401
    status = http.request("GET", f"{AM}/agents/{aid}/boarding/status", token=admin).json()
    assert status["status"] == "NOT_ONBOARDED"
    assert http.json("POST", AM + "/register", {}, token=config["content"]["iat"]).status == 201
    status = http.request("GET", f"{AM}/agents/{aid}/boarding/status", token=admin).json()
    assert status["status"] == "ONBOARDED"
    assert http.request("GET", f"{AM}/agents/{'0' * 32}/boarding/status", token=admin).status == 404


def test_offboard_revokes_and_allows_reonboarding(sg: RunningSouthgate, http: Client) -> None:
    a = Agent(sg).onboard().login()
    r = http.request("POST", f"{AM}/agents/{a.id}/boarding/offboard", token=sg.admin_token)
    assert r.status == 200
    assert a.http.request("GET", f"{AM}/agents/{a.id}/dataSourceConfiguration", token=a.token).status == 401
    assert a.get_token().status == 401
    config = sg.agent_config(a.id)
    assert config["content"]["iat"] != a.config["content"]["iat"]
    assert a.http.json("POST", AM + "/register", {}, token=a.config["content"]["iat"]).status == 401
    assert a.http.json("POST", AM + "/register", {}, token=config["content"]["iat"]).status == 201
