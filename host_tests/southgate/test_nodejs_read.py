"""Issue 12 acceptance: the official Node.js SDK's application clients against `southgate serve` (no
--auto-assets): TokenManagerAuth with credentials from `southgate app create`; TimeSeriesClient.GetTimeSeries
(range with `from` exclusive and `to` inclusive, the latest record, latestValue, select);
GetTimeSeriesBulkStyle with `limit` followed page by page over the Link header to every record;
TimeSeriesBulkClient.GetTimeSeries; an import job from a file put with IotFileClient.PutFile polled to
SUCCESS and its records then readable; an agent token refused on the read APIs.

Uses the library test_nodejs.py installs (same pinned version, same cache); skips without node/npm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sgclient import Agent, Client, Item, strict_body, ts_item
from southgate.testing import RunningSouthgate
from test_nodejs import NODE_DIR, install_library

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the official MindConnect Node.js library (not installed here)",
)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@pytest.fixture(scope="module")
def read_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    lib_dir, _ = install_library()
    tmp = tmp_path_factory.mktemp("node-read")
    with RunningSouthgate(tmp / "sg", auto_assets=False) as sg:
        variables = [("env", "temperature", "DOUBLE", "°C"), ("env", "count", "INT", "")]
        asset = sg.create_asset("reader-pump", variables)["assetId"]
        a = Agent(sg).onboard().login()
        dsc = {
            "configurationId": "CF-test",
            "dataSources": [
                {
                    "name": "DS",
                    "dataPoints": [
                        {"id": "DP-temp", "name": "temperature", "type": "DOUBLE", "unit": "°C"},
                        {"id": "DP-count", "name": "count", "type": "INT", "unit": ""},
                    ],
                }
            ],
        }
        assert a.put_dsc(dsc).status == 200
        assert a.map("DP-temp", asset, "env", "temperature").status == 201
        assert a.map("DP-count", asset, "env", "count").status == 201
        base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
        times = [iso(base + timedelta(seconds=s)) for s in range(5)]
        rows = [(t, [("DP-temp", f"{i}.5", "0"), ("DP-count", str(i), "0")]) for i, t in enumerate(times)]
        ct, body = strict_body([ts_item("CF-test", rows)])
        assert a.exchange(ct, body).status == 200
        events = [
            {
                "id": str(uuid.uuid4()),
                "timestamp": times[i],
                "severity": 3 - i,
                "description": f"health {i}",
                "type": "MindSphereStandardEvent",
                "version": "1.0",
                "details": {"boots": i},
            }
            for i in range(2)
        ]
        ct, body = strict_body([Item("businessEvent", "1.0", json.dumps(events).encode())])
        assert a.exchange(ct, body).status == 200
        app_json = tmp / "app.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "southgate",
                "app",
                "create",
                "--data",
                str(sg.data_dir),
                "--name",
                "reader",
            ]
            + ["--out", str(app_json)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        day = (base - timedelta(days=1)).replace(hour=6, minute=0, second=0)
        import_day = [
            {"_time": iso(day + timedelta(minutes=m)), "temperature": 10.0 + m, "count": 100 + m}
            for m in range(3)
        ]
        params = {
            "libDir": str(lib_dir),
            "baseUrl": sg.base_url,
            "app": json.loads(app_json.read_text()),
            "assetId": asset,
            "aspect": "env",
            "times": times,
            "importDay": import_day,
            "eventEntity": sg.events(a.id)[0]["entityId"],
            "out": str(tmp / "result.json"),
        }
        (tmp / "params.json").write_text(json.dumps(params))
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
        env["NODE_EXTRA_CA_CERTS"] = sg.ca_pem
        proc = subprocess.run(
            ["node", str(NODE_DIR / "read_flow.js"), str(tmp / "params.json")],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        try:
            result = json.loads((tmp / "result.json").read_text())
        except (OSError, ValueError):
            pytest.fail(f"read_flow.js wrote no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        http = Client(sg.base_url, sg.ca_pem)
        agent_read = http.request(
            "GET", f"/api/iottimeseries/v3/timeseries/{asset}/env", token=a.token
        ).status
        yield {
            "result": result,
            "times": times,
            "import_day": import_day,
            "agent_read": agent_read,
            "log": sg.log_tail(),
        }


def step(run: dict[str, Any], name: str) -> Any:
    st = run["result"]["steps"].get(name)
    assert st is not None, f"step {name} did not run: {run['result'].get('fatal')}"
    assert st["ok"], f"{name}: {st.get('error')}\nsouthgate log:\n{run['log']}"
    return st.get("detail")


def test_token_manager_auth_with_app_credentials(read_run: dict[str, Any]) -> None:
    assert step(read_run, "Token") is True


def test_get_timeseries_bounds_latest_and_select(read_run: dict[str, Any]) -> None:
    times = read_run["times"]
    assert step(read_run, "GetTimeSeriesRange") == times[1:]  # from exclusive, to inclusive
    latest = step(read_run, "GetTimeSeriesLatest")
    assert len(latest) == 1 and latest[0]["_time"] == times[-1] and latest[0]["count"] == 4
    assert step(read_run, "GetTimeSeriesLatestValue") == [
        {"_time": times[-1], "count": 4, "count_qc": 0, "temperature": 4.5, "temperature_qc": 0}
    ]
    selected = step(read_run, "GetTimeSeriesSelect")
    assert [r["count"] for r in selected] == [0, 1, 2, 3, 4] and all("temperature" not in r for r in selected)


def test_bulk_style_follows_the_link_header_to_every_record(read_run: dict[str, Any]) -> None:
    assert step(read_run, "GetTimeSeriesBulkStyle") == [[0, 1], [2, 3], [4]]


def test_time_series_bulk_client_reads(read_run: dict[str, Any]) -> None:
    assert step(read_run, "TimeSeriesBulkGetTimeSeries") == [0, 1, 2, 3, 4]


def test_import_job_from_iot_file_succeeds_and_is_readable(read_run: dict[str, Any]) -> None:
    step(read_run, "PutFile")
    job = step(read_run, "ImportJob")
    assert job["submitted"] == "SUBMITTED" and job["status"] == "SUCCESS", job
    records = step(read_run, "ImportedReadable")
    assert [(r["_time"], r["temperature"], r["count"]) for r in records] == [
        (r["_time"], r["temperature"], r["count"]) for r in read_run["import_day"]
    ]


def test_agent_token_refused_on_read_apis(read_run: dict[str, Any]) -> None:
    assert read_run["agent_read"] == 403


def test_event_management_client_reads_the_agents_events(read_run: dict[str, Any]) -> None:
    newest = step(read_run, "GetEvents")
    assert newest["page"] == {"size": 1, "totalElements": 2, "totalPages": 2, "number": 0}, newest
    assert newest["descriptions"] == ["health 1"] and newest["severities"] == [2]
    one = step(read_run, "GetEvent")
    assert one["description"] == "health 1" and one["details"] == {"boots": 1}
    assert one["typeId"].endswith("MindSphereStandardEvent")
