"""Record exactly what the official Node.js agent library sends, byte for byte.

A tiny plain-HTTP MindConnect stand-in (just enough answers for the library to get through every
step of agent_flow.js) that keeps each raw request. It exists so the multipart parser and the
southgate server can be tested against real Node output without Node installed:

    .venv/bin/python host_tests/southgate/node/capture_server.py --lib DIR [--out DIR]

DIR (--lib) holds node_modules/@mindconnect/mindconnect-nodejs (test_nodejs.py caches one under
build/node-cache/<version>). Writes into --out (default host_tests/southgate/captures):
``node-<op>.body`` (the raw request body) and ``node-<op>.ctype`` (its Content-Type header value),
plus ``node-requests.txt``: every request line and header block in order, bearer tokens redacted.
The stub is not a validator: it answers what the real service answers, checks nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "captures"
TENANT = "capturetenant"


@dataclass
class Captured:
    method: str
    target: str
    head: bytes
    headers: list[tuple[str, str]]
    body: bytes
    conn: int = 0

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class StubState:
    client_id: str
    base_url: str = ""
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    secret: str = ""
    dsc_etag: int = 0
    dsc: dict | None = None
    mappings: list = field(default_factory=list)
    file_etags: dict = field(default_factory=dict)
    requests: list[Captured] = field(default_factory=list)
    registrations: int = 0
    connections: int = 0


def _json(status: int, obj: object, extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    headers.update(extra or {})
    return status, headers, json.dumps(obj).encode()


def _registration(st: StubState, expires_in: int) -> dict:
    st.registrations += 1
    st.secret = f"stub-secret-{st.registrations}-{secrets.token_hex(16)}"
    return {
        "client_id": st.client_id,
        "client_secret": st.secret,
        "client_secret_expires_at": int(time.time()) + expires_in,
        "grant_types": ["client_credentials"],
        "registration_access_token": f"stub-rat-{st.registrations}",
        "registration_client_uri": f"{st.base_url}/api/agentmanagement/v3/register/{st.client_id}",
        "token_endpoint_auth_method": "client_secret_jwt",
    }


def _answer(st: StubState, req: Captured) -> tuple[int, dict[str, str], bytes]:
    path = urlsplit(req.target).path
    am = "/api/agentmanagement/v3"
    if req.method == "POST" and path == am + "/register":
        # Less than 25 h of secret life: the library rotates right away, so the rotation PUT is captured too.
        return _json(201, _registration(st, 3600))
    if req.method == "PUT" and path == am + "/register/" + st.client_id:
        return _json(200, _registration(st, 7 * 86400))
    if req.method == "POST" and path == am + "/oauth/token":
        form = dict(parse_qsl(req.body.decode()))
        jwt.decode(form["client_assertion"], st.secret, algorithms=["HS256"], audience="southgate")
        now = int(time.time())
        claims = {
            "jti": str(uuid.uuid4()),
            "sub": st.client_id,
            "scope": ["mdsp:core:Agent"],
            "client_id": st.client_id,
            "cid": st.client_id,
            "azp": st.client_id,
            "grant_type": "client_credentials",
            "iat": now,
            "exp": now + 1800,
            "iss": st.base_url + "/api/agentmanagement/v3/oauth/token",
            "zid": TENANT,
            "aud": ["southgate", "agent"],
            "ten": TENANT,
            "schemas": ["urn:siemens:mindsphere:v1"],
        }
        token = jwt.encode(claims, st.key, algorithm="RS256", headers={"kid": "key-id-1"})
        return _json(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": 1800,
                "scope": "mdsp:core:Agent",
                "jti": claims["jti"],
            },
        )
    if req.method == "GET" and path == am + "/oauth/token_key":
        pem = (
            st.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        numbers = st.key.public_key().public_numbers()

        def b64(n: int) -> str:
            return (
                base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
            )

        return _json(
            200,
            {
                "kty": "RSA",
                "e": b64(numbers.e),
                "n": b64(numbers.n),
                "kid": "key-id-1",
                "alg": "RS256",
                "value": pem.replace("\n", ""),
            },
        )
    if path == am + f"/agents/{st.client_id}/dataSourceConfiguration":
        if req.method == "PUT":
            st.dsc_etag += 1
            st.dsc = dict(json.loads(req.body), id=secrets.token_hex(16), eTag=str(st.dsc_etag))
        if st.dsc is None:
            return _json(404, {"id": str(uuid.uuid4()), "message": "no configuration"})
        return _json(200, st.dsc)
    if path == "/api/mindconnect/v3/dataPointMappings":
        if req.method == "POST":
            m = dict(
                json.loads(req.body),
                id=str(uuid.uuid4()),
                qualityEnabled=True,
                validity={"status": "VALID", "reasons": []},
            )
            st.mappings.append(m)
            return _json(201, m)
        n = len(st.mappings)
        return _json(
            200,
            {
                "content": st.mappings,
                "last": True,
                "totalPages": 1,
                "totalElements": n,
                "numberOfElements": n,
                "first": True,
                "size": 2000,
                "number": 0,
            },
        )
    if req.method == "POST" and path == "/api/mindconnect/v3/exchange":
        return 200, {}, b""
    if req.method == "POST" and path == "/api/eventmanagement/v3/events":
        ev = dict(
            json.loads(req.body),
            id=str(uuid.uuid4()),
            etag=0,
            typeId="com.siemens.mindsphere.eventmgmt.event.type.MindSphereStandardEvent",
        )
        return _json(201, ev)
    if req.method == "PUT" and path.startswith("/api/iotfile/v3/files/"):
        etag = st.file_etags.get(path, -1) + 1
        st.file_etags[path] = etag
        return 201, {"ETag": str(etag)}, b""
    return _json(404, {"id": str(uuid.uuid4()), "message": f"stub: no route for {req.method} {path}"})


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    h = {k.lower(): v for k, v in headers}
    if h.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()
    return await reader.readexactly(int(h.get("content-length", "0")))


def _handler(st: StubState):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        st.connections += 1
        conn = st.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.split(":", 1)) for x in lines[1:] if x]
                headers = [(k, v.strip()) for k, v in headers]
                body = await _read_body(reader, headers)
                req = Captured(method, target, head, headers, body, conn)
                st.requests.append(req)
                status, rh, rbody = _answer(st, req)
                close = (req.header("connection") or "").lower() == "close"
                out = [
                    f"HTTP/1.1 {status} X",
                    f"Content-Length: {len(rbody)}",
                    "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
                ]
                out += ["{}: {}".format(*kv) for kv in rh.items()]
                if close:
                    out.append("Connection: close")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + rbody)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


def _redact(head: bytes) -> str:
    lines = []
    for line in head.decode("latin-1").rstrip("\r\n").split("\r\n"):
        if line.lower().startswith("authorization:"):
            scheme = line.split(":", 1)[1].strip().split(" ")[0]
            line = line.split(":", 1)[0] + ": " + scheme + " <redacted>"
        lines.append(line)
    return "\n".join(lines)


# Which request is which operation, in agent_flow.js order.
CAPTURE_NAMES = [
    ("POST", "/api/mindconnect/v3/exchange", ["postdata", "bulkpostdata", "exchange-file-template"]),
    ("POST", "/api/eventmanagement/v3/events", ["postevent"]),
    ("PUT", "/api/agentmanagement/v3/agents/", ["putdatasourceconfiguration"]),
    ("POST", "/api/mindconnect/v3/dataPointMappings", ["putdatamappings"]),
    ("POST", "/api/agentmanagement/v3/oauth/token", ["token"]),
]


def _write_expected(out_dir: Path, sent: dict) -> None:
    """``node-<op>.expected.json``: the items a correct parser must find in ``node-<op>.body``,
    built from what agent_flow.js handed the library (not from parsing the capture)."""
    cfg = sent.get("dataSourceConfiguration", {}).get("configurationId")

    def ts_item(payload: list) -> dict:
        return {
            "meta": {
                "type": "item",
                "version": "1.0",
                "payload": {
                    "type": "standardTimeSeries",
                    "version": "1.0",
                    "details": {"configurationId": cfg},
                },
            },
            "contentType": "application/json",
            "json": payload,
        }

    for name, payload in sent.get("exchangePayloads", {}).items():
        (out_dir / (f"node-{name}.expected.json")).write_text(
            json.dumps({"items": [ts_item(payload)]}, indent=1)
        )
    f = sent.get("exchangeFile")
    if f:
        item = {
            "meta": {
                "type": "item",
                "version": "1.0",
                "payload": {
                    "type": "file",
                    "version": "1.0",
                    "details": {
                        "fileName": f["fileName"],
                        "creationDate": f["creationDate"],
                        "fileType": f["fileType"],
                    },
                },
            },
            "contentType": "application/octet-stream",
            "hex": f["hex"],
        }
        (out_dir / "node-exchange-file-template.expected.json").write_text(
            json.dumps({"items": [item]}, indent=1)
        )


def capture(lib_dir: Path, out_dir: Path) -> dict:
    client_id = secrets.token_hex(16)
    asset_id = secrets.token_hex(16)
    st = StubState(client_id)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server_box: list = []

    async def start() -> None:
        server = await asyncio.start_server(_handler(st), "127.0.0.1", 0)
        server_box.append(server)
        st.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    ready.wait(10)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            cfg = {
                "content": {
                    "baseUrl": st.base_url,
                    "iat": "stub-iat",
                    "clientCredentialProfile": ["SHARED_SECRET"],
                    "clientId": client_id,
                    "tenant": TENANT,
                },
                "expiration": "2099-01-01T00:00:00.000Z",
            }
            (t / "agentconfig.json").write_text(json.dumps(cfg))
            params = {
                "libDir": str(lib_dir),
                "config": str(t / "agentconfig.json"),
                "stateDir": str(t / "state"),
                "out": str(t / "result.json"),
                "assetId": asset_id,
                "capture": True,
            }
            (t / "params.json").write_text(json.dumps(params))
            env = dict(os.environ)
            env.pop("http_proxy", None)
            env.pop("HTTP_PROXY", None)
            proc = subprocess.run(
                ["node", str(HERE / "agent_flow.js"), str(t / "params.json")],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            if not (t / "result.json").exists():
                err = proc.stderr[-4000:]
                raise RuntimeError(f"agent_flow.js wrote no result (exit {proc.returncode}):\n{err}")
            result = json.loads((t / "result.json").read_text())
            result["stderr"] = proc.stderr[-4000:]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    out_dir.mkdir(parents=True, exist_ok=True)
    counters: dict[tuple[str, str], int] = {}
    summary = []
    for i, req in enumerate(st.requests):
        ctype = req.header("content-type")
        name = req.target.split("?")[0].rsplit("/", 1)[-1]
        summary.append(
            f"### {i:02d} {name} (connection {req.conn}, {len(req.body)} body bytes)\n{_redact(req.head)}\n"
        )
        for method, prefix, names in CAPTURE_NAMES:
            if req.method == method and urlsplit(req.target).path.startswith(prefix):
                n = counters.get((method, prefix), 0)
                counters[(method, prefix)] = n + 1
                if n < len(names) and ctype is not None:
                    (out_dir / (f"node-{names[n]}.body")).write_bytes(req.body)
                    (out_dir / (f"node-{names[n]}.ctype")).write_text(ctype + "\n")
                break
    _write_expected(out_dir, result.get("sent", {}))
    header = (
        f"Requests sent by @mindconnect/mindconnect-nodejs {result.get('library')} (agent_flow.js via "
        "capture_server.py),\nin order, header blocks verbatim except bearer tokens. "
        "Client/asset ids are random per run.\n\n"
    )
    (out_dir / "node-requests.txt").write_text(header + "\n".join(summary))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if shutil.which("node") is None:
        print("node is not installed", file=sys.stderr)
        return 2
    result = capture(args.lib, args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "sent"}, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
