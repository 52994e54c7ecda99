"""The official Node.js agent library against the real ``southgate serve`` (issue 3, acceptance 2).

Installs ``@mindconnect/mindconnect-nodejs`` (version pinned in ``node/package.json``) from the npm
registry once into ``build/node-cache/<version>`` (later runs reuse it), starts ``southgate serve`` over
HTTPS with its own dev CA, creates an agent with ``southgate agent create``, and runs
``node/agent_flow.js`` with ``NODE_EXTRA_CA_CERTS`` pointing at the CA: OnBoard, token,
PutDataSourceConfiguration, PutDataMappings, PostData, BulkPostData, PostEvent, UploadFile (small, and
5 MiB + 1 byte with ``chunk: true``). Then it reads back with ``southgate timeseries/events/files
--format json`` and checks that what was stored equals what was sent.

Each operation is its own test so a failure names the operation; the Node run happens once per module.
Two extra scenarios real Node agents hit: a restarted agent re-putting its DSC (If-Match), and secret
rotation (southgate set to 1 h secrets, so Node rotates on every call). Skips only where ``node``/``npm``
are missing. About 20 s cold (10-13 s of it npm install), 6-8 s with the cache.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
REPO = HERE.parents[1]
LIB = "@mindconnect/mindconnect-nodejs"
LIB_VERSION: str = json.loads((NODE_DIR / "package.json").read_text())["dependencies"][LIB]
CACHE = REPO / "build" / "node-cache" / LIB_VERSION
SOUTHGATE = Path(sys.executable).parent / "southgate"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed to run the official MindConnect Node.js library (not installed here)",
)


# ----------------------------------------------------------------------------------------------- install
def _installed(root: Path) -> bool:
    pkg = root / "node_modules" / LIB / "package.json"
    try:
        return json.loads(pkg.read_text())["version"] == LIB_VERSION
    except (OSError, ValueError, KeyError):
        return False


def install_library() -> tuple[Path, float]:
    """The pinned library from the npm registry, cached; returns (dir with node_modules, seconds spent)."""
    if _installed(CACHE):
        return CACHE, 0.0
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=CACHE.parent))
    try:
        shutil.copy(NODE_DIR / "package.json", tmp / "package.json")
        proc = subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--omit=dev",
                "--ignore-scripts",
                "--no-package-lock",
                "--loglevel=error",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0 or not _installed(tmp):
            pytest.fail(f"npm install {LIB}@{LIB_VERSION} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        tmp.chmod(0o755)
        try:
            tmp.rename(CACHE)  # atomic; another worker may have won the race
        except OSError:
            if not _installed(CACHE):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CACHE, time.monotonic() - t0


# --------------------------------------------------------------------------------------------- southgate
class Southgate:
    """Raw ``southgate serve`` subprocess (the CLI contract: two ``southgate: ...`` lines on stdout)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base_url = ""
        self.ca_pem = ""
        self.log = data_dir.parent / "southgate-serve.log"

    def __enter__(self) -> Southgate:
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(SOUTHGATE), "serve", "--data", str(self.data_dir), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self._logf,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # keeps draining stdout so serve never blocks on a full pipe
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                lines.put(raw.decode(errors="replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while not (self.base_url and self.ca_pem):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                self.__exit__()
                why = f"exited ({self.proc.returncode})" if line is None else "printed no base URL/CA in 30 s"
                raise RuntimeError(
                    "southgate serve {}; stdout:\n{}\nstderr:\n{}".format(
                        why, "".join(seen)[-2000:], self.log.read_text(errors="replace")[-3000:]
                    )
                )
            seen.append(line)
            m = re.match(r"southgate: serving (\S+)", line)
            if m:
                self.base_url = m.group(1).rstrip("/")
            m = re.match(r"southgate: CA certificate (\S+)", line)
            if m:
                self.ca_pem = m.group(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def southgate_cli(*args: str) -> Any:
    proc = subprocess.run([str(SOUTHGATE), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        cmd = " ".join(args)
        raise RuntimeError(
            f"southgate {cmd} -> exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


# ------------------------------------------------------------------------------------------------ the run
class Run:
    def __init__(self) -> None:
        self.result: dict[str, Any] = {}
        self.agent_id = ""
        self.data_dir = Path()
        self.notes: list[str] = []
        self.stderr = ""
        self.log = ""
        self.install_s = 0.0
        self.node_s = 0.0
        self._reads: dict[str, list[dict[str, Any]]] = {}

    @property
    def sent(self) -> dict[str, Any]:
        return self.result.get("sent", {})

    def step(self, name: str) -> None:
        st = self.result.get("steps", {}).get(name)
        if st is None:
            pytest.fail(
                "step {} did not run (fatal: {})\nnode stderr:\n{}".format(
                    name, self.result.get("fatal"), self.stderr[-2000:]
                )
            )
        if not st["ok"]:
            pytest.fail(
                "{} failed in mindconnect-nodejs {}: {}\n--- southgate log tail ---\n{}".format(
                    name, LIB_VERSION, st["error"], self.log
                )
            )

    def read(self, what: str) -> list[dict[str, Any]]:
        """`southgate WHAT --agent ID --format json`, once per run (nothing changes after the Node run)."""
        if what not in self._reads:
            self._reads[what] = self._read(what)
        return self._reads[what]

    def _read(self, what: str) -> list[dict[str, Any]]:
        out = southgate_cli(what, "--data", str(self.data_dir), "--agent", self.agent_id, "--format", "json")
        data = json.loads(out)
        if isinstance(data, dict):  # tolerate {"items"|"records"|<what>: [...]}
            for key in (what, "items", "records", "content", "data"):
                if isinstance(data.get(key), list):
                    return data[key]
        assert isinstance(data, list), f"southgate {what} --format json gave {type(data)!r}"
        return data


def _admin(sg: Southgate, method: str, path: str, body: Any) -> Any:
    """Admin API call (settings for the rotation scenario); token from DIR/admin-token."""
    token = (sg.data_dir / "admin-token").read_text().strip()
    req = urllib.request.Request(
        sg.base_url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=sg.ca_pem) if sg.base_url.startswith("https") else None
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


NODE_VARIABLES = [  # agent_flow.js's data points: (name, type, unit)
    ("Temperature", "DOUBLE", "\u00b0C"),
    ("Count", "INT", ""),
    ("Total", "LONG", "pcs"),
    ("Running", "BOOLEAN", ""),
    ("Status", "STRING", ""),
    ("Note", "BIG_STRING", ""),
    ("LastService", "TIMESTAMP", ""),
]


def flow(sg: Southgate, tmp: Path, lib_dir: Path, name: str, mode: str | None = None) -> Run:
    """Create agent NAME with the CLI and run agent_flow.js for it against SG."""
    r = Run()
    r.data_dir = sg.data_dir
    work = tmp / name
    work.mkdir()
    cfg_path = work / "agentconfig.json"
    southgate_cli("agent", "create", "--data", str(sg.data_dir), "--name", name, "--out", str(cfg_path))
    cfg = json.loads(cfg_path.read_text())
    r.agent_id = cfg["content"]["clientId"]
    if cfg["content"].get("baseUrl", "").rstrip("/") != sg.base_url:
        r.notes.append(
            f"agentconfig baseUrl {cfg['content'].get('baseUrl')!r} != served {sg.base_url!r} (patched)"
        )
        cfg["content"]["baseUrl"] = sg.base_url
        cfg_path.write_text(json.dumps(cfg))
    asset_id = secrets.token_hex(16)
    # As on Insights Hub the asset agent_flow.js maps onto is modelled first (its DSC's points, same types).
    variables = [f"Environment.{n}:{t}" + (f":{u}" if u else "") for n, t, u in NODE_VARIABLES]
    southgate_cli(
        "asset", "create", "--data", str(sg.data_dir), "--name", name, "--id", asset_id,
        *[arg for v in variables for arg in ("--variable", v)],
    )  # fmt: skip
    params = {
        "libDir": str(lib_dir),
        "config": str(cfg_path),
        "stateDir": str(work / "state"),
        "out": str(work / "result.json"),
        "assetId": asset_id,
        "mode": mode,
    }
    (work / "params.json").write_text(json.dumps(params))
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env["NODE_EXTRA_CA_CERTS"] = sg.ca_pem
    t0 = time.monotonic()
    proc = subprocess.run(
        ["node", str(NODE_DIR / "agent_flow.js"), str(work / "params.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    r.node_s = time.monotonic() - t0
    r.stderr = proc.stderr
    try:
        r.result = json.loads((work / "result.json").read_text())
    except (OSError, ValueError):
        r.result = {"fatal": f"agent_flow.js wrote no result (exit {proc.returncode})"}
    r.log = sg.log_tail()
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    lib_dir, install_s = install_library()
    if not SOUTHGATE.exists():
        pytest.fail(f"console script {SOUTHGATE} is missing (pip install -e . into the venv)")
    tmp = tmp_path_factory.mktemp("nodejs")
    with Southgate(tmp / "sgdata") as sg:
        main = flow(sg, tmp, lib_dir, "node-interop")
        main.install_s = install_s
        # Secrets that live < 25 h make Node rotate before every operation.
        try:
            _admin(sg, "PUT", "/admin/settings", {"secret_lifetime_s": 3600})
            rotation = flow(sg, tmp, lib_dir, "node-rotation", mode="rotation")
        except Exception as exc:  # only test_secret_rotation should fail for this
            rotation = Run()
            rotation.result = {"fatal": f"rotation scenario setup failed: {exc!r}"}
        yield {"main": main, "rotation": rotation}  # southgate keeps serving for the read-back


@pytest.fixture(scope="module")
def run(runs: dict[str, Run]) -> Run:
    return runs["main"]


# ---------------------------------------------------------------------------------------------- compare
def _ms(ts: Any) -> int:
    if isinstance(ts, (int, float)):
        return int(ts)
    return int(datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


def _get(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        if n in row:
            return row[n]
    raise KeyError(f"none of {names} in {sorted(row)}")


def _reading_key(row: dict[str, Any]) -> tuple[int, str]:
    return (
        _ms(_get(row, "timestamp", "_time", "time", "ts", "ts_ms")),
        str(_get(row, "dataPointId", "data_point_id", "dataPoint")),
    )


def _stored_value(row: dict[str, Any]) -> tuple[str, str]:
    value = _get(row, "value")
    quality = _get(row, "qualityCode", "quality", "quality_code")
    if isinstance(value, bool):
        value = "true" if value else "false"
    return str(value), str(quality)


def _same_value(sent: str, stored: str, dp_type: str) -> bool:
    if sent == stored:
        return True
    try:
        if dp_type == "DOUBLE":
            return float(sent) == float(stored)
        if dp_type in ("INT", "LONG"):
            return int(sent) == int(stored)
        if dp_type == "BOOLEAN":
            return sent.lower() == stored.lower()
        if dp_type == "TIMESTAMP":
            return _ms(sent) == _ms(stored)
    except ValueError:
        return False
    return False


def check_readings(r: Run, which: str) -> None:
    payload = r.sent.get("exchangePayloads", {}).get(which)
    assert payload, f"nothing recorded as sent for {which}"
    types = {
        dp["id"]: dp["type"]
        for ds in r.sent["dataSourceConfiguration"]["dataSources"]
        for dp in ds["dataPoints"]
    }
    stored = {_reading_key(row): _stored_value(row) for row in r.read("timeseries")}
    problems = []
    for entry in payload:
        for v in entry["values"]:
            key = (_ms(entry["timestamp"]), v["dataPointId"])
            got = stored.get(key)
            if got is None:
                problems.append("missing {} @ {}".format(v["dataPointId"], entry["timestamp"]))
            elif not _same_value(v["value"], got[0], types[v["dataPointId"]]) or got[1] != v["qualityCode"]:
                problems.append(
                    "{} @ {}: sent {!r}/{!r}, stored {!r}/{!r}".format(
                        v["dataPointId"], entry["timestamp"], v["value"], v["qualityCode"], got[0], got[1]
                    )
                )
    assert not problems, "{}: stored time series differ from what Node sent:\n  {}\n(stored keys: {})".format(
        which, "\n  ".join(problems), sorted(stored)[:20]
    )


# -------------------------------------------------------------------------------------------------- tests
def test_onboard(run: Run) -> None:
    run.step("OnBoard")


def test_agent_token(run: Run) -> None:
    run.step("GetAgentToken")
    assert run.result["steps"]["GetAgentToken"]["detail"]["alg"] == "RS256"


def test_put_data_source_configuration(run: Run) -> None:
    run.step("PutDataSourceConfiguration")
    stored = run.sent["storedDataSourceConfiguration"]
    assert stored["dataSources"] == run.sent["dataSourceConfiguration"]["dataSources"]
    assert stored.get("id") and str(stored.get("eTag", "")).isdigit(), stored


def test_put_data_mappings(run: Run) -> None:
    run.step("PutDataMappings")


def test_get_configuration_and_mappings_back(run: Run) -> None:
    """Not in the acceptance list, but every real Node agent calls these."""
    run.step("GetDataSourceConfiguration")
    run.step("GetDataMappings")


def test_post_data_stored(run: Run) -> None:
    run.step("PostData")
    check_readings(run, "postdata")


def test_bulk_post_data_stored(run: Run) -> None:
    run.step("BulkPostData")
    check_readings(run, "bulkpostdata")


def test_post_event_stored(run: Run) -> None:
    run.step("PostEvent")
    events = run.read("events")
    for sent in run.sent["events"]:
        match = [e for e in events if _ms(_get(e, "timestamp", "ts_ms", "time")) == _ms(sent["timestamp"])]
        assert len(match) == 1, f"event {sent} not stored once; stored: {events}"
        e = match[0]
        body = e.get("body")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                body = None
        flat = dict(body or {}, **e)
        assert str(_get(flat, "entityId", "entity_id")) == sent["entityId"], flat
        assert int(_get(flat, "severity")) == sent["severity"], flat
        assert _get(flat, "description") == sent["description"], flat
        assert _get(flat, "source") == sent["source"], flat


def _check_file(run: Run, path: str) -> None:
    sent = next(f for f in run.sent["files"] if f["path"] == path)
    files = run.read("files")
    match = [f for f in files if str(_get(f, "path", "filepath", "name")).lstrip("/") == path]
    assert len(match) == 1, f"file {path} not stored once; stored: {files}"
    f = match[0]
    assert str(_get(f, "entityId", "entity_id")) == sent["entityId"], f
    assert int(_get(f, "size", "length")) == sent["size"], f
    digest = f.get("sha256") or f.get("md5")
    assert digest in (sent["sha256"], sent["md5"]), "content differs: stored {}, sent sha256 {}".format(
        f, sent["sha256"]
    )
    ctype = f.get("content_type", f.get("type", f.get("contentType")))
    if ctype is not None:
        assert ctype == sent["type"], f
    desc = f.get("description")
    if desc is not None:
        assert desc == sent["description"], f


def test_upload_file_small(run: Run) -> None:
    run.step("UploadFile")
    run.step("UploadFileAgain")  # same path again: Node sends If-Match with the ETag it got
    _check_file(run, "interop/hello.txt")


def test_upload_file_chunked(run: Run) -> None:
    run.step("UploadFileChunked")
    _check_file(run, "interop/big.bin")


def test_restarted_agent_puts_configuration_again(run: Run) -> None:
    """Not in the acceptance list: a new agent object on the same state re-puts its DSC with If-Match."""
    run.step("RestartPutDataSourceConfiguration")


def test_secret_rotation(runs: dict[str, Run]) -> None:
    """Not in the acceptance list: with secrets < 25 h Node rotates (PUT registration_client_uri) before
    each operation; southgate must accept each rotation and the tokens from each new secret."""
    r = runs["rotation"]
    for name in ("OnBoard", "GetAgentToken", "PutDataSourceConfiguration", "PutDataMappings", "PostData"):
        r.step(name)
    seen = r.sent["secrets"]
    order = ["OnBoard", "GetAgentToken", "PutDataSourceConfiguration", "PostData"]
    hashes = [seen[k]["secret"] for k in order]
    assert len(set(hashes)) == len(hashes), f"Node did not rotate before every operation: {seen}"
    assert seen["PostData"]["recovery"] >= 3, seen
    stored = {_reading_key(row) for row in r.read("timeseries")}
    assert len(stored) == len(r.sent["timeseries"]), (stored, r.sent["timeseries"])


def test_report_timings(run: Run) -> None:
    """Not a check: prints install/run times and notes into the -rA/-s report."""
    print(
        "mindconnect-nodejs {}: install {:.1f} s (0 = cached), node run {:.1f} s; notes: {}".format(
            LIB_VERSION, run.install_s, run.node_s, run.notes or "none"
        )
    )
