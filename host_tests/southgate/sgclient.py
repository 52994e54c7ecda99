"""Test-side helpers for southgate: a TLS HTTP client, client assertions, exchange bodies, an onboarded agent.

Independent of southgate's own code on purpose (a second implementation of the wire rules).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import random
import ssl
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from southgate.testing import RunningSouthgate

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64u(data: bytes, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if pad else text.rstrip("=")


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive connection (reopened when the server closed it)."""

    def __init__(self, base_url: str, ca_pem: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.tls = parts.scheme == "https"
        self.ctx = ssl.create_default_context(cafile=ca_pem) if self.tls else None
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        chunked: bool = False,
    ) -> Resp:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                if chunked:
                    assert body is not None
                    self.conn.putrequest(method, path)
                    for k, v in hdrs.items():
                        self.conn.putheader(k, v)
                    self.conn.putheader("Transfer-Encoding", "chunked")
                    self.conn.endheaders()
                    for i in range(0, len(body), 1000):
                        piece = body[i : i + 1000]
                        self.conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.conn.send(b"0\r\n\r\n")
                else:
                    self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
                if r.will_close:
                    self.close()
                return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(
        self,
        method: str,
        path: str,
        obj: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp:
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        body = None if obj is None else json.dumps(obj).encode()
        return self.request(method, path, body, hdrs, token)


def assertion(
    client_id: str,
    tenant: str,
    secret: str,
    now: float | None = None,
    *,
    alg: str = "HS256",
    pad: bool = False,
    sign_key: str | None = None,
    **claims: Any,
) -> str:
    now_i = int(time.time() if now is None else now)
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": ["southgate"],
        "iat": now_i,
        "nbf": now_i,
        "exp": now_i + 3600,
        "jti": str(uuid.uuid4()),
        "schemas": ["urn:siemens:mindsphere:v1"],
        "ten": tenant,
    }
    for k, v in claims.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    head = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode(), pad)
    payload = b64u(json.dumps(body).encode(), pad)
    signing_input = head + "." + payload
    if alg == "none":
        return signing_input + "."
    key = (sign_key if sign_key is not None else secret).encode()
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64u(sig, pad)


def token_form(jwt: str, encode: bool = True) -> bytes:
    if encode:
        return (
            "grant_type=client_credentials&client_assertion_type={}&client_assertion={}".format(
                quote(ASSERTION_TYPE, safe=""), quote(jwt, safe="")
            )
        ).encode()
    return (
        f"grant_type=client_credentials&client_assertion_type={ASSERTION_TYPE}&client_assertion={jwt}"
    ).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# exchange bodies ----------------------------------------------------------------------------------------
@dataclass
class Item:
    type: str
    version: str
    payload: bytes
    content_type: str = "application/json"
    details: dict[str, Any] = field(default_factory=dict)


def ts_item(config_id: str, rows: list[tuple[str, list[tuple[str, str, str]]]]) -> Item:
    data = [
        {"timestamp": ts, "values": [{"dataPointId": d, "value": v, "qualityCode": q} for d, v, q in vals]}
        for ts, vals in rows
    ]
    return Item(
        "standardTimeSeries",
        "1.0",
        json.dumps(data, separators=(",", ":")).encode(),
        details={"configurationId": config_id},
    )


def rand_boundary(n: int = 20) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def strict_body(items: list[Item]) -> tuple[str, bytes]:
    """RFC 2046: CRLF, random 20-char boundaries, compact meta JSON, ;charset=utf-8 (the MCL layout)."""
    outer = rand_boundary()
    out = bytearray()
    for it in items:
        inner = rand_boundary()
        meta = {"type": "item", "version": "1.0", "payload": {"type": it.type, "version": it.version}}
        if it.details:
            meta["payload"]["details"] = it.details
        out += b"--%s\r\nContent-Type: multipart/related;boundary=%s\r\n\r\n" % (
            outer.encode(),
            inner.encode(),
        )
        out += b"--%s\r\nContent-Type: application/vnd.siemens.mindsphere.meta+json\r\n\r\n" % inner.encode()
        out += json.dumps(meta, separators=(",", ":")).encode() + b"\r\n"
        out += b"--%s\r\nContent-Type: %s\r\n\r\n" % (inner.encode(), it.content_type.encode())
        out += it.payload + b"\r\n--%s--\r\n" % inner.encode()
    out += b"--%s--" % outer.encode()
    return f"multipart/mixed;boundary={outer};charset=utf-8", bytes(out)


def node_body(items: list[Item]) -> tuple[str, bytes]:
    """Node's layout: LF, fixed boundaries, 'Content-Type:' without space, pretty meta, odd ending."""
    out = bytearray()
    for it in items:
        meta = {"type": "item", "version": "1.0", "payload": {"type": it.type, "version": it.version}}
        if it.details:
            meta["payload"]["details"] = it.details
        out += b"--mindspheremessage\nContent-Type:multipart/related;boundary=mindspherepart\n\n"
        out += b"--mindspherepart\nContent-Type:application/vnd.siemens.mindsphere.meta+json\n\n"
        out += json.dumps(meta, indent=2).encode() + b"\n"
        out += b"--mindspherepart\nContent-Type:%s\n\n" % it.content_type.encode()
        # Node's JSON template ends "\n\n\r\n"; its file template puts the delimiter right after the bytes.
        tail = b"\n\n\r\n" if it.content_type == "application/json" else b"\r\n"
        out += it.payload + tail + b"--mindspherepart--\n"
    out += b"--mindspheremessage--\n"
    return "multipart/mixed; boundary=mindspheremessage", bytes(out)


# an onboarded agent -------------------------------------------------------------------------------------
DSC = {
    "configurationId": "CF-test",
    "dataSources": [
        {
            "name": "DS-main",
            "description": "",
            "dataPoints": [
                {"id": "DP-temp", "name": "temperature", "type": "DOUBLE", "unit": "C"},
                {"id": "DP-count", "name": "count", "type": "INT", "unit": ""},
                {"id": "DP-on", "name": "on", "type": "BOOLEAN", "unit": ""},
                {"id": "DP-text", "name": "text", "type": "STRING", "unit": ""},
                {"id": "DP-big", "name": "big", "type": "LONG", "unit": ""},
                {"id": "DP-when", "name": "when", "type": "TIMESTAMP", "unit": ""},
            ],
        }
    ],
}


class Agent:
    """An agent created, onboarded and holding an access token, for tests that need one."""

    def __init__(self, sg: RunningSouthgate, name: str | None = None, tenant: str | None = None) -> None:
        self.sg = sg
        self.config = sg.create_agent(name or "agent-" + uuid.uuid4().hex[:8], tenant)
        self.id = self.config["content"]["clientId"]
        self.tenant = self.config["content"]["tenant"]
        self.http = Client(sg.base_url, sg.ca_pem)
        self.reg: dict[str, Any] = {}
        self.token = ""

    def onboard(self) -> Agent:
        r = self.http.json(
            "POST", "/api/agentmanagement/v3/register", {}, token=self.config["content"]["iat"]
        )
        assert r.status == 201, r
        self.reg = r.json()
        return self

    def assertion(self, **kw: Any) -> str:
        return assertion(self.id, self.tenant, self.reg["client_secret"], **kw)

    def get_token(self, **kw: Any) -> Resp:
        return self.http.request(
            "POST", "/api/agentmanagement/v3/oauth/token", token_form(self.assertion(**kw)), FORM
        )

    def login(self) -> Agent:
        r = self.get_token()
        assert r.status == 200, r
        self.token = r.json()["access_token"]
        return self

    def put_dsc(self, dsc: dict[str, Any] | None = None, if_match: str = "0") -> Resp:
        return self.http.json(
            "PUT",
            f"/api/agentmanagement/v3/agents/{self.id}/dataSourceConfiguration",
            dsc or DSC,
            token=self.token,
            headers={"If-Match": if_match},
        )

    def map(self, dp: str, entity: str, pset: str, prop: str, keep: bool = False) -> Resp:
        return self.http.json(
            "POST",
            "/api/mindconnect/v3/dataPointMappings",
            {
                "agentId": self.id,
                "dataPointId": dp,
                "entityId": entity,
                "propertySetName": pset,
                "propertyName": prop,
                "keepMapping": keep,
            },
            token=self.token,
        )

    def ready(self, entity: str | None = None, pset: str = "env") -> Agent:
        """Onboarded, token, DSC stored and every data point mapped to `entity`/`pset`."""
        self.onboard().login()
        r = self.put_dsc()
        assert r.status == 200, r
        self.entity = entity or self.config_entity()
        for dp in DSC["dataSources"][0]["dataPoints"]:
            r = self.map(dp["id"], self.entity, pset, dp["name"])
            assert r.status == 201, r
        return self

    def config_entity(self) -> str:
        return uuid.uuid4().hex

    def exchange(
        self, content_type: str, body: bytes, chunked: bool = False, token: str | None = None
    ) -> Resp:
        return self.http.request(
            "POST",
            "/api/mindconnect/v3/exchange",
            body,
            {"Content-Type": content_type},
            token=self.token if token is None else token,
            chunked=chunked,
        )
