"""`RunningSouthgate`: start the real `southgate serve` CLI for a test and talk to its admin API.

    with RunningSouthgate(tmp_path) as sg:
        config = sg.create_agent("pump-1")        # agentconfig.json content
        ...                                       # point the agent at sg.base_url, trust sg.ca_der
        assert sg.timeseries(config["content"]["clientId"])

Keyword options: `host`, `plain_http`, `port` and `auto_assets` go to the command line; any other name is a
setting (see southgate.settings.Settings, e.g. `require_mapping=False`, `secret_lifetime_s=3600`,
`clock_offset_s=-600`, `rate_limit=5`) applied before the context is entered.

The helper serves with `--auto-assets` (mappings create the assets they name) unless `auto_assets=False`:
tests that are not about the asset model need no modelling step; `make demo` and the asset tests model first.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

CLI_OPTIONS = ("host", "plain_http", "port", "auto_assets")


class SouthgateError(RuntimeError):
    """The server did not start, or an admin call failed (message has the status and body)."""


class RunningSouthgate:
    def __init__(
        self, data_dir: str | os.PathLike[str], *, startup_timeout_s: float = 30.0, **serve_options: Any
    ) -> None:
        self.data_dir = Path(data_dir)
        self.startup_timeout_s = startup_timeout_s
        self.cli_options = {k: v for k, v in serve_options.items() if k in CLI_OPTIONS}
        self.initial_settings = {k: v for k, v in serve_options.items() if k not in CLI_OPTIONS}
        self.base_url = ""
        self.ca_pem = str(self.data_dir / "ca.pem")
        self.ca_der = str(self.data_dir / "ca.der")
        self.admin_token = ""
        self.log_path = self.data_dir / "southgate.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: http.client.HTTPConnection | None = None

    # lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> RunningSouthgate:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        out_path = self.data_dir / "southgate.out"
        cmd = [
            sys.executable,
            "-m",
            "southgate",
            "serve",
            "--data",
            str(self.data_dir),
            "--host",
            str(self.cli_options.get("host", "127.0.0.1")),
            "--port",
            str(self.cli_options.get("port", 0)),
        ]
        if self.cli_options.get("plain_http"):
            cmd.append("--plain-http")
        if self.cli_options.get("auto_assets", True):
            cmd.append("--auto-assets")
        with open(out_path, "wb") as out, open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            text = out_path.read_text(errors="replace")
            if "southgate: CA certificate" in text and "southgate: serving" in text:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SouthgateError("southgate serve did not start:\n" + self.log_tail())
            time.sleep(0.05)
        for line in text.splitlines():
            if line.startswith("southgate: serving "):
                self.base_url = line.split(" ", 2)[2].strip()
            elif line.startswith("southgate: CA certificate "):
                self.ca_pem = line.split(" ", 3)[3].strip()
        self.admin_token = (self.data_dir / "admin-token").read_text().strip()
        if self.initial_settings:
            self.settings(**self.initial_settings)
        return self

    def stop(self) -> int | None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> RunningSouthgate:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # HTTP -----------------------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_pem)

    def connection(self) -> http.client.HTTPConnection:
        """A new HTTP(S) connection to the server that trusts its CA."""
        parts = urlsplit(self.base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, context=self.ssl_context(), timeout=30)
        return http.client.HTTPConnection(host, port, timeout=30)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """Call the admin API; returns the decoded JSON answer (SouthgateError on a non-2xx status)."""
        raw = self.admin_raw(method, path, body)
        return json.loads(raw) if raw else None

    def admin_raw(self, method: str, path: str, body: Any = None) -> bytes:
        """Call the admin API; returns the answer's bytes as they are (SouthgateError on a non-2xx)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.admin_token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self.connection()
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        if resp.status >= 300:
            raise SouthgateError(f"{method} {path} -> {resp.status} {raw.decode(errors='replace')}")
        return raw

    # conveniences ---------------------------------------------------------------------------------------
    def create_agent(
        self, name: str, tenant: str | None = None, entity_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if tenant:
            body["tenant"] = tenant
        if entity_id:
            body["entityId"] = entity_id
        return dict(self.admin("POST", "/admin/agents", body))

    def create_asset(
        self,
        name: str,
        variables: Sequence[tuple[str, str, str, str]],
        asset_id: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Model an asset: variables are (aspect, variable, type, unit); returns it with its assetId."""
        aspects: dict[str, list[dict[str, str]]] = {}
        for aspect, var, type_, unit in variables:
            aspects.setdefault(aspect, []).append({"name": var, "dataType": type_, "unit": unit})
        body: dict[str, Any] = {
            "name": name,
            "aspects": [{"name": a, "variables": v} for a, v in aspects.items()],
        }
        if asset_id:
            body["assetId"] = asset_id
        if tenant:
            body["tenant"] = tenant
        return dict(self.admin("POST", "/api/assetmanagement/v3/assets", body))

    def agent_config(self, agent_id: str) -> dict[str, Any]:
        """A boarding configuration with a fresh IAT if the last one was used (re-onboarding)."""
        return dict(self.admin("GET", f"/admin/agents/{agent_id}/config"))

    def offboard(self, agent_id: str) -> None:
        self.admin("POST", f"/admin/agents/{agent_id}/offboard")

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        """e.g. add_fault(path="/api/mindconnect/v3/exchange", kind="status", status=503, count=2)."""
        return dict(self.admin("POST", "/admin/faults", spec))

    def faults(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/admin/faults"))

    def clear_faults(self) -> None:
        self.admin("DELETE", "/admin/faults")

    def counters(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/admin/counters"))

    def reset_counters(self) -> None:
        self.admin("DELETE", "/admin/counters")

    def settings(self, **changes: Any) -> dict[str, Any]:
        if not changes:
            return dict(self.admin("GET", "/admin/settings"))
        return dict(self.admin("PUT", "/admin/settings", changes))

    def _read(self, agent_id: str, what: str, **query: str) -> list[Any]:
        q = {k.rstrip("_"): v for k, v in query.items() if v}
        suffix = "?" + urlencode(q) if q else ""
        return list(self.admin("GET", f"/admin/agents/{agent_id}/{what}{suffix}"))

    def timeseries(self, agent_id: str, from_: str | None = None, to: str | None = None) -> list[Any]:
        """Stored readings: [{"timestamp", "dataPointId", "value", "qualityCode"}], oldest first."""
        return self._read(agent_id, "timeseries", from_=from_ or "", to=to or "")

    def events(self, agent_id: str) -> list[Any]:
        return self._read(agent_id, "events")

    def files(self, agent_id: str) -> list[Any]:
        return self._read(agent_id, "files")

    def file_content(self, agent_id: str, path: str) -> bytes:
        for f in self.files(agent_id):
            if f["path"] == path:
                return (self.data_dir / "files" / f["blob"]).read_bytes()
        raise KeyError(path)

    def custom_items(self, agent_id: str) -> list[Any]:
        """Stored custom items, oldest first: [{"id", "type", "version", "details", "contentType", "size",
        "receivedMs"}]; `custom_payload(agent_id, item["id"])` has the bytes."""
        return self._read(agent_id, "items", full="1")

    def custom_payload(self, agent_id: str, item_id: int) -> bytes:
        """A custom item's payload, byte for byte as the agent sent it."""
        return self.admin_raw("GET", f"/admin/agents/{agent_id}/items/{item_id}")

    def diagnostics(self, agent_id: str) -> list[Any]:
        return self._read(agent_id, "diagnostics")

    def dsc(self, agent_id: str) -> dict[str, Any] | None:
        return self.admin("GET", f"/admin/agents/{agent_id}/dsc")
