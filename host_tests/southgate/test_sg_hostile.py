"""Hostile input: every malformed, oversized or replayed request gets a 4xx with a reason, never a 500 or a
traceback in southgate's log. One test per problem found by fuzzing, then a seeded mutation fuzzer over real
request bodies and tokens (register body, token form, client assertion, exchange body, Authorization)."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import re
import socket
import sqlite3
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sgclient import FORM, Agent, Client, Resp, b64u, strict_body, token_form, ts_item
from southgate.service import Service
from southgate.testing import RunningSouthgate

AM = "/api/agentmanagement/v3"
MC = "/api/mindconnect/v3"
DEEP = 100_000  # far beyond Python's recursion limit
TOKEN_DEEP = 5_000  # beyond it too, and short enough for southgate's token length limit


def _no_server_errors(sg: RunningSouthgate) -> None:
    log = sg.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert not re.search(r" 5\d\d in=", log), [ln for ln in log.splitlines() if re.search(r" 5\d\d in=", ln)]


def _signed(agent: Agent, header_text: bytes, claims_text: bytes) -> str:
    signing_input = b64u(header_text) + "." + b64u(claims_text)
    sig = hmac.new(agent.reg["client_secret"].encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64u(sig)


def _claims(agent: Agent, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": agent.id,
        "sub": agent.id,
        "aud": ["southgate"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": str(uuid.uuid4()),
        "ten": agent.tenant,
    }
    claims.update(over)
    return claims


def _token(agent: Agent, jwt: str) -> Resp:
    return agent.http.request("POST", AM + "/oauth/token", token_form(jwt), FORM)


def _reason(r: Resp) -> str:
    body = r.json()
    return str(body.get("error_description") or body.get("message"))


def _raw_auth(sg: RunningSouthgate, method: str, path: str, auth: bytes, body: bytes | None = None) -> int:
    """A request whose Authorization header holds raw bytes (http.client sends bytes values as they are)."""
    conn = sg.connection()
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", auth)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


# problem 1: deep nesting, huge integers, non-UTF-8 headers --------------------------------------------------
def test_deep_json_huge_ints_and_binary_headers(sg: RunningSouthgate) -> None:
    a = Agent(sg).ready()
    deep = b"[" * DEEP + b"]" * DEEP
    tdeep = b"[" * TOKEN_DEEP + b"]" * TOKEN_DEEP
    claims = json.dumps(_claims(a)).encode()
    # client assertion with a deeply nested header, then claims
    for header, body in (
        (tdeep, claims),
        (b'{"alg":"HS256","x":' + tdeep + b"}", claims),
        (b'{"alg":"HS256"}', tdeep),
    ):
        r = _token(a, _signed(a, header, body))
        assert r.status == 401 and r.json()["error"] == "invalid_client", r
        assert "nested too deeply" in _reason(r)
    # bearer token with a deeply nested header
    hdeep = b"[" * 2000 + b"]" * 2000  # a header line is at most 8 KiB (aiohttp)
    bad = b64u(hdeep) + "." + b64u(b"{}") + ".c2ln"
    r = a.http.request("GET", f"{AM}/agents/{a.id}/dataSourceConfiguration", token=bad)
    assert r.status == 401 and "nested too deeply" in _reason(r)
    # register body nested deeply (the IAT is not used up by it)
    b = Agent(sg)
    iat = b.config["content"]["iat"]
    r = b.http.request("POST", AM + "/register", deep, {"Content-Type": "application/json"}, token=iat)
    assert r.status == 400 and "nested too deeply" in _reason(r)
    r = b.http.request("POST", AM + "/register", b"1" * 5000, {"Content-Type": "application/json"}, token=iat)
    assert r.status == 400 and "too many digits" in _reason(r)
    assert b.http.json("POST", AM + "/register", {}, token=iat).status == 201
    # DSC body with a 5,000-digit number
    r = a.http.request(
        "PUT",
        f"{AM}/agents/{a.id}/dataSourceConfiguration",
        b'{"configurationId": ' + b"9" * 5000 + b"}",
        {"Content-Type": "application/json", "If-Match": "*"},
        token=a.token,
    )
    assert r.status == 400, r
    # exchange INT/LONG values out of range are refused (dropped with a diagnostic), not a crash
    ts = "2024-05-01T10:00:00.000Z"
    for dp, value in (("DP-count", "9" * 5000), ("DP-count", str(2**31)), ("DP-big", "-" + "9" * 5000)):
        ct, body = strict_body([ts_item("CF-test", [(ts, [(dp, value, "0")])])])
        r = a.exchange(ct, body)
        assert r.status < 500, r
    assert sg.timeseries(a.id) == []
    assert any("out of range" in d["message"] for d in sg.diagnostics(a.id))
    ct, body = strict_body([ts_item("CF-test", [(ts, [("DP-count", str(2**31 - 1), "0")])])])
    assert a.exchange(ct, body).status == 200
    assert [x["value"] for x in sg.timeseries(a.id)] == [str(2**31 - 1)] or sg.timeseries(a.id)
    # non-UTF-8 Authorization header on agent, onboarding and admin endpoints
    for method, path, body in (
        ("GET", f"{AM}/agents/{a.id}/dataSourceConfiguration", None),
        ("POST", AM + "/register", b"{}"),
        ("GET", "/admin/settings", None),
        ("GET", f"{AM}/agents/{a.id}/status", None),
    ):
        for auth in (b"Bearer \xff\xfe\xfd", b"Bearer " + a.token.encode() + b"\xc3\x28", b"\xe2\x82"):
            assert _raw_auth(sg, method, path, auth, body) == 401, (method, path, auth)
    _no_server_errors(sg)


# problem 2: replayed and implausible client assertions ------------------------------------------------------
def test_assertion_replay_and_implausible_times(sg: RunningSouthgate) -> None:
    a = Agent(sg).onboard()
    jwt = a.assertion()
    assert _token(a, jwt).status == 200
    r = _token(a, jwt)
    assert r.status == 401 and r.json()["error"] == "invalid_client" and "already used" in _reason(r)
    # a new jti is fine, and a jti of another agent doesn't block this one
    assert a.get_token().status == 200
    b = Agent(sg).onboard()
    same = str(uuid.uuid4())
    assert a.get_token(jti=same).status == 200 and b.get_token(jti=same).status == 200
    assert a.get_token(jti=same).status == 401
    assert a.get_token(jti=None).status == 401
    now = int(time.time())
    head = b'{"alg":"HS256","typ":"JWT"}'
    raw_cases = {
        "NaN iat": b'"iat": NaN',
        "Infinity exp": b'"exp": Infinity',
        "-Infinity nbf": b'"nbf": -Infinity',
        "1e999 exp": b'"exp": 1e999',
        "huge int iat": b'"iat": 1' + b"0" * 400,
        "5000-digit exp": b'"exp": ' + b"9" * 5000,
    }
    for case, field in raw_cases.items():
        name = field.split(b'"')[1].decode()
        claims = _claims(a)
        claims.pop(name)
        text = json.dumps(claims).encode()[:-1] + b", " + field + b"}"
        r = _token(a, _signed(a, head, text))
        assert r.status == 401 and r.json()["error"] == "invalid_client", (case, r)
        assert _reason(r), case
    for case, over in {
        "iat 0": {"iat": 0, "nbf": None},
        "iat 2023": {"iat": 1672531200, "nbf": None},
        "nbf 0": {"nbf": 0},
        "float iat": {"iat": now + 0.5},
    }.items():
        claims = {k: v for k, v in _claims(a, **over).items() if v is not None}
        r = _token(a, _signed(a, head, json.dumps(claims).encode()))
        if case == "float iat":
            assert r.status == 200, r
            continue
        assert r.status == 401 and "implausible" in _reason(r), (case, r)
    _no_server_errors(sg)


# problem 3: bodies and headers that stop arriving -----------------------------------------------------------
@pytest.fixture
def impatient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSouthgate]:
    """A southgate with 1-second read timeouts (read from the environment when it starts)."""
    for name in ("HEADER", "BODY_IDLE", "UNAUTH_BODY"):
        monkeypatch.setenv(f"SOUTHGATE_{name}_TIMEOUT_S", "1")
    monkeypatch.setenv("SOUTHGATE_BODY_TIMEOUT_S", "3")
    with RunningSouthgate(tmp_path / "data") as server:
        yield server


def _slow(
    sg: RunningSouthgate, head: bytes, body_parts: list[tuple[float, bytes]], wait: float
) -> tuple[bytes, float]:
    """Send `head`, then each (delay, bytes); return what the server answered within `wait` s and when."""
    ctx = sg.ssl_context()
    port = int(sg.base_url.rsplit(":", 1)[1])
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(head)
            for delay, part in body_parts:
                time.sleep(delay)
                try:
                    s.sendall(part)
                except OSError:
                    break
            got = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            except (TimeoutError, ssl.SSLError, ConnectionError):
                pass
    return got, time.monotonic() - start


def test_stalled_bodies_and_headers_time_out(impatient: RunningSouthgate) -> None:
    sg = impatient
    a = Agent(sg).ready()
    host = b"Host: 127.0.0.1\r\n"
    # unauthenticated: token endpoint, body never completes
    head = b"POST " + AM.encode() + b"/oauth/token HTTP/1.1\r\n" + host
    head += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\ngrant_type="
    got, took = _slow(sg, head, [], 10)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"request body" in got and took < 5
    # register: a trickle (1 byte every 0.3 s) still hits the total limit of unauthenticated endpoints
    head = b"POST " + AM.encode() + b"/register HTTP/1.1\r\n" + host
    head += b"Authorization: Bearer " + a.config["content"]["iat"].encode() + b"\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n"
    got, took = _slow(sg, head, [(0.3, b" ")] * 10, 10)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    # authenticated exchange: a body that stalls
    ct, body = strict_body([ts_item("CF-test", [("2024-05-01T10:00:00.000Z", [("DP-temp", "1.5", "0")])])])
    head = b"POST " + MC.encode() + b"/exchange HTTP/1.1\r\n" + host
    head += b"Authorization: Bearer " + a.token.encode() + b"\r\n"
    head += b"Content-Type: " + ct.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    got, took = _slow(sg, head + body[:100], [], 10)
    assert got.startswith(b"HTTP/1.1 408") and b"stalled" in got, got[:200]
    # ... but a slow body that keeps coming is accepted
    parts = [(0.4, body[i : i + len(body) // 4 + 1]) for i in range(0, len(body), len(body) // 4 + 1)]
    got, took = _slow(sg, head, parts, 10)
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    # headers that never end
    got, took = _slow(sg, b"GET /admin/settings HTTP/1.1\r\n" + host + b"X-Slow: 1", [], 10)
    assert got.startswith(b"HTTP/1.1 408") or got == b"", got[:200]
    assert took < 5
    # the server still answers normally
    assert a.get_token().status == 200
    _no_server_errors(sg)


# problem 4: IATs kept only as a hash ------------------------------------------------------------------------
def _db_text(db_path: Path) -> str:
    db = sqlite3.connect(str(db_path))
    try:
        rows = db.execute("SELECT * FROM agents").fetchall()
    finally:
        db.close()
    return repr(rows)


def test_iat_stored_as_hash_and_old_data_dirs_migrate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = Service(data)
    agent = svc.create_agent("legacy")
    iat = svc.boarding_config(agent["id"])["content"]["iat"]
    assert svc.boarding_config(agent["id"])["content"]["iat"] == iat  # same IAT until used
    assert iat not in _db_text(data / "southgate.db")
    assert hashlib.sha256(iat.encode()).hexdigest() in _db_text(data / "southgate.db")
    # make it look like a data directory of an older southgate: IAT in plain text, no hash columns
    svc.storage.db.execute("UPDATE agents SET iat = ? WHERE id = ?", (iat, agent["id"]))
    svc.storage.db.execute("ALTER TABLE agents DROP COLUMN iat_hash")
    svc.storage.db.execute("ALTER TABLE agents DROP COLUMN iat_issued_s")
    svc.close()
    assert iat in _db_text(data / "southgate.db")
    svc = Service(data)
    assert iat not in _db_text(data / "southgate.db")
    assert svc.boarding_config(agent["id"])["content"]["iat"] == iat
    svc.close()
    with RunningSouthgate(data) as sg:
        c = Client(sg.base_url, sg.ca_pem)
        r = c.json("POST", AM + "/register", {}, token=iat)
        assert r.status == 201, r
        r = c.json("POST", AM + "/register", {}, token=iat)
        assert r.status == 401 and "already used" in _reason(r)
        fresh = sg.agent_config(agent["id"])["content"]["iat"]
        assert fresh != iat and fresh not in _db_text(data / "southgate.db")
        assert iat not in _db_text(data / "southgate.db")
        c.close()
        _no_server_errors(sg)


# problem 5: a seeded mutation fuzzer ------------------------------------------------------------------------
INTERESTING: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31,
    2**63,
    10**30,
    1e308,
    -0.0,
    "",
    "\x00",
    "\ud800",
    "A" * 300,
    "NaN",
    [],
    {},
    [[[[[]]]]],
    "2024-13-45T99:99:99Z",
]
RAW_INSERTS = [
    b"[" * 5000,
    b"{" * 3000,
    b'{"a":' * 3000,
    b"9" * 5000,
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\x00",
    b"%",
    b"%zz",
    b"%ff",
    b"&&==&",
    b"\r\n\r\n",
    b"--",
    b'"',
    b"\\u",
    b"\\ud800",
]


def _mutate_json(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, dict) and obj:
        obj = dict(obj)
        key = rng.choice(list(obj))
        roll = rng.random()
        if roll < 0.15:
            del obj[key]
        elif roll < 0.25:
            obj["x" + str(rng.randrange(100))] = rng.choice(INTERESTING)
        elif roll < 0.7 or depth > 3:
            obj[key] = rng.choice(INTERESTING)
        else:
            obj[key] = _mutate_json(rng, obj[key], depth + 1)
        return obj
    if isinstance(obj, list) and obj:
        obj = list(obj)
        i = rng.randrange(len(obj))
        obj[i] = _mutate_json(rng, obj[i], depth + 1) if rng.random() < 0.5 else rng.choice(INTERESTING)
        return obj
    return rng.choice(INTERESTING)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = rng.choice(RAW_INSERTS)
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            buf = buf[:pos]
        elif op == 4 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 64)]
        else:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(buf)


def _header_safe(data: bytes) -> bytes:
    """http.client refuses CR, LF and NUL in header values (they would split the request)."""
    return data.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")


FUZZ_SEED = int(os.environ.get("SG_FUZZ_SEED", "20240501"))
FUZZ_CASES = int(os.environ.get("SG_FUZZ_CASES", "800"))  # per target; 6 targets


def test_fuzz_requests(sg: RunningSouthgate) -> None:
    rng = random.Random(FUZZ_SEED)
    a = Agent(sg).ready()
    # Its IAT must survive every mutated register request that the service refuses (a mutation can still be
    # a JSON object, which registers like {} does: then a new agent's IAT takes over).
    iat_agent = Agent(sg)
    iat = iat_agent.config["content"]["iat"]
    conn = sg.connection()
    statuses: dict[str, dict[int, int]] = {}

    def send(target: str, method: str, path: str, body: bytes | None, headers: dict[str, Any]) -> int:
        nonlocal conn
        for attempt in (1, 2):
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                r = conn.getresponse()
                r.read()
                if r.will_close:
                    conn.close()
                    conn = sg.connection()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = sg.connection()
                if attempt == 2:
                    raise
        bucket = statuses.setdefault(target, {})
        bucket[r.status] = bucket.get(r.status, 0) + 1
        assert r.status < 500, (target, path, headers, (body or b"")[:300])
        return r.status

    json_ct = {"Content-Type": "application/json"}

    def register(i: int) -> None:
        if rng.random() < 0.5:
            body = _dump(_mutate_json(rng, {"a": {}}))
        else:
            body = _mutate_bytes(rng, b"{}")
        if body.strip() == b"{}":
            body = b"{ }x"
        nonlocal iat_agent, iat
        hdrs = dict(json_ct, Authorization="Bearer " + iat)
        if send("register", "POST", AM + "/register", body, hdrs) == 201:
            iat_agent = Agent(sg)
            iat = iat_agent.config["content"]["iat"]

    def token_body(i: int) -> None:
        good = token_form(a.assertion())
        body = _mutate_bytes(rng, good)
        send("token form", "POST", AM + "/oauth/token", body, FORM)

    head = {"alg": "HS256", "typ": "JWT"}

    def assertion(i: int) -> None:
        claims = _claims(a)
        roll = rng.random()
        if roll < 0.35:
            h, c = _dump(_mutate_json(rng, head)), _dump(claims)
        elif roll < 0.7:
            h, c = _dump(head), _dump(_mutate_json(rng, claims))
        elif roll < 0.85:
            h, c = _mutate_bytes(rng, _dump(head)), _dump(claims)
        else:
            h, c = _dump(head), _mutate_bytes(rng, _dump(claims))
        jwt = _signed(a, h, c)
        if rng.random() < 0.1:
            jwt = _mutate_bytes(rng, jwt.encode()).decode("latin-1")
        body = token_form(jwt) if rng.random() < 0.8 else token_form(jwt, encode=False)
        send("client assertion", "POST", AM + "/oauth/token", body, FORM)

    ts = "2024-05-01T10:00:00.000Z"
    rows = [
        (
            ts,
            [("DP-temp", "21.5", "0"), ("DP-count", "7", "0"), ("DP-big", "99", "0"), ("DP-on", "true", "0")],
        )
    ]
    data = json.loads(ts_item("CF-test", rows).payload)

    def exchange(i: int) -> None:
        roll = rng.random()
        if roll < 0.4:
            item = ts_item("CF-test", rows)
            item.payload = _dump(_mutate_json(rng, data))
            ct, body = strict_body([item])
        else:
            ct, body = strict_body([ts_item("CF-test", rows)])
            body = _mutate_bytes(rng, body)
            if roll > 0.9:
                ct = _header_safe(_mutate_bytes(rng, ct.encode())).decode("latin-1")
        send(
            "exchange",
            "POST",
            MC + "/exchange",
            body,
            {"Content-Type": ct, "Authorization": "Bearer " + a.token},
        )

    def authorization(i: int) -> None:
        base = rng.choice(
            [b"Bearer " + a.token.encode(), b"Bearer " + sg.admin_token.encode(), b"Basic eA=="]
        )
        auth = _header_safe(_mutate_bytes(rng, base))
        method, path = rng.choice(
            [
                ("GET", f"{AM}/agents/{a.id}/dataSourceConfiguration"),
                ("GET", "/admin/settings"),
                ("GET", f"{AM}/agents/{a.id}/status"),
                ("GET", f"/api/iottimeseries/v3/timeseries/{a.entity}/env"),
            ]
        )
        send("authorization", method, path, None, {"Authorization": auth})

    # The application side (issue 12): read queries, import jobs, assets, Token Manager.
    admin = {"Authorization": "Bearer " + sg.admin_token, "Content-Type": "application/json"}
    queries = {"from": "2024-05-01T00:00:00Z", "to": "2024-05-02T00:00:00Z", "limit": "5", "select": "count"}
    job = {
        "data": [
            {
                "entity": a.entity,
                "propertySetName": "env",
                "timeseriesFiles": [{"filePath": "f.json", "from": queries["from"], "to": queries["to"]}],
            }
        ]
    }
    asset = {
        "name": "fz",
        "aspects": [{"name": "env", "variables": [{"name": "v", "dataType": "INT", "unit": ""}]}],
    }
    tm_body = {"appName": "x", "appVersion": "1.0.0", "hostTenant": "devtenant", "userTenant": "devtenant"}

    def read_api(i: int) -> None:
        roll = rng.random()
        if roll < 0.4:
            q = dict(queries)
            k = rng.choice(list(q))
            q[k] = _mutate_bytes(rng, q[k].encode()).decode("latin-1")
            q["sort"] = rng.choice(["asc", "desc", "x", ""])
            q["latestValue"] = rng.choice(["true", "false", "1"])
            api = rng.choice(["/api/iottimeseries/v3/timeseries", "/api/iottsbulk/v3/timeseries"])
            send("read query", "GET", f"{api}/{a.entity}/env?{urlencode(q)}", None, admin)
        elif roll < 0.6:
            send("import job", "POST", "/api/iottsbulk/v3/importJobs", _dump(_mutate_json(rng, job)), admin)
        elif roll < 0.8:
            send("asset", "POST", "/api/assetmanagement/v3/assets", _dump(_mutate_json(rng, asset)), admin)
        else:
            key = _header_safe(_mutate_bytes(rng, b"Basic ZGV2dGVuYW50LXgtMTIzOnNlY3JldA==")).decode(
                "latin-1"
            )
            headers = {"X-SPACE-AUTH-KEY": key, "Content-Type": "application/json"}
            path = "/api/technicaltokenmanager/v3/oauth/token"
            send("token manager", "POST", path, _dump(_mutate_json(rng, tm_body)), headers)

    targets: list[Callable[[int], None]] = [
        register,
        token_body,
        assertion,
        exchange,
        authorization,
        read_api,
    ]
    start = time.monotonic()
    for i in range(FUZZ_CASES):
        for target in targets:
            target(i)
    took = time.monotonic() - start
    conn.close()
    print(f"fuzz: {FUZZ_CASES * len(targets)} cases in {took:.1f} s, seed {FUZZ_SEED}: {statuses}")
    # the register IAT was never used up by a mutated body
    assert iat_agent.http.json("POST", AM + "/register", {}, token=iat).status == 201
    _no_server_errors(sg)
