"""Event Management events, IoT File uploads (single and multipart) and the diagnostics APIs."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sgclient import Agent, strict_body, ts_item
from southgate.testing import RunningSouthgate

EVENTS = "/api/eventmanagement/v3/events"
FILES = "/api/iotfile/v3/files"
MC = "/api/mindconnect/v3"
T0 = "2024-05-01T10:00:00.000Z"
MIB = 1024 * 1024


def test_post_event(sg: RunningSouthgate, agent: Agent) -> None:
    event = {
        "entityId": agent.id,
        "sourceType": "Agent",
        "sourceId": "application",
        "source": "meowz",
        "severity": 20,
        "timestamp": T0,
        "description": "pump stopped",
    }
    r = agent.http.json("POST", EVENTS + "?", event, token=agent.token)
    assert r.status == 201
    body = r.json()
    assert body["id"] and body["typeId"].endswith("MindSphereStandardEvent") and body["source"] == "meowz"
    stored = sg.events(agent.id)
    assert (
        len(stored) == 1 and stored[0]["description"] == "pump stopped" and stored[0]["entityId"] == agent.id
    )
    assert stored[0]["source"] == "meowz" and stored[0]["via"] == "eventmanagement"


@pytest.mark.parametrize(
    "change",
    [
        {"entityId": "xyz"},
        {"entityId": None},
        {"timestamp": "yesterday"},
        {"timestamp": None},
        {"severity": "high"},
        {"description": "d" * 256},
        {"typeId": "custom.type"},
        {"source": 5},
        {"acknowledged": "no"},
    ],
)
def test_event_validation(sg: RunningSouthgate, agent: Agent, change: dict[str, object]) -> None:
    event = {"entityId": agent.id, "severity": 30, "timestamp": T0, "description": "ok"}
    for k, v in change.items():
        if v is None:
            event.pop(k)
        else:
            event[k] = v
    r = agent.http.json("POST", EVENTS, event, token=agent.token)
    assert r.status == 400, (change, r.body)
    assert agent.http.json("POST", EVENTS, [], token=agent.token).status == 400
    assert agent.http.json("POST", EVENTS, {"entityId": agent.id, "timestamp": T0}).status == 401


# files ----------------------------------------------------------------------------------------------------
def put(
    a: Agent,
    entity: str,
    path: str,
    data: bytes,
    query: str = "",
    if_match: str | None = None,
    stamp: str = "timestamp",
) -> object:
    headers = {
        "Content-Type": "application/octet-stream",
        "description": "a file",
        "type": "text/plain",
        stamp: T0,
    }
    if if_match is not None:
        headers["If-Match"] = if_match
    return a.http.request("PUT", f"{FILES}/{entity}/{path}{query}", data, headers, token=a.token)


def test_single_upload_and_etag_rules(sg: RunningSouthgate, agent: Agent) -> None:
    entity = agent.id
    r = put(agent, entity, "dir/sub/a.txt", b"hello")
    assert r.status == 201 and r.headers["etag"] == "0"
    assert put(agent, entity, "dir/sub/a.txt", b"again").status == 409  # exists, no If-Match
    assert put(agent, entity, "dir/sub/a.txt", b"again", if_match="5").status == 412
    r = put(agent, entity, "dir/sub/a.txt", b"again", if_match="0")
    assert r.status == 201 and r.headers["etag"] == "1"
    assert put(agent, entity, "new.txt", b"x", if_match="3").status == 412
    files = sg.files(agent.id)
    assert [(f["path"], f["size"], f["eTag"], f["type"], f["description"]) for f in files] == [
        ("dir/sub/a.txt", 5, 1, "text/plain", "a file")
    ]
    assert sg.file_content(agent.id, "dir/sub/a.txt") == b"again"
    got = agent.http.request("GET", f"{FILES}/{entity}/dir/sub/a.txt", token=sg.admin_token)
    assert got.status == 200 and got.body == b"again" and got.headers["etag"] == "1"
    listing = agent.http.request("GET", f"{FILES}/{entity}", token=sg.admin_token).json()
    assert [x["path"] for x in listing] == ["dir/sub/a.txt"]
    # reading back is for applications: an agent's token is refused with a reason
    refused = agent.http.request("GET", f"{FILES}/{entity}", token=agent.token)
    assert refused.status == 403 and b"agent APIs" in refused.body
    assert agent.http.request("GET", f"{FILES}/{entity}/missing.txt", token=sg.admin_token).status == 404


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../b", "a//b", "./x"])
def test_file_path_rules(sg: RunningSouthgate, agent: Agent, path: str) -> None:
    assert put(agent, agent.id, path, b"x").status in (400, 404)


def test_file_needs_token_and_hex_entity(sg: RunningSouthgate, agent: Agent) -> None:
    assert agent.http.request("PUT", f"{FILES}/{agent.id}/f.txt", b"x").status == 401
    assert put(agent, "NOTHEX", "f.txt", b"x").status == 400
    assert put(agent, agent.id, "f.txt", b"x", stamp="timestamp").status == 201
    r = agent.http.request("PUT", f"{FILES}/{agent.id}/g.txt", b"x", {"timestamp": "nope"}, token=agent.token)
    assert r.status == 400


def test_multipart_upload(sg: RunningSouthgate, agent: Agent) -> None:
    entity = uuid.uuid4().hex
    data = bytes(range(256)) * (5 * MIB // 256) + b"!"
    assert put(agent, entity, "big.bin", b"", "?upload=start", stamp="timeStamp").status == 201
    assert put(agent, entity, "big.bin", data[: 5 * MIB], "?part=1").status == 201
    r = put(agent, entity, "big.bin", data[5 * MIB :], "?upload=complete")
    assert r.status == 201 and r.headers["etag"] == "0"
    f = [x for x in agent.http.request("GET", f"{FILES}/{entity}", token=sg.admin_token).json()][0]
    assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    # re-upload with the etag, parts in any order, empty complete
    assert put(agent, entity, "big.bin", b"", "?upload=start", if_match="0").status == 201
    assert put(agent, entity, "big.bin", b"tail", "?part=2", if_match="0").status == 201
    assert put(agent, entity, "big.bin", data[: 5 * MIB], "?part=1", if_match="0").status == 201
    r = put(agent, entity, "big.bin", b"", "?upload=complete", if_match="0")
    assert r.status == 201 and r.headers["etag"] == "1"
    got = agent.http.request("GET", f"{FILES}/{entity}/big.bin", token=sg.admin_token)
    assert got.body == data[: 5 * MIB] + b"tail"


def test_multipart_rules(sg: RunningSouthgate, agent: Agent) -> None:
    entity = uuid.uuid4().hex
    assert put(agent, entity, "m.bin", b"x", "?part=1").status == 400  # not started
    assert put(agent, entity, "m.bin", b"", "?upload=complete").status == 400
    assert put(agent, entity, "m.bin", b"", "?upload=abort").status == 404
    assert put(agent, entity, "m.bin", b"", "?upload=bogus").status == 400
    assert put(agent, entity, "m.bin", b"x", "?upload=start").status == 400  # start takes no body
    assert put(agent, entity, "m.bin", b"", "?upload=start").status == 201
    assert put(agent, entity, "m.bin", b"small", "?part=1").status == 201
    assert put(agent, entity, "m.bin", b"x", "?part=0").status == 400
    assert put(agent, entity, "m.bin", b"x", "?part=abc").status == 400
    assert put(agent, entity, "m.bin", b"", "?part=2").status == 400  # empty part
    assert put(agent, entity, "m.bin", b"x", "?part=3").status == 201
    r = put(agent, entity, "m.bin", b"", "?upload=complete")
    assert r.status == 400 and "contiguous" in r.json()["message"]
    assert put(agent, entity, "m.bin", b"y", "?part=2").status == 201
    r = put(agent, entity, "m.bin", b"", "?upload=complete")
    assert r.status == 400 and "5 MiB" in r.json()["message"]  # part 1 too small
    assert put(agent, entity, "m.bin", b"", "?upload=abort").status == 200
    assert put(agent, entity, "m.bin", b"x", "?part=1").status == 400
    assert sg.files(agent.id) == [] or all(f["path"] != "m.bin" for f in sg.files(agent.id))


# diagnostics ---------------------------------------------------------------------------------------------
def test_diagnostic_activation_and_messages(sg: RunningSouthgate) -> None:
    a = Agent(sg, tenant="diagtenant").ready()
    r = a.http.json("POST", MC + "/diagnosticActivations", {"agentId": a.id}, token=a.token)
    assert r.status == 201
    act = r.json()
    assert act["agentId"] == a.id and act["status"] == "ACTIVE"
    assert a.http.json("POST", MC + "/diagnosticActivations", {"agentId": a.id}, token=a.token).status == 409
    ct, body = strict_body([ts_item("CF-test", [(T0, [("DP-temp", "hot", "0"), ("DP-count", "1", "0")])])])
    assert (
        a.exchange(
            ct,
            body,
        ).status
        == 200
    )
    msgs = a.http.request("GET", f"{MC}/diagnosticActivations/{act['id']}/messages", token=a.token).json()
    content = msgs["content"]
    assert any(
        m["state"] == "DROPPED" and m["severity"] == "ERROR" and "'hot'" in m["message"] for m in content
    )
    assert all(
        set(m) == {"agentId", "correlationId", "severity", "message", "source", "state", "timestamp"}
        for m in content
    )
    info = a.http.request("GET", f"{MC}/diagnosticInformation?agentId={a.id}", token=a.token).json()
    assert info["totalElements"] >= 2
    listed = a.http.request("GET", MC + "/diagnosticActivations", token=a.token).json()["content"]
    assert [x["id"] for x in listed] == [act["id"]]
    r = a.http.json("PUT", f"{MC}/diagnosticActivations/{act['id']}", {"status": "INACTIVE"}, token=a.token)
    assert r.status == 200 and r.json()["status"] == "INACTIVE"
    assert (
        a.http.json("PUT", f"{MC}/diagnosticActivations/{act['id']}", {"status": "x"}, token=a.token).status
        == 400
    )
    other = Agent(sg, tenant="diagtenant").onboard().login()
    assert (
        other.http.request("GET", f"{MC}/diagnosticActivations/{act['id']}", token=other.token).status == 404
    )
    assert (
        other.http.request("GET", f"{MC}/diagnosticInformation?agentId={a.id}", token=other.token).status
        == 403
    )
    assert (
        other.http.json("POST", MC + "/diagnosticActivations", {"agentId": a.id}, token=other.token).status
        == 403
    )
    assert a.http.request("DELETE", f"{MC}/diagnosticActivations/{act['id']}", token=a.token).status == 204
    assert a.http.request("GET", f"{MC}/diagnosticActivations/{act['id']}", token=a.token).status == 404


def test_at_most_five_activations_per_tenant(sg: RunningSouthgate) -> None:
    agents = [Agent(sg, tenant="fivetenant").onboard().login() for _ in range(6)]
    for a in agents[:5]:
        assert (
            a.http.json("POST", MC + "/diagnosticActivations", {"agentId": a.id}, token=a.token).status == 201
        )
    last = agents[5]
    r = last.http.json("POST", MC + "/diagnosticActivations", {"agentId": last.id}, token=last.token)
    assert r.status == 400 and "at most 5" in r.json()["message"]


def test_agent_cannot_write_to_another_agents_asset(sg: RunningSouthgate, agent: Agent) -> None:
    other = Agent(sg).onboard().login()
    bound = next(x["entityId"] for x in sg.admin("GET", "/admin/agents") if x["id"] == agent.id)
    for entity in (agent.id, bound):
        assert put(other, entity, "x.txt", b"x").status == 403
        r = other.http.json("POST", EVENTS, {"entityId": entity, "timestamp": T0}, token=other.token)
        assert r.status == 403
    free = uuid.uuid4().hex
    assert put(other, free, "x.txt", b"x").status == 201
    assert put(other, other.id, "x.txt", b"x").status == 201


def test_a_multipart_upload_is_its_starters(sg: RunningSouthgate, agent: Agent) -> None:
    """Nobody else aborts or takes over an upload in progress; the asset is the starter's tenant's from the
    start, so an agent of another tenant does not even see it."""
    entity = uuid.uuid4().hex
    assert put(agent, entity, "m.bin", b"", "?upload=start").status == 201
    assert put(agent, entity, "m.bin", b"a" * (5 * MIB), "?part=1").status == 201
    neighbour = Agent(sg).onboard().login()  # same tenant
    assert put(neighbour, entity, "m.bin", b"", "?upload=abort").status == 403
    assert put(neighbour, entity, "m.bin", b"", "?upload=start").status == 409
    stranger = Agent(sg, tenant="othertenant").ready()
    for query in ("?upload=abort", "?upload=start"):
        r = put(stranger, entity, "m.bin", b"", query)
        assert r.status == 404 and "not found in tenant" in r.json()["message"], r.body
    r = put(agent, entity, "m.bin", b"!", "?upload=complete")
    assert r.status == 201
    got = agent.http.request("GET", f"{FILES}/{entity}/m.bin", token=sg.admin_token)
    assert got.body == b"a" * (5 * MIB) + b"!"
