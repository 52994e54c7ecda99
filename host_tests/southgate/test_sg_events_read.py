"""Event Management's read side: the events agents sent (exchange or POST), as an application reads them."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from insights_read import ReadClient, run_sync
from sgclient import Agent, Client, Item, strict_body
from southgate.testing import RunningSouthgate
from test_sg_assets_read import app_creds, app_token

EVENTS = "/api/eventmanagement/v3/events"


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


NOW = datetime.now(timezone.utc)


def exchange_events(a: Agent, events: list[dict[str, Any]]) -> None:
    item = Item("businessEvent", "1.0", json.dumps(events).encode())
    ct, body = strict_body([item])
    assert a.exchange(ct, body).status == 200


def health(n: int, minutes_ago: int, severity: int = 3, corr: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "timestamp": iso(NOW - timedelta(minutes=minutes_ago)),
        "severity": severity,
        "description": f"health {n}",
        "type": "MindSphereStandardEvent",
        "version": "1.0",
        "details": {"boots": n},
    }
    if corr:
        ev["correlationId"] = corr
    return ev


def get(http: Client, token: str, **params: str) -> Any:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return http.request("GET", f"{EVENTS}?{query}", token=token)


def test_an_app_reads_its_tenants_events_paged_filtered_and_newest_first(
    sg: RunningSouthgate, tmp_path: Path
) -> None:
    http = Client(sg.base_url, sg.ca_pem)
    a = Agent(sg, tenant="evone").onboard().login()
    other = Agent(sg, tenant="evtwo").onboard().login()
    exchange_events(a, [health(i, 50 - i) for i in range(25)])  # health 24 is the newest
    exchange_events(a, [health(100, 60 * 24 * 10)])  # ten days old: outside the default week
    exchange_events(other, [health(7, 5)])
    entity = sg.events(a.id)[0]["entityId"]  # the agent's own asset
    posted = {"entityId": entity, "severity": 20, "timestamp": iso(NOW - timedelta(minutes=1))}
    assert a.http.json("POST", EVENTS, dict(posted, description="pump stopped"), token=a.token).status == 201
    token = app_token(http, app_creds(sg, "evone", tmp_path)).json()["access_token"]

    r = get(http, token)
    assert r.status == 200, r.body
    body = r.json()
    assert body["page"] == {"size": 20, "totalElements": 26, "totalPages": 2, "number": 0}
    events = body["_embedded"]["events"]
    assert [e["description"] for e in events[:3]] == ["pump stopped", "health 24", "health 23"]
    first = events[1]
    assert first["entityId"] == entity and first["severity"] == 3 and first["details"] == {"boots": 24}
    assert first["typeId"].endswith("MindSphereStandardEvent") and first["acknowledged"] is False
    assert first["_links"]["self"]["href"].endswith(f"{EVENTS}/{first['id']}")
    assert "page=1" in body["_links"]["next"]["href"] and "prev" not in body["_links"]
    # the next page, oldest first, one event by id; another tenant's event is not there for this app
    r = get(http, token, page="1", size="20")
    later = r.json()["_embedded"]["events"]
    assert [e["description"] for e in later] == [f"health {n}" for n in (5, 4, 3, 2, 1, 0)]
    assert "next" not in r.json()["_links"] and "page=0" in r.json()["_links"]["prev"]["href"]
    asc = get(http, token, sort="timestamp,asc", size="2").json()["_embedded"]["events"]
    assert [e["description"] for e in asc] == ["health 0", "health 1"]
    one = http.request("GET", f"{EVENTS}/{first['id']}", token=token)
    assert one.status == 200 and one.json()["description"] == "health 24"
    theirs = get(http, token, filter=json.dumps({"entityId": sg.events(other.id)[0]["entityId"]})).json()
    assert "_embedded" not in theirs and theirs["page"]["totalElements"] == 0
    other_id = sg.events(other.id)[0]["id"]
    assert http.request("GET", f"{EVENTS}/{other_id}", token=token).status == 404

    # filters: time (the old event), severity, entity; the admin token reads every tenant
    week_ago = iso(NOW - timedelta(days=11))
    old = get(http, token, filter=json.dumps({"timestamp": {"between": f"[{week_ago},{iso(NOW)}]"}})).json()
    assert old["page"]["totalElements"] == 27
    before = get(
        http, token, filter=json.dumps({"timestamp": {"before": iso(NOW - timedelta(days=1))}})
    ).json()
    assert [e["description"] for e in before["_embedded"]["events"]] == ["health 100"]
    warn = get(http, token, filter=json.dumps({"severity": {"eq": 20}})).json()
    assert [e["description"] for e in warn["_embedded"]["events"]] == ["pump stopped"]
    assert get(http, sg.admin_token, size="100").json()["page"]["totalElements"] >= 27
    assert get(http, a.token).status == 403  # agent tokens are for the agent APIs


def test_history_keeps_only_the_latest_of_a_correlation_unless_asked(
    sg: RunningSouthgate, tmp_path: Path
) -> None:
    http = Client(sg.base_url, sg.ca_pem)
    a = Agent(sg, tenant="evhist").onboard().login()
    exchange_events(a, [health(1, 30, corr="ticket-1"), health(2, 20, corr="ticket-1"), health(3, 10)])
    token = app_token(http, app_creds(sg, "evhist", tmp_path)).json()["access_token"]
    latest = get(http, token).json()["_embedded"]["events"]
    assert [e["description"] for e in latest] == ["health 3", "health 2"]
    everything = get(http, token, history="true").json()["_embedded"]["events"]
    assert [e["description"] for e in everything] == ["health 3", "health 2", "health 1"]
    corr = get(http, token, history="true", filter=json.dumps({"correlationId": "ticket-1"})).json()
    assert corr["page"]["totalElements"] == 2


def test_bad_queries_get_a_400_that_names_them(sg: RunningSouthgate, tmp_path: Path) -> None:
    http = Client(sg.base_url, sg.ca_pem)
    Agent(sg, tenant="evbad").onboard()
    token = app_token(http, app_creds(sg, "evbad", tmp_path)).json()["access_token"]
    cases = [
        ({"filter": "{not json"}, "filter must be a JSON object"),
        ({"filter": "[1]"}, "filter must be a JSON object"),
        ({"filter": json.dumps({"colour": "red"})}, "filter field 'colour' is not supported"),
        ({"filter": json.dumps({"typeId": {"like": "x"}})}, "only equality is supported"),
        ({"filter": json.dumps({"severity": "high"})}, "filter severity must be an integer"),
        ({"filter": json.dumps({"entityId": ""})}, "filter entityId must be a string"),
        ({"filter": json.dumps({"severity": 2**80})}, "filter severity must be an integer (32 bits)"),
        ({"filter": '{"correlationId": "\\udc00"}'}, "filter correlationId must be a string"),
        ({"filter": json.dumps({"timestamp": {"between": "2020"}})}, "timestamp.between must read"),
        ({"filter": json.dumps({"timestamp": {"after": "yesterday"}})}, "filter timestamp.after"),
        ({"filter": json.dumps({"timestamp": {"around": "x"}})}, "filter timestamp must be"),
        ({"filter": "x" * 5000}, "filter must be at most 4096 characters"),
        ({"size": "101"}, "'size' must be between 1 and 100"),
        ({"size": "0"}, "'size' must be between 1 and 100"),
        ({"page": "-1"}, "'page' must be between 0"),
        ({"page": "99999999"}, "'page' must be between 0"),
        ({"sort": "severity,desc"}, "sort must be"),
        ({"history": "yes"}, "'history' must be true or false"),
    ]
    for params, reason in cases:
        r = get(http, token, **params)
        assert r.status == 400 and reason in r.body.decode(), (params, r.status, r.body[:300])
    assert http.request("GET", f"{EVENTS}/{'x' * 300}", token=token).status == 404


def test_the_read_client_and_mcagent_read_follow_the_pages(sg: RunningSouthgate, tmp_path: Path) -> None:
    a = Agent(sg, tenant="evcli").onboard().login()
    exchange_events(a, [health(i, 30 - i) for i in range(5)] + [health(9, 60 * 24 * 3)])
    entity = sg.events(a.id)[0]["entityId"]

    async def read() -> tuple[list[str], list[str], str]:
        async with ReadClient(sg.base_url, token=sg.admin_token, ca_file=sg.ca_pem) as c:
            paged = await c.events(entity=entity, size=2, newest_first=False)  # three pages
            recent = await c.events(entity=entity, from_=NOW - timedelta(days=1), to=NOW, size=100)
            one = await c.event(paged[0]["id"])
        return [e["description"] for e in paged], [e["description"] for e in recent], one["description"]

    paged, recent, one = run_sync(read())
    assert paged == ["health 9"] + [f"health {i}" for i in range(5)] and one == "health 9"
    assert recent == [f"health {i}" for i in range(4, -1, -1)]  # newest first
    cli = [sys.executable, "-m", "mcagent_tools.cli", "read", "--southgate", str(sg.data_dir), "--events"]
    out = subprocess.run(
        cli + ["--asset", entity, "--format", "csv", "--limit", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "timestamp,severity,entityId,description,details" and len(lines) == 7, out.stdout
    assert lines[1].endswith(f'{entity},health 9,"{{""boots"":9}}"'), lines[1]
    table = subprocess.run(cli + ["--asset", "0" * 32], capture_output=True, text=True, check=False)
    assert table.returncode == 0 and "(no events)" in table.stdout, table.stdout
    bad = subprocess.run(cli[:-1] + ["--asset", entity], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "needs --aspect, --from, --to (or read --events)" in bad.stderr
    yesterday = (NOW - timedelta(days=1)).strftime("%Y-%m-%d")  # a date is its midnight, UTC
    dated = subprocess.run(cli + ["--asset", entity, "--from", yesterday], capture_output=True, text=True)
    assert dated.returncode == 0 and "health 4" in dated.stdout and "health 9" not in dated.stdout, dated
    for args, why in (
        (["--from", "yesterday"], "--from 'yesterday': not an ISO 8601 time with a zone"),
        (["--to", "2026-12-01T00:00:00"], "--to '2026-12-01T00:00:00': not an ISO 8601 time with a zone"),
        (["--from", "2026-12-02", "--to", "2026-12-01T00:00:00Z"], "--from must be before --to"),
    ):
        refused = subprocess.run(cli + args, capture_output=True, text=True)
        assert refused.returncode == 2 and why in refused.stderr, (args, refused.stderr)


def test_superseded_events_stay_hidden_under_any_filter_and_bounds_count_past_the_millisecond(
    sg: RunningSouthgate, tmp_path: Path
) -> None:
    http = Client(sg.base_url, sg.ca_pem)
    a = Agent(sg, tenant="evedge").onboard().login()
    at = (NOW - timedelta(minutes=10)).replace(microsecond=0)
    odd = [
        dict(health(1, 30, severity=1, corr="ticket"), description="opened"),
        dict(health(2, 20, severity=3, corr="ticket"), description="closed"),
        dict(health(3, 0), id="a/b#c?d é", timestamp=iso(at), description="odd id"),
        dict(health(4, 5), typeId="", description="empty type"),
    ]
    exchange_events(a, odd)
    token = app_token(http, app_creds(sg, "evedge", tmp_path)).json()["access_token"]

    def names(**params: str) -> list[str]:
        body = get(http, token, **params).json()
        return [e["description"] for e in body.get("_embedded", {}).get("events", [])]

    # the ticket was closed: its opening is not listed without history, even when the filter would match it
    assert names(filter=json.dumps({"severity": 1})) == []
    assert names(filter=json.dumps({"severity": 1}), history="true") == ["opened"]
    before = iso(NOW - timedelta(minutes=25))
    assert names(filter=json.dumps({"timestamp": {"before": before}, "correlationId": "ticket"})) == []
    # bounds past the millisecond: the event at `at` is before at + 0.5 ms, not at or after it
    half = at.strftime("%Y-%m-%dT%H:%M:%S.0005Z")
    assert names(filter=json.dumps({"timestamp": {"before": half}, "severity": 3})) == ["odd id", "closed"]
    assert "odd id" not in names(filter=json.dumps({"timestamp": {"between": f"[{half},{iso(NOW)}]"}}))
    assert names(filter=json.dumps({"timestamp": {"between": f"[{iso(at)},{half})"}})) == ["odd id"]
    assert names(filter=json.dumps({"timestamp": {"eq": half}})) == []
    # an id that is no URL segment is escaped in its link; an empty type is the standard type, everywhere
    odd_event = next(
        e for e in get(http, token).json()["_embedded"]["events"] if e["description"] == "odd id"
    )
    link = odd_event["_links"]["self"]["href"]
    followed = http.request("GET", link[link.index(EVENTS) :], token=token)
    assert followed.status == 200 and followed.json()["id"] == "a/b#c?d é", followed.body[:200]
    standard = json.dumps({"typeId": odd_event["typeId"]})
    assert "empty type" in names(filter=standard) and len(names(filter=standard)) == 3
