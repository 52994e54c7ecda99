"""The command line: serve (start, files, clean shutdown), agent, read-back formats, settings."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from sgclient import Agent, Client, strict_body, ts_item
from southgate.testing import RunningSouthgate

SG = [sys.executable, "-m", "southgate"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SG + list(args), capture_output=True, text=True, check=check, timeout=60)


def test_serve_prints_urls_makes_private_files_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "d"
    proc = subprocess.Popen(
        SG + ["serve", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert first.startswith("southgate: serving https://127.0.0.1:")
        assert second.strip() == f"southgate: CA certificate {(data / 'ca.pem').resolve()}"
        base = first.split()[-1]
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        for name in ("ca-key.pem", "server-key.pem", "token-key.pem", "admin-token", "southgate.db"):
            assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name
        assert (data / "ca.der").read_bytes()[:1] == b"\x30"
        c = Client(base, str(data / "ca.pem"))
        r = c.request("GET", "/api/agentmanagement/v3/oauth/token_key")
        assert r.status == 200
        # HTTP/1.1 keep-alive: a second request on the same connection
        assert c.request("GET", "/api/agentmanagement/v3/oauth/token_key").status == 200
        assert c.conn is not None
        c.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert proc.stderr is not None
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_and_restart_keeps_ca(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with RunningSouthgate(data) as sg:
        ca1 = Path(sg.ca_pem).read_bytes()
        assert sg.proc is not None
    assert sg.proc.returncode == 0
    with RunningSouthgate(data) as sg2:
        assert Path(sg2.ca_pem).read_bytes() == ca1


def test_agent_create_offline_then_onboard(tmp_path: Path) -> None:
    data = tmp_path / "d"
    out = tmp_path / "agentconfig.json"
    r = run(
        "agent", "create", "--data", str(data), "--name", "press-7", "--tenant", "acme", "--out", str(out)
    )
    assert "press-7" in r.stderr
    assert out.stat().st_mode & 0o077 == 0, "the agent config holds the IAT: owner-only"
    config = json.loads(out.read_text())
    assert config["content"]["tenant"] == "acme" and config["content"]["baseUrl"].startswith("https://")
    dup = run("agent", "create", "--data", str(data), "--name", "press-7", "--tenant", "acme", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    with RunningSouthgate(data) as sg:
        c = Client(sg.base_url, sg.ca_pem)
        reg = c.json("POST", "/api/agentmanagement/v3/register", {}, token=config["content"]["iat"])
        assert reg.status == 201
        # created while the server runs: the config carries the server's URL
        live = json.loads(run("agent", "create", "--data", str(data), "--name", "press-8").stdout)
        assert live["content"]["baseUrl"] == sg.base_url
        listed = run("agent", "list", "--data", str(data)).stdout
        assert "press-7" in listed and "ONBOARDED" in listed and "press-8" in listed
        aid = config["content"]["clientId"]
        run("agent", "offboard", "--data", str(data), "--agent", aid)
        fresh = json.loads(run("agent", "config", "--data", str(data), "--agent", aid).stdout)
        assert (
            c.json("POST", "/api/agentmanagement/v3/register", {}, token=fresh["content"]["iat"]).status
            == 201
        )
        c.close()


def test_read_back_cli_formats(sg: RunningSouthgate) -> None:
    a = Agent(sg).ready()
    rows = [
        ("2024-05-01T10:00:00.000Z", [("DP-temp", "1.5", "0"), ("DP-text", 'a,b "c"', "0")]),
        ("2024-05-02T10:00:00.000Z", [("DP-temp", "2.5", "0")]),
    ]
    ct, body = strict_body([ts_item("CF-test", rows)])
    assert a.exchange(ct, body).status == 200
    a.http.json(
        "POST",
        "/api/eventmanagement/v3/events",
        {"entityId": a.id, "timestamp": rows[0][0], "description": "hi"},
        token=a.token,
    )
    a.http.request(
        "PUT", f"/api/iotfile/v3/files/{a.id}/x.txt", b"abc", {"type": "text/plain"}, token=a.token
    )
    d = str(sg.data_dir)
    as_json = json.loads(run("timeseries", "--data", d, "--agent", a.id, "--format", "json").stdout)
    assert as_json == sg.timeseries(a.id) and len(as_json) == 3
    as_csv = list(
        csv.DictReader(io.StringIO(run("timeseries", "--data", d, "--agent", a.id, "--format", "csv").stdout))
    )
    assert [r["value"] for r in as_csv] == ["1.5", 'a,b "c"', "2.5"]
    table = run("timeseries", "--data", d, "--agent", a.id, "--from", "2024-05-02T00:00:00Z").stdout
    lines = table.splitlines()
    assert lines[0].split() == ["timestamp", "dataPointId", "value", "qualityCode"] and len(lines) == 3
    assert "2.5" in lines[2]
    before = run(
        "timeseries", "--data", d, "--agent", a.id, "--to", "2024-05-02T00:00:00Z", "--format", "json"
    )
    assert len(json.loads(before.stdout)) == 2
    ev = json.loads(run("events", "--data", d, "--agent", a.id, "--format", "json").stdout)
    assert [e["description"] for e in ev] == ["hi"]
    assert "x.txt" in run("files", "--data", d, "--agent", a.id).stdout
    assert "hi" in run("events", "--data", d, "--agent", a.id, "--format", "csv").stdout
    missing = run("timeseries", "--data", d, "--agent", "0" * 32, check=False)
    assert missing.returncode == 2 and "no agent with id or name" in missing.stderr
    diag = run("diagnostics", "--data", d, "--agent", a.id).stdout
    assert "stored" in diag


def test_settings_cli_reaches_running_server(fresh_settings: RunningSouthgate) -> None:
    sg = fresh_settings
    out = run("settings", "--data", str(sg.data_dir), "rate_limit=1", "rate_window_s=60")
    assert json.loads(out.stdout)["rate_limit"] == 1
    c = Client(sg.base_url, sg.ca_pem)
    assert c.request("GET", "/api/agentmanagement/v3/oauth/token_key").status == 200
    r = c.request("GET", "/api/agentmanagement/v3/oauth/token_key")
    assert r.status == 429 and "retry-after" in r.headers
    assert sg.settings()["rate_limit"] == 1
    bad = run("settings", "--data", str(sg.data_dir), "nope=1", check=False)
    assert bad.returncode == 2 and "unknown setting" in bad.stderr
    c.close()


def test_read_back_finds_the_agent_by_name_or_alone(tmp_path: Path) -> None:
    """--agent takes an id or a name, and may be left out while the data directory holds one agent."""
    d = str(tmp_path / "sg")
    run("agent", "create", "--data", d, "--name", "pump-1", "--out", str(tmp_path / "a.json"))
    alone = run("timeseries", "--data", d)
    assert alone.returncode == 0 and alone.stdout.split()[:2] == ["timestamp", "dataPointId"]
    assert run("events", "--data", d, "--agent", "pump-1").returncode == 0
    run("agent", "create", "--data", d, "--name", "pump-2", "--out", str(tmp_path / "b.json"))
    two = run("timeseries", "--data", d, check=False)
    assert two.returncode == 2 and "give --agent: this data directory has 2 agents: pump-1" in two.stderr
    assert run("diagnostics", "--data", d, "--agent", "pump-2").returncode == 0


def test_settings_out_of_range_are_refused_with_the_range(fresh_settings: RunningSouthgate) -> None:
    """A value the service could not work with (a lifetime past year 9999, NaN, an offset of 1e300) is
    refused where it is given, not met later as a 500 or a dropped connection on every request."""
    sg = fresh_settings
    for change in (
        "secret_lifetime_s=10000000000000000000",
        "clock_offset_s=NaN",
        "clock_offset_s=1e300",
        "rate_window_s=Infinity",
        "max_exchange_bytes=-1",
    ):
        bad = run("settings", "--data", str(sg.data_dir), change, check=False)
        assert bad.returncode == 2 and "must be" in bad.stderr, (change, bad.stderr)
    c = Client(sg.base_url, sg.ca_pem)
    r = c.request(
        "PUT",
        "/admin/settings",
        json.dumps({"iat_lifetime_s": 10**19}).encode(),
        {"Content-Type": "application/json"},
        token=sg.admin_token,
    )
    assert r.status == 400 and "iat_lifetime_s" in r.json()["message"]
    assert c.request("GET", "/api/agentmanagement/v3/oauth/token_key").status == 200
    c.close()
    assert sg.settings(clock_offset_s=-86400.0)["clock_offset_s"] == -86400.0  # a day back is fine


def test_command_line_mistakes_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    """An --out in a missing directory creates nothing (an app's secret is shown once, in that file); a read
    command without a running server says so; a secret file is owner-only even over a stale .tmp."""
    d = str(tmp_path / "sg")
    bad = run(
        "agent",
        "create",
        "--data",
        d,
        "--name",
        "x1",
        "--out",
        str(tmp_path / "nodir" / "a.json"),
        check=False,
    )
    assert bad.returncode == 2 and "does not exist (nothing was created)" in bad.stderr, bad.stderr
    assert "(no rows)" in run("agent", "list", "--data", d).stdout
    down = run("timeseries", "--data", d, "--asset", "0" * 32, "--aspect", "A", check=False)
    assert down.returncode == 1 and "is `southgate serve --data DIR` running?" in down.stderr, down.stderr
    assert "Traceback" not in bad.stderr + down.stderr
    stale = tmp_path / "app.json.tmp"
    stale.write_text("x")
    stale.chmod(0o666)
    run("app", "create", "--data", d, "--name", "r3", "--out", str(tmp_path / "app.json"))
    assert (tmp_path / "app.json").stat().st_mode & 0o777 == 0o600
