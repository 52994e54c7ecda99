"""Fault queue (every kind), rate limit and the connection/request counters."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from sgclient import Agent, Client, strict_body, ts_item
from southgate.testing import RunningSouthgate, SouthgateError

EXCHANGE = "/api/mindconnect/v3/exchange"
T0 = "2024-05-01T10:00:00.000Z"


@pytest.fixture
def ready(fresh_settings: RunningSouthgate) -> Agent:
    return Agent(fresh_settings).ready()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def body(value: str = "1.5") -> tuple[str, bytes]:
    return strict_body([ts_item("CF-test", [(T0, [("DP-temp", value, "0")])])])


@pytest.mark.parametrize("status", [400, 401, 413, 429, 500, 503])
def test_status_fault(sg: RunningSouthgate, ready: Agent, status: int) -> None:
    sg.add_fault(path=EXCHANGE, kind="status", status=status, retry_after=7)
    ct, data = body()
    r = ready.exchange(ct, data)
    assert r.status == status
    assert set(r.json()) == {"id", "message"} and "injected" in r.json()["message"]
    if status in (429, 503):
        assert r.headers["retry-after"] == "7"
    if status == 401:
        assert "www-authenticate" in r.headers
    assert sg.timeseries(ready.id) == []
    assert ready.exchange(ct, data).status == 200  # count 1: the next request is normal again
    assert len(sg.timeseries(ready.id)) == 1


def test_fault_count_method_and_glob(sg: RunningSouthgate, ready: Agent) -> None:
    sg.add_fault(path="/api/mindconnect/*", method="POST", kind="status", status=500, count=2)
    assert [f["remaining"] for f in sg.faults()] == [2]
    ct, data = body()
    assert ready.http.request("GET", "/api/mindconnect/v3/dataPointMappings", token=ready.token).status == 200
    assert ready.exchange(ct, data).status == 500
    assert ready.exchange(ct, data).status == 500
    assert ready.exchange(ct, data).status == 200
    assert sg.faults() == []
    # admin paths are never faulted
    sg.add_fault(path="/", kind="status", status=503)
    assert sg.settings()["rate_limit"] == 0
    sg.clear_faults()
    assert sg.faults() == []


def test_close_after_bytes(sg: RunningSouthgate, ready: Agent) -> None:
    sg.add_fault(path=EXCHANGE, kind="close_after_bytes", bytes=100)
    ct, data = body()
    c = Client(sg.base_url, sg.ca_pem)
    c.conn = c._connect()
    with pytest.raises((http.client.HTTPException, OSError)):
        c.conn.request(
            "POST",
            EXCHANGE,
            body=data,
            headers={"Content-Type": ct, "Authorization": "Bearer " + ready.token},
        )
        c.conn.getresponse().read()
    c.close()
    assert sg.timeseries(ready.id) == []
    assert ready.exchange(ct, data).status == 200


def raw_request(sg: RunningSouthgate, request: bytes) -> bytes:
    parts = urlsplit(sg.base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    with ssl.create_default_context(cafile=sg.ca_pem).wrap_socket(sock, server_hostname=parts.hostname) as s:
        s.sendall(request)
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (ssl.SSLError, ConnectionError):
            pass
    return got


def test_close_after_status_line(sg: RunningSouthgate, ready: Agent) -> None:
    sg.add_fault(path=EXCHANGE, kind="close_after_status", status=503)
    ct, data = body()
    head = (
        f"POST {EXCHANGE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ready.token}\r\n"
        f"Content-Type: {ct}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    got = raw_request(sg, head + data)
    assert got == b"HTTP/1.1 503 Service Unavailable\r\n"
    assert sg.timeseries(ready.id) == []


def test_stall(sg: RunningSouthgate, ready: Agent) -> None:
    sg.add_fault(path=EXCHANGE, kind="stall", seconds=0.6)
    ct, data = body()
    start = time.monotonic()
    assert ready.exchange(ct, data).status == 200
    assert time.monotonic() - start >= 0.55
    assert len(sg.timeseries(ready.id)) == 1


def test_accept_but_drop(sg: RunningSouthgate, ready: Agent) -> None:
    sg.add_fault(path=EXCHANGE, kind="drop")
    ct, data = body()
    r = ready.exchange(ct, data)
    assert r.status == 200 and r.body == b""
    assert sg.timeseries(ready.id) == []
    diag = [d for d in sg.diagnostics(ready.id) if d["source"] == "fault"]
    assert diag and diag[0]["state"] == "DROPPED"
    sg.add_fault(path="/api/eventmanagement/v3/events", kind="drop")
    r = ready.http.json(
        "POST", "/api/eventmanagement/v3/events", {"entityId": "a" * 32, "timestamp": T0}, token=ready.token
    )
    assert r.status == 201 and sg.events(ready.id) == []


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "status", "status": 418},
        {"path": "no-slash"},
        {"count": 0},
        {"kind": "stall", "seconds": -1},
        {"kind": "close_after_bytes", "bytes": "x"},
        {"bogus": 1},
        {"kind": "status", "status": 429, "retry_after": -2},
    ],
)
def test_invalid_fault_specs(sg: RunningSouthgate, spec: dict[str, object]) -> None:
    with pytest.raises(SouthgateError, match="400"):
        sg.add_fault(**spec)


def test_fault_cli_on_running_server(sg: RunningSouthgate, ready: Agent) -> None:
    cli = [sys.executable, "-m", "southgate", "fault"]
    subprocess.run(
        cli
        + [
            "add",
            "--data",
            str(sg.data_dir),
            "--path",
            EXCHANGE,
            "--kind",
            "status",
            "--status",
            "429",
            "--retry-after",
            "3",
        ],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        cli + ["list", "--data", str(sg.data_dir)], check=True, capture_output=True, text=True
    )
    assert EXCHANGE in listed.stdout and "429" in listed.stdout
    ct, data = body()
    r = ready.exchange(ct, data)
    assert r.status == 429 and r.headers["retry-after"] == "3"
    subprocess.run(
        cli + ["add", "--data", str(sg.data_dir), "--path", EXCHANGE], check=True, capture_output=True
    )
    subprocess.run(cli + ["clear", "--data", str(sg.data_dir)], check=True, capture_output=True)
    assert ready.exchange(ct, data).status == 200


def test_rate_limit(sg: RunningSouthgate, ready: Agent) -> None:
    other = Agent(sg).ready()
    sg.settings(rate_limit=3, rate_window_s=30)
    ct, data = body()
    for _ in range(3):
        assert ready.exchange(ct, data).status == 200
    r = ready.exchange(ct, data)
    assert r.status == 429 and 1 <= int(r.headers["retry-after"]) <= 30
    assert other.exchange(ct, data).status == 200  # per agent
    sg.settings(rate_limit=0)
    assert ready.exchange(ct, data).status == 200


def test_a_forged_token_counts_against_its_sender_not_the_agent_it_names(
    sg: RunningSouthgate, ready: Agent
) -> None:
    """Requests are counted per agent only on a token this server signed: a token that merely names another
    agent (alg none, a made-up signature) neither uses up that agent's requests nor writes into its
    diagnostics."""
    forged = "eyJhbGciOiJub25lIn0." + b64url(json.dumps({"sub": ready.id}).encode()) + ".AAAA"
    sg.settings(rate_limit=3, rate_window_s=30)
    ct, data = body()
    c = Client(sg.base_url, sg.ca_pem)
    for _ in range(3):
        assert c.request("POST", EXCHANGE, data, {"Content-Type": ct}, token=forged).status == 401
    assert ready.exchange(ct, data).status == 200
    sg.settings(rate_limit=0)
    sg.add_fault(path=EXCHANGE, kind="drop")
    assert c.request("POST", EXCHANGE, data, {"Content-Type": ct}, token=forged).status == 200
    assert not [d for d in sg.admin("GET", f"/admin/agents/{ready.id}/diagnostics") if "dropped" in str(d)]
    c.close()


def test_counters(sg: RunningSouthgate, ready: Agent) -> None:
    sg.reset_counters()
    c = Client(sg.base_url, sg.ca_pem)
    ct, data = body()
    for _ in range(3):
        r = c.request("POST", EXCHANGE, data, {"Content-Type": ct}, token=ready.token)
        assert r.status == 200
    c.close()
    c2 = Client(sg.base_url, sg.ca_pem)
    assert c2.request("GET", "/api/agentmanagement/v3/oauth/token_key").status == 200
    c2.close()
    n = sg.counters()
    assert n["connections"] == 2 and n["tls_handshakes"] == 2
    assert n["requests"] == 5  # 3 + 1 + the reset itself
    assert n["by_path"][EXCHANGE]["requests"] == 3 and n["by_path"][EXCHANGE]["bytes_in"] > 3 * len(data)
    assert n["bytes_in"] >= n["by_path"][EXCHANGE]["bytes_in"]
    conns = n["per_connection"]
    assert [x["requests"] for x in conns] == [3, 1] and all(x["tls"] for x in conns)
    assert n["per_request"][-1]["path"] == "/api/agentmanagement/v3/oauth/token_key"


def test_plain_http_counts_no_handshakes(tmp_path: object) -> None:
    from pathlib import Path

    with RunningSouthgate(Path(str(tmp_path)) / "plain", plain_http=True) as sg:
        assert sg.base_url.startswith("http://")
        c = Client(sg.base_url, sg.ca_pem)
        assert c.request("GET", "/api/agentmanagement/v3/oauth/token_key").status == 200
        c.close()
        n = sg.counters()
        assert n["tls_handshakes"] == 0 and n["connections"] >= 2
