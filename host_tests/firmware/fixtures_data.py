"""Host fixtures for the data path end-to-end tests (test_agent_e2e.py): southgate with a fresh agent, and a
southgate the test itself can stop and start again (an outage) through a small plain-HTTP control.

Values handed to the tests are JSON-friendly dicts of strings (they go to MicroPython too).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest


def _settings_defaults() -> dict[str, Any]:
    from southgate.settings import Settings

    return Settings().to_dict()


def _agent_files(server: Any, root: Path, name: str) -> dict[str, str]:
    """A new southgate agent with its agentconfig.json in root (a fresh dir), as the tests' dict."""
    cfg = server.create_agent(name + "-" + uuid.uuid4().hex[:12])
    root.mkdir(parents=True, exist_ok=True)
    path = root / "agentconfig.json"
    path.write_text(json.dumps(cfg))
    path.chmod(0o600)
    return {
        "base_url": server.base_url,
        "ca_der": server.ca_der,
        "admin_token": server.admin_token,
        "agent_id": cfg["content"]["clientId"],
        "config": str(path),
        "dir": str(root),
        "data_dir": str(server.data_dir),  # file blobs: DATA_DIR/files/<blob>
    }


@pytest.fixture(scope="session")
def data_southgate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from southgate.testing import RunningSouthgate

    s = RunningSouthgate(tmp_path_factory.mktemp("sg-data"), require_mapping=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def data_sg(data_southgate_server: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """southgate (default settings but require_mapping=False, no faults, counters reset) and a new agent.

    Keys: base_url, ca_der, admin_token, agent_id, config (path), dir (scratch dir), data_dir.
    """
    s = data_southgate_server
    settings = dict(_settings_defaults(), require_mapping=False)
    s.clear_faults()
    s.settings(**settings)
    s.reset_counters()
    yield _agent_files(s, tmp_path / "agent", "data")
    s.clear_faults()
    s.settings(**settings)


class _Outage:
    """A southgate on a fixed port and data dir, stopped and started again on request (same CA, same DB)."""

    def __init__(self, data_dir: Path) -> None:
        from southgate.testing import RunningSouthgate

        self.data_dir = data_dir
        self.server = RunningSouthgate(data_dir, require_mapping=False).start()  # port 0: the OS picks
        self.port = urlsplit(self.server.base_url).port
        self.lock = threading.Lock()
        self.starts = 1
        self.stops = 0

    def stop(self) -> None:
        with self.lock:
            self.server.stop()
            self.stops += 1

    def start(self) -> None:
        from southgate.testing import RunningSouthgate

        with self.lock:
            if self.server.proc is not None and self.server.proc.poll() is None:
                return
            self.server = RunningSouthgate(self.data_dir, port=self.port).start()
            self.starts += 1


def _control_handler(outage: _Outage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, body = 200, {"ok": True}
            try:
                if self.path == "/stop":
                    outage.stop()
                elif self.path == "/start":
                    outage.start()
                else:
                    status, body = 404, {"ok": False}
            except Exception as exc:  # reported to the test, which fails with the reason
                status, body = 500, {"ok": False, "error": repr(exc)[:300]}
            body.update({"starts": outage.starts, "stops": outage.stops})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    return Handler


@pytest.fixture
def data_outage_sg(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Its own southgate (require_mapping=False) and agent, plus 'control': the plain-HTTP URL of a host
    control on which `POST /stop` stops that southgate (its port then refuses connections) and
    `POST /start` starts it again on the same port and data dir (same CA, agents, tokens and data).

    Why a control URL: the test runs inside MicroPython too, which cannot manage host processes.
    """
    outage = _Outage(tmp_path / "sg-outage")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _control_handler(outage))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="outage-control", daemon=True)
    thread.start()
    try:
        info = _agent_files(outage.server, tmp_path / "agent", "outage")
        info["control"] = f"http://127.0.0.1:{httpd.server_address[1]}"
        yield info
    finally:
        httpd.shutdown()
        httpd.server_close()
        with outage.lock:
            outage.server.stop()
