"""Security rules that cut across endpoints: secrets never in logs or error bodies, admin API locked,
one log line per request."""

from __future__ import annotations

import re

from sgclient import Agent, Client, strict_body, ts_item
from southgate.testing import RunningSouthgate

AM = "/api/agentmanagement/v3"


def test_secrets_never_logged_or_echoed(sg: RunningSouthgate) -> None:
    a = Agent(sg).ready()
    secrets = {
        a.config["content"]["iat"],
        a.reg["client_secret"],
        a.reg["registration_access_token"],
        a.token,
        sg.admin_token,
    }
    r = a.http.json(
        "PUT", f"{AM}/register/{a.id}", {"client_id": a.id}, token=a.reg["registration_access_token"]
    )
    new = r.json()
    secrets |= {new["client_secret"], new["registration_access_token"]}
    a.reg = new
    tok = a.get_token().json()["access_token"]
    secrets.add(tok)
    bodies = []
    # error paths that see the secrets
    bodies.append(a.http.json("POST", AM + "/register", {}, token=a.config["content"]["iat"]).body)
    bodies.append(
        a.http.json("PUT", f"{AM}/register/{a.id}", {"client_id": a.id}, token=a.reg["client_secret"]).body
    )
    bodies.append(a.get_token(sign_key=a.reg["client_secret"] + "x").body)
    bodies.append(a.http.request("GET", f"{AM}/agents/{a.id}/dataSourceConfiguration", token=tok + "x").body)
    ct, body = strict_body([ts_item("CF-test", [("2024-05-01T10:00:00.000Z", [("DP-temp", tok, "0")])])])
    assert a.exchange(ct, body, token=tok).status == 200
    bodies.append(a.exchange("multipart/mixed; boundary=" + tok[:60], b"--x", token=tok).body)
    log = sg.log_path.read_text()
    for s in secrets:
        assert s not in log
        for b in bodies:
            assert s.encode() not in b


def test_admin_api_needs_admin_token(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard().login()
    c = Client(sg.base_url, sg.ca_pem)
    for method, path in (
        ("GET", "/admin/settings"),
        ("GET", "/admin/counters"),
        ("GET", "/admin/faults"),
        ("POST", "/admin/agents"),
        ("GET", f"/admin/agents/{a.id}/timeseries"),
        ("GET", f"{AM}/agents/{a.id}/boarding/configuration"),
    ):
        assert c.request(method, path).status == 401
        assert c.request(method, path, token=a.token).status == 401
        assert c.request(method, path, token=sg.admin_token + "x").status == 401
    c.close()


def test_one_log_line_per_request(sg: RunningSouthgate) -> None:
    c = Client(sg.base_url, sg.ca_pem)
    before = len(sg.log_path.read_text().splitlines())
    for path in ("/api/agentmanagement/v3/oauth/token_key", "/nowhere", "/api/mindconnect/v3/exchange"):
        c.request("GET", path)
    c.close()
    lines = sg.log_path.read_text().splitlines()[before:]
    pattern = re.compile(r"^southgate: (GET|POST) (\S+) (\d{3}) in=\d+ agent=\S+ \d+\.\dms$")
    parsed = [pattern.match(x) for x in lines]
    assert [(m.group(2), m.group(3)) for m in parsed if m] == [
        ("/api/agentmanagement/v3/oauth/token_key", "200"),
        ("/nowhere", "404"),
        ("/api/mindconnect/v3/exchange", "405"),
    ]


def test_a_path_cannot_forge_or_split_a_log_line(sg: RunningSouthgate) -> None:
    # The log shows the path as sent (percent-encoded): a %0a or a space in it stays inside its own line.
    http = Client(sg.base_url, sg.ca_pem)
    forged = "/api/x%0asouthgate:%20GET%20/console/y%20500%20in=0"
    assert http.request("GET", forged + "?key=secret").status == 404
    log = sg.log_tail(200)
    assert f"southgate: GET {forged} 404 in=" in log and "key=secret" not in log
    assert not re.search(r"^southgate: GET /console/y 500", log, re.M)
    # nor does an agent id in a path: the log names an agent only once it is known
    rotate = "/api/agentmanagement/v3/register/x%0asouthgate:%20FORGED%20LINE"
    assert http.request("PUT", rotate, b"{}", {"Content-Type": "application/json"}, token="rat").status == 401
    log = sg.log_tail(200)
    assert re.search(f"^southgate: PUT {re.escape(rotate)} 401 in=\\d+ agent=- ", log, re.M), log
    assert not re.search(r"^southgate: FORGED", log, re.M)


def test_unknown_route_and_method_json(sg: RunningSouthgate) -> None:
    c = Client(sg.base_url, sg.ca_pem)
    r = c.request("GET", "/api/nothing/here")
    assert r.status == 404 and set(r.json()) == {"id", "message"}
    r = c.request("DELETE", "/api/agentmanagement/v3/oauth/token")
    assert r.status == 405 and "allow" in r.headers
    c.close()


def test_tls_verifies_and_plain_http_refused(sg: RunningSouthgate) -> None:
    import http.client
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(sg.base_url)
    default = http.client.HTTPSConnection(
        parts.hostname or "", parts.port, timeout=10, context=ssl.create_default_context()
    )
    try:
        default.request("GET", "/api/agentmanagement/v3/oauth/token_key")
        raise AssertionError("a client that does not trust the dev CA must fail")
    except ssl.SSLCertVerificationError:
        pass
    finally:
        default.close()
    for host in ("localhost", "127.0.0.1"):
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=10, context=ssl.create_default_context(cafile=sg.ca_pem)
        )
        conn.request("GET", "/api/agentmanagement/v3/oauth/token_key")
        assert conn.getresponse().status == 200
        conn.close()


def test_agents_keep_to_their_own(sg: RunningSouthgate) -> None:
    """Agent tokens are for the agent APIs: reading back (IoT Time Series, TS Bulk, IoT files) needs a tenant
    token (the admin token here); and an agent cannot map its data points onto another agent's asset."""
    from sgclient import Agent

    a = Agent(sg).ready()
    b = Agent(sg, tenant="othertenant").ready()
    b_asset = [x for x in sg.admin("GET", "/admin/agents") if x["id"] == b.id][0]["entityId"]
    for path in (
        f"/api/iottimeseries/v3/timeseries/{b.entity}/env",
        f"/api/iottsbulk/v3/timeseries/{b.entity}/env?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z",
        f"/api/iotfile/v3/files/{b.entity}",
    ):
        r = a.http.request("GET", path, token=a.token)
        assert r.status == 403 and b"agent APIs" in r.body, (path, r.status, r.body)
        assert a.http.request("GET", path, token=sg.admin_token).status < 500
    r = a.http.json(
        "POST",
        "/api/mindconnect/v3/dataPointMappings",
        {
            "agentId": a.id,
            "dataPointId": "DP-temp",
            "entityId": b_asset,
            "propertySetName": "env",
            "propertyName": "temp",
            "keepMapping": True,
        },
        token=a.token,
    )
    # another tenant's asset is not there for this agent at all (404, as for a modelled asset)
    assert r.status == 404 and b"not found in tenant" in r.body, (r.status, r.body)
    mapping = {
        "agentId": a.id,
        "dataPointId": "DP-temp",
        "entityId": b.entity,  # an asset only b's tenant maps onto
        "propertySetName": "env",
        "propertyName": "temp2",
        "keepMapping": True,
    }
    r = a.http.json("POST", "/api/mindconnect/v3/dataPointMappings", mapping, token=a.token)
    assert r.status == 404 and b"not found in tenant" in r.body, (r.status, r.body)
    event = {"entityId": b_asset, "timestamp": "2026-01-01T00:00:00.000Z", "description": "not mine"}
    r = a.http.json("POST", "/api/eventmanagement/v3/events", event, token=a.token)
    assert r.status == 404, (r.status, r.body)
