"""Issue 12: modelled assets and mapping checks, app credentials and Token Manager, the IoT Time Series and
IoT TS Bulk read APIs as documented, import jobs, diagnostics activations, the LAN URL and certificate, and
the Python read client (insights_read) with `mcagent read` — against a real `southgate serve` without
--auto-assets."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from insights_read import AppCredentials, ReadClient, ReadError, run_sync
from sgclient import Agent, Client, strict_body, ts_item
from southgate.certs import server_cert_names
from southgate.testing import RunningSouthgate

SG = [sys.executable, "-m", "southgate"]
TS = "/api/iottimeseries/v3/timeseries"
ENV_VARS = [("env", "temperature", "DOUBLE", "C"), ("env", "count", "INT", "")]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SG + list(args), capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def msg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSouthgate]:
    """A southgate as the real service behaves: no assets created by mappings."""
    with RunningSouthgate(tmp_path_factory.mktemp("sg-model") / "data", auto_assets=False) as server:
        yield server


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def app_creds(sg: RunningSouthgate, tenant: str, tmp: Path, name: str | None = None) -> AppCredentials:
    out = tmp / f"app-{uuid.uuid4().hex[:6]}.json"
    cli(
        "app",
        "create",
        "--data",
        str(sg.data_dir),
        "--tenant",
        tenant,
        "--name",
        name or "reader",
        "--out",
        str(out),
    )
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert set(doc) == {"clientId", "clientSecret", "tenant", "appName", "appVersion"}
    return AppCredentials.load(out)


def app_token(http: Client, creds: AppCredentials, **override: str) -> Any:
    key = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
    body = {"appName": creds.app_name, "appVersion": creds.app_version, "hostTenant": creds.tenant}
    body["userTenant"] = creds.tenant
    body.update(override)
    return http.json(
        "POST",
        "/api/technicaltokenmanager/v3/oauth/token",
        body,
        headers={"X-SPACE-AUTH-KEY": "Basic " + key},
    )


def send(a: Agent, rows: list[tuple[str, list[tuple[str, str, str]]]]) -> None:
    ct, body = strict_body([ts_item("CF-test", rows)])
    assert a.exchange(ct, body).status == 200


def modelled_agent(sg: RunningSouthgate, tenant: str = "devtenant") -> Agent:
    asset = sg.create_asset("pump", ENV_VARS, tenant=tenant)["assetId"]
    a = Agent(sg, tenant=tenant).onboard().login()
    assert a.put_dsc().status == 200
    a.entity = asset
    assert a.map("DP-temp", asset, "env", "temperature").status == 201
    assert a.map("DP-count", asset, "env", "count").status == 201
    return a


# asset model ---------------------------------------------------------------------------------------------
def test_mapping_needs_a_modelled_asset_aspect_and_variable_of_the_right_type(msg: RunningSouthgate) -> None:
    a = Agent(msg).onboard().login()
    assert a.put_dsc().status == 200
    missing = a.map("DP-temp", uuid.uuid4().hex, "env", "temperature")
    assert missing.status == 404 and "not found" in missing.json()["message"]
    asset = msg.create_asset("pump", ENV_VARS)["assetId"]
    r = a.map("DP-temp", asset, "other", "temperature")
    assert r.status == 404 and "aspect" in r.json()["message"]
    r = a.map("DP-on", asset, "env", "on")
    assert r.status == 400 and "variable 'on' not found" in r.json()["message"]
    r = a.map("DP-count", asset, "env", "temperature")
    assert r.status == 400 and "type mismatch" in r.json()["message"]
    other = msg.create_asset("pump2", [("env", "temperature", "DOUBLE", "K")])["assetId"]
    r = a.map("DP-temp", other, "env", "temperature")
    assert r.status == 400 and "unit mismatch" in r.json()["message"]
    r = a.map("DP-temp", asset, "env", "temperature")
    assert r.status == 201 and r.json()["validity"]["status"] == "VALID"
    # An asset of another tenant is not there for this agent.
    foreign = msg.create_asset("far", ENV_VARS, tenant="elsewhere")["assetId"]
    assert a.map("DP-count", foreign, "env", "count").status == 404


def test_the_asset_list_is_paged(msg: RunningSouthgate) -> None:
    """?page=&size= as Asset Management pages it (10 by default): only a page's assets are read."""
    ids = {msg.create_asset(f"paged{i}", ENV_VARS, tenant="pagedt")["assetId"] for i in range(3)}
    first = msg.admin("GET", "/api/assetmanagement/v3/assets?size=2&page=0")
    total = first["page"]["totalElements"]
    assert len(first["_embedded"]["assets"]) == 2 and total >= 3
    assert first["page"]["totalPages"] == -(-total // 2)
    everything = msg.admin("GET", "/api/assetmanagement/v3/assets?size=2000")["_embedded"]["assets"]
    assert len(everything) == total and ids <= {a["assetId"] for a in everything}
    assert len(msg.admin("GET", "/api/assetmanagement/v3/assets")["_embedded"]["assets"]) == min(10, total)


def test_auto_assets_keeps_the_old_convenience(sg: RunningSouthgate) -> None:
    a = Agent(sg).ready(entity=uuid.uuid4().hex)  # the shared fixture serves with --auto-assets
    got = sg.admin("GET", f"/api/assetmanagement/v3/assets/{a.entity}/aspects")
    names = {v["name"]: v["dataType"] for v in got["_embedded"]["aspects"][0]["variables"]}
    assert names["temperature"] == "DOUBLE" and names["count"] == "INT"


def test_asset_cli_and_board_helper(msg: RunningSouthgate) -> None:
    data = str(msg.data_dir)
    r = cli(
        "asset",
        "create",
        "--data",
        data,
        "--tenant",
        "clitenant",
        "--name",
        "m1",
        "--variable",
        "Env.T:double:°C",
    )
    asset = r.stdout.strip()
    assert len(asset) == 32 and int(asset, 16) >= 0
    got = msg.admin("GET", f"/api/assetmanagement/v3/assets/{asset}")
    assert got["tenantId"] == "clitenant"
    assert got["aspects"] == [
        {"name": "Env", "variables": [{"name": "T", "dataType": "DOUBLE", "unit": "°C"}]}
    ]
    fixed = "ab" * 16
    assert (
        cli(
            "asset", "create", "--data", data, "--name", "m2", "--id", fixed, "--variable", "A.x:INT"
        ).stdout.strip()
        == fixed
    )
    bad = cli("asset", "create", "--data", data, "--name", "m3", "--variable", "A.x:FLOAT", check=False)
    assert bad.returncode == 2 and "type must be one of" in bad.stderr
    clash = cli(
        "asset",
        "create",
        "--data",
        data,
        "--tenant",
        "t2",
        "--name",
        "m",
        "--id",
        fixed,
        "--variable",
        "A.y:INT",
        check=False,
    )
    assert clash.returncode == 1 and "taken" in clash.stderr
    board = Path(__file__).resolve().parents[2] / "boards" / "unix" / "board.json"
    r = cli("asset", "create", "--data", data, "--tenant", "boardtenant", "--board", str(board))
    assert r.stdout.strip() == "5e1f0a3b7c2d4e6f8a9b0c1d2e3f4a5b"
    got = msg.admin("GET", "/api/assetmanagement/v3/assets/5e1f0a3b7c2d4e6f8a9b0c1d2e3f4a5b")
    variables = {v["name"]: (v["dataType"], v["unit"]) for v in got["aspects"][0]["variables"]}
    assert variables["AirTemperature"] == ("DOUBLE", "°C") and variables["PartsPerMinute"] == ("INT", "1/min")


# app credentials -----------------------------------------------------------------------------------------
def test_app_tokens_read_their_own_tenant_only(msg: RunningSouthgate, tmp_path: Path) -> None:
    http = Client(msg.base_url, msg.ca_pem)
    a = modelled_agent(msg, "appone")
    send(a, [("2024-05-01T10:00:00.000Z", [("DP-temp", "1.5", "0"), ("DP-count", "1", "0")])])
    creds = app_creds(msg, "appone", tmp_path)
    r = app_token(http, creds)
    assert r.status == 200 and r.json()["token_type"] == "Bearer"
    token = r.json()["access_token"]
    path = f"{TS}/{a.entity}/env?from=2024-05-01T00:00:00Z&to=2024-05-02T00:00:00Z"
    assert http.request("GET", path, token=token).json()[0]["temperature"] == 1.5
    # another tenant's app sees no such asset; an agent token is refused; an app token is no agent token
    other = app_token(http, app_creds(msg, "apptwo", tmp_path)).json()["access_token"]
    assert http.request("GET", path, token=other).status == 404
    assert http.request("GET", path, token=a.token).status == 403
    assert http.request("GET", "/api/mindconnect/v3/dataPointMappings", token=token).status == 401
    # wrong secret, app name, tenant; no or malformed key
    wrong = AppCredentials(creds.client_id, "x" * 43, creds.tenant, creds.app_name, creds.app_version)
    assert app_token(http, wrong).status == 401
    assert app_token(http, creds, appName="other").status == 403
    assert app_token(http, creds, userTenant="apptwo").status == 403
    assert http.json("POST", "/api/technicaltokenmanager/v3/oauth/token", {}).status == 401
    bad = http.json(
        "POST", "/api/technicaltokenmanager/v3/oauth/token", {}, headers={"X-SPACE-AUTH-KEY": "Basic %%%"}
    )
    assert bad.status == 401
    keys = http.request("GET", "/token_keys").json()["keys"]
    assert keys[0]["value"].startswith("-----BEGIN PUBLIC KEY-----")
    assert creds.client_secret not in (msg.data_dir / "southgate.log").read_text()


# IoT Time Series v3 ---------------------------------------------------------------------------------------
def test_timeseries_paging_latest_value_and_python_client(msg: RunningSouthgate, tmp_path: Path) -> None:
    a = modelled_agent(msg, "tsread")
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    rows = [
        (iso(base + timedelta(seconds=s)), [("DP-temp", f"{s}.5", "0"), ("DP-count", str(s), "0")])
        for s in range(25)
    ]
    send(a, rows)
    creds = app_creds(msg, "tsread", tmp_path)

    async def read() -> dict[str, Any]:
        async with ReadClient(msg.base_url, credentials=creds, ca_file=msg.ca_pem) as c:
            pages = [
                p
                async for p in c.timeseries_pages(
                    a.entity, "env", base - timedelta(seconds=1), base + timedelta(hours=1), limit=7
                )
            ]
            desc = await c.timeseries(
                a.entity, "env", base, base + timedelta(hours=1), limit=10, sort="desc", select=["count"]
            )
            return {
                "pages": pages,
                "desc": desc,
                "latest": await c.latest(a.entity, "env"),
                "latest_value": await c.latest(a.entity, "env", latest_value=True),
                "bulk": await c.bulk_timeseries(
                    a.entity, "env", base - timedelta(seconds=1), base + timedelta(hours=1)
                ),
            }

    msg.settings(bulk_page_records=10)
    try:
        got = run_sync(read())
    finally:
        msg.settings(bulk_page_records=5000)
    assert [len(p) for p in got["pages"]] == [7, 7, 7, 4]
    assert [r["count"] for p in got["pages"] for r in p] == list(range(25))
    assert [r["count"] for r in got["desc"]] == list(range(24, 0, -1)) and "temperature" not in got["desc"][0]
    assert got["latest"][0]["count"] == 24 and len(got["latest"]) == 1
    assert got["latest_value"] == [
        {"_time": rows[24][0], "count": 24, "count_qc": 0, "temperature": 24.5, "temperature_qc": 0}
    ]
    assert [r["count"] for r in got["bulk"]] == list(range(25))

    async def refused() -> int:
        async with ReadClient(msg.base_url, token=a.token, ca_file=msg.ca_pem) as c:
            try:
                await c.latest(a.entity, "env")
            except ReadError as exc:
                return exc.status
        return 200

    assert run_sync(refused()) == 403
    # mcagent read, as a user runs it
    app_json = tmp_path / "reader.json"
    app_json.write_text(
        json.dumps(
            {
                "clientId": creds.client_id,
                "clientSecret": creds.client_secret,
                "tenant": creds.tenant,
                "appName": creds.app_name,
                "appVersion": creds.app_version,
            }
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcagent_tools.cli",
            "read",
            "--southgate",
            str(msg.data_dir),
            "--app",
            str(app_json),
            "--asset",
            a.entity,
            "--aspect",
            "env",
            "--from",
            iso(base - timedelta(seconds=1)),
            "--to",
            iso(base + timedelta(hours=1)),
            "--format",
            "csv",
            "--limit",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "_time,count,count_qc,temperature,temperature_qc" and len(out) == 26
    assert out[1] == f"{rows[0][0]},0,0,0.5,0"
    table = cli(
        "timeseries", "--data", str(msg.data_dir), "--asset", a.entity, "--aspect", "env", "--format", "json"
    )
    assert len(json.loads(table.stdout)) == 25


# IoT TS Bulk import jobs ------------------------------------------------------------------------------
def test_import_jobs_validated_and_imported(msg: RunningSouthgate, tmp_path: Path) -> None:
    asset = msg.create_asset("bulk", ENV_VARS, tenant="bulkt")["assetId"]
    creds = app_creds(msg, "bulkt", tmp_path)
    day = (datetime.now(timezone.utc) - timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
    recs = [{"_time": iso(day + timedelta(minutes=m)), "temperature": m + 0.25, "count": m} for m in range(5)]

    def files(path: str, rs: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"filePath": path, "from": rs[0]["_time"], "to": rs[-1]["_time"]}]

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with ReadClient(msg.base_url, credentials=creds, ca_file=msg.ca_pem) as c:
            await c.put_file(asset, "in/good.json", json.dumps(recs).encode())
            await c.put_file(asset, "in/a#b?c.json", b"[]")  # a path's '#' and '?' stay in the file's name
            listing, _ = await c._request("GET", f"/api/iotfile/v3/files/{asset}")
            out["names"] = sorted(f["path"] for f in listing)
            job = await c.create_import_job(asset, "env", files("in/good.json", recs))
            out["submitted"] = job["status"]
            out["good"] = await c.wait_import_job(job["id"], 30, 0.1)
            out["read"] = await c.bulk_timeseries(
                asset, "env", day - timedelta(hours=1), day + timedelta(hours=1)
            )
            young = [{"_time": iso(datetime.now(timezone.utc) - timedelta(minutes=5)), "count": 1}]
            await c.put_file(asset, "in/young.json", json.dumps(young).encode())
            out["young"] = await c.wait_import_job(
                (await c.create_import_job(asset, "env", files("in/young.json", young)))["id"], 30, 0.1
            )
            two_days = [recs[0], {"_time": iso(day + timedelta(days=1)), "count": 9}]
            await c.put_file(asset, "in/two.json", json.dumps(two_days).encode())
            mixed = (
                files("in/good.json", recs) + files("in/two.json", two_days) + files("in/missing.json", recs)
            )
            out["mixed"] = await c.wait_import_job(
                (await c.create_import_job(asset, "env", mixed))["id"], 30, 0.1
            )
            unknown = [{"_time": recs[0]["_time"], "pressure": 1.0}]
            await c.put_file(asset, "in/unknown.json", json.dumps(unknown).encode())
            out["unknown"] = await c.wait_import_job(
                (await c.create_import_job(asset, "env", files("in/unknown.json", unknown)))["id"], 30, 0.1
            )
            for name, body in {
                "too_many": {
                    "data": [
                        {"entity": asset, "propertySetName": "env", "timeseriesFiles": files("a", recs) * 101}
                    ]
                },
                "two_targets": {
                    "data": [{"entity": asset, "propertySetName": "env", "timeseriesFiles": files("a", recs)}]
                    * 2
                },
                "no_aspect": {
                    "data": [
                        {"entity": asset, "propertySetName": "nope", "timeseriesFiles": files("a", recs)}
                    ]
                },
                "same_file_twice": {
                    "data": [
                        {"entity": asset, "propertySetName": "env", "timeseriesFiles": files("a", recs) * 2}
                    ]
                },
            }.items():
                try:
                    await c._request("POST", "/api/iottsbulk/v3/importJobs", body=body)
                    out[name] = 201
                except ReadError as exc:
                    out[name] = exc.status
        return out

    got = run_sync(scenario())
    assert got["names"] == ["in/a#b?c.json", "in/good.json"], got["names"]
    assert got["submitted"] == "SUBMITTED"
    assert got["good"]["status"] == "SUCCESS", got["good"]
    assert got["read"] == [dict(r, temperature_qc=0, count_qc=0) for r in recs]
    assert got["young"]["status"] == "ERROR" and "30 minutes" in got["young"]["message"]
    assert got["mixed"]["status"] == "ERROR" and "one (UTC) day" in got["mixed"]["message"]
    assert "missing.json" in got["mixed"]["message"]
    assert got["unknown"]["status"] == "ERROR" and "'pressure'" in got["unknown"]["message"]
    assert (got["too_many"], got["two_targets"], got["no_aspect"]) == (400, 400, 404)
    assert got["same_file_twice"] == 400
    # the jobs that failed imported nothing: still the five records of the good one
    lo, hi = iso(day - timedelta(days=1)), iso(day + timedelta(days=1, hours=1))
    stored = msg.admin("GET", f"/api/iottsbulk/v3/timeseries/{asset}/env?from={lo}&to={hi}")
    assert len(stored["records"]) == 5


# diagnostics ----------------------------------------------------------------------------------------------
def test_activation_switches_itself_off_after_an_hour(msg: RunningSouthgate) -> None:
    mc = "/api/mindconnect/v3"
    a = modelled_agent(msg, "diagt")
    info = a.http.request("GET", f"{mc}/diagnosticInformation", token=a.token).json()
    send(a, [("2024-05-01T10:00:00.000Z", [("DP-temp", "hot", "0")])])
    assert a.http.request("GET", f"{mc}/diagnosticInformation", token=a.token).json()["totalElements"] == 0
    act = a.http.json("POST", mc + "/diagnosticActivations", {"agentId": a.id}, token=a.token).json()
    send(a, [("2024-05-01T10:00:00.000Z", [("DP-temp", "hot", "0")])])
    info = a.http.request("GET", f"{mc}/diagnosticInformation", token=a.token).json()
    assert info["totalElements"] >= 1
    before = msg.settings()
    try:
        msg.settings(clock_offset_s=3700)
        a.login()
        got = a.http.request("GET", f"{mc}/diagnosticActivations/{act['id']}", token=a.token).json()
        assert got["status"] == "INACTIVE"
        # five active activations per tenant at most
        others = [Agent(msg, tenant="diagt").onboard().login() for _ in range(6)]
        codes = [
            o.http.json("POST", mc + "/diagnosticActivations", {"agentId": o.id}, token=o.token).status
            for o in others
        ]
        assert codes == [201] * 5 + [400]
    finally:
        msg.settings(clock_offset_s=before["clock_offset_s"])


# a board on the LAN ---------------------------------------------------------------------------------------
def test_serve_on_all_interfaces_names_a_reachable_address(tmp_path: Path) -> None:
    data = tmp_path / "lan"
    proc = subprocess.Popen(
        SG
        + [
            "serve",
            "--data",
            str(data),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--cert-name",
            "10.9.8.7",
            "--cert-name",
            "gw.lan",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("southgate: serving https://10.9.8.7:"), first
        names = server_cert_names(data / "server.pem")
        assert {"10.9.8.7", "gw.lan", "localhost", "127.0.0.1"} <= names
        config = json.loads(cli("agent", "create", "--data", str(data), "--name", "board-1").stdout)
        assert config["content"]["baseUrl"] == first.split()[-1]
    finally:
        proc.terminate()
        proc.wait(15)


def test_old_data_dirs_gain_tenants_of_assets(tmp_path: Path) -> None:
    from southgate.service import Service

    data = tmp_path / "old"
    svc = Service(data)
    agent = svc.create_agent("legacy", "oldtenant")
    svc.storage.ensure_asset("cd" * 16, 0, "loose")
    db = svc.storage.db
    db.execute("ALTER TABLE assets DROP COLUMN tenant")  # as made by a southgate before issue 12
    db.execute("ALTER TABLE activations DROP COLUMN active_since_ms")
    db.execute(
        "INSERT INTO activations (id, agent_id, tenant, status, created_ms)"
        " VALUES ('x', ?, 'oldtenant', 'ACTIVE', 5)",
        (agent["id"],),
    )
    svc.close()
    svc = Service(data)
    assert svc.storage.asset(agent["entity_id"])["tenant"] == "oldtenant"  # type: ignore[index]
    assert svc.storage.asset("cd" * 16)["tenant"] == "devtenant"  # type: ignore[index]
    assert svc.storage.activation("x")["active_since_ms"] == 5  # type: ignore[index]
    svc.close()


def test_agents_write_only_onto_assets_of_their_tenant(msg: RunningSouthgate) -> None:
    # An asset modelled in tenant A has no agent bound to it yet: an agent of tenant B still cannot put a
    # file or an event onto it (404: it is not told the asset exists), an agent of tenant A can.
    asset = msg.create_asset("shared-looking", ENV_VARS, tenant="tenanta")["assetId"]
    intruder = Agent(msg, tenant="tenantb").onboard().login()
    r = intruder.http.request("PUT", f"/api/iotfile/v3/files/{asset}/evil.json", b"{}", token=intruder.token)
    assert r.status == 404, r.data
    event = {
        "entityId": asset,
        "sourceType": "Agent",
        "sourceId": "x",
        "source": "x",
        "severity": 20,
        "description": "x",
        "timestamp": iso(datetime.now(timezone.utc)),
    }
    r = intruder.http.json("POST", "/api/eventmanagement/v3/events", event, token=intruder.token)
    assert r.status == 404, r.data
    owner = Agent(msg, tenant="tenanta").onboard().login()
    r = owner.http.request("PUT", f"/api/iotfile/v3/files/{asset}/ok.json", b"{}", token=owner.token)
    assert r.status == 201, r.data


def test_an_app_cannot_choose_an_asset_id(msg: RunningSouthgate, tmp_path: Path) -> None:
    """As on Insights Hub the service chooses an asset's id: a chosen one that another tenant holds would be
    answered 409 and so reveal that asset; the admin token may choose one (a board's dsc.entityId)."""
    taken = msg.create_asset("theirs", ENV_VARS, tenant="tenantc")["assetId"]
    http = Client(msg.base_url, msg.ca_pem)
    token = app_token(http, app_creds(msg, "tenantd", tmp_path)).json()["access_token"]
    body = {"name": "mine", "aspects": []}
    for chosen in (taken, uuid.uuid4().hex):
        r = http.json("POST", "/api/assetmanagement/v3/assets", dict(body, assetId=chosen), token=token)
        assert r.status == 400 and "assetId is chosen by the service" in r.body.decode(), r.body
    r = http.json("POST", "/api/assetmanagement/v3/assets", body, token=token)
    assert r.status == 201 and r.json()["assetId"] != taken and r.json()["tenantId"] == "tenantd"


def test_timestamps_outside_years_1_to_9999_are_refused(msg: RunningSouthgate) -> None:
    # A zone offset can push a well-formed date past year 1: refused with a 400, never stored (a stored one
    # would break every listing that shows it).
    a = Agent(msg).onboard().login()
    entity = a.config_entity()
    r = a.http.request(
        "PUT",
        f"/api/iotfile/v3/files/{entity}/early.txt",
        b"x",
        headers={"timestamp": "0001-01-01T00:00:00+01:00"},
        token=a.token,
    )
    assert r.status == 400, r.data
    event = {
        "entityId": entity,
        "sourceType": "Agent",
        "sourceId": "x",
        "source": "x",
        "severity": 20,
        "description": "x",
        "timestamp": "0001-01-01T00:00:00+00:01",
    }
    assert a.http.json("POST", "/api/eventmanagement/v3/events", event, token=a.token).status == 400
    assert msg.admin("GET", f"/admin/agents/{a.id}/files") is not None


def test_one_answer_holds_a_bounded_number_of_values() -> None:
    """records x properties stays under routes_read.MAX_VALUES (100,000): an aspect of 1,000 variables gets
    100 records an answer (the rest by the Link or nextRecord), a select of two the full 2,000."""
    from types import SimpleNamespace

    from southgate import routes_read

    svc = SimpleNamespace(storage=SimpleNamespace(prop_count=lambda entity, pset: 1000))
    assert routes_read.MAX_VALUES == 100_000
    assert routes_read._records_cap(svc, "e" * 32, "env", None) == 100
    assert routes_read._records_cap(svc, "e" * 32, "env", ["a", "b"]) == 50_000


def test_an_import_job_holds_a_bounded_number_of_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its values wait in memory for one transaction: past MAX_JOB_VALUES the job fails with a reason
    (split it), before it takes the server's memory."""
    from southgate import importjobs

    monkeypatch.setattr(importjobs, "MAX_JOB_VALUES", 5)
    start = datetime(2023, 11, 14, tzinfo=timezone.utc)
    day = int(start.timestamp() * 1000)
    recs = [{"_time": iso(start + timedelta(seconds=i)), "temperature": 1.5} for i in range(10)]
    blob = tmp_path / "blob"
    blob.write_text(json.dumps(recs))
    spec = importjobs.FileSpec("in/a.json", day, day + 9000)
    variables = {"temperature": "DOUBLE"}
    rows, reasons = importjobs._validate("e" * 32, "env", [(spec, str(blob))], variables, 2**62)
    assert reasons and "more than 5 values: split it" in reasons[0], reasons
