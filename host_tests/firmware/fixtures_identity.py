"""Host fixtures for the identity firmware tests: a running southgate per worker, a fresh agent per test,
southgates with refusable certificates, and a place to note secrets for the leak scan.

Values handed to the tests are JSON-friendly dicts of strings (they go to MicroPython too).
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Set by host_tests/test_no_secrets_leak.py: tests append the secrets they saw to this file, and every
# southgate log is copied next to it, so the scan knows what must never appear in any output.
LEAK_SINK_ENV = "MCAGENT_LEAK_SINK"


def _settings_defaults() -> dict[str, Any]:
    from southgate.settings import Settings

    return Settings().to_dict()


@pytest.fixture(scope="session")
def identity_southgate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from southgate.testing import RunningSouthgate

    sg = RunningSouthgate(tmp_path_factory.mktemp("sg-identity"))
    sg.start()
    try:
        yield sg
    finally:
        sg.stop()
        _keep_log(sg.log_path, "identity")


def _keep_log(log_path: Path, name: str) -> None:
    sink = os.environ.get(LEAK_SINK_ENV)
    if sink and log_path.exists():
        dest = Path(sink).parent / ("southgate-%s-%s.log" % (name, uuid.uuid4().hex[:8]))
        dest.write_bytes(log_path.read_bytes())


@pytest.fixture
def sg(identity_southgate_server: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """southgate (default settings, no faults, counters reset) and a new agent with its agentconfig.json.

    Keys: base_url, ca_der, admin_token, agent_id, config (path), dir (a scratch dir), sink (path or "").
    """
    s = identity_southgate_server
    defaults = _settings_defaults()
    s.clear_faults()
    s.settings(**defaults)
    s.reset_counters()
    cfg = s.create_agent("id-" + uuid.uuid4().hex[:12])
    d = tmp_path / "sg"
    d.mkdir()
    path = d / "agentconfig.json"
    path.write_text(json.dumps(cfg))
    yield {
        "base_url": s.base_url,
        "ca_der": s.ca_der,
        "admin_token": s.admin_token,
        "agent_id": cfg["content"]["clientId"],
        "config": str(path),
        "dir": str(d),
        "sink": os.environ.get(LEAK_SINK_ENV, ""),
    }
    s.clear_faults()
    s.settings(**defaults)


def _seeded_southgate(root: Path, names: tuple[str, ...], expired: bool) -> Any:
    """A southgate whose server certificate we made: for a wrong host name or an expired certificate.

    southgate keeps key material it finds in its data directory, so a CA and a leaf written there first
    are what it serves.
    """
    import trustme
    from southgate.testing import RunningSouthgate

    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    ca = trustme.CA(organization_name="mcagent test CA", key_type=trustme.KeyType.RSA)
    kwargs: dict[str, Any] = {}
    if expired:
        now = datetime.datetime.now(datetime.timezone.utc)
        kwargs = {"not_before": now - datetime.timedelta(days=30),
                  "not_after": now - datetime.timedelta(days=1)}
    leaf = ca.issue_cert(*names, key_type=trustme.KeyType.RSA, **kwargs)
    (root / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (root / "ca-key.pem").write_bytes(ca.private_key_pem.bytes())
    (root / "server.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (root / "server-key.pem").write_bytes(leaf.private_key_pem.bytes())
    for p in ("ca-key.pem", "server-key.pem"):
        os.chmod(root / p, 0o600)
    return RunningSouthgate(root).start()


def _fake_config(path: Path, base_url: str) -> str:
    doc = {
        "content": {
            "baseUrl": base_url,
            "iat": "eyJhbGciOiJSUzI1NiJ9.eyJ0eXAiOiJpYXQifQ.c2ln",
            "clientCredentialProfile": ["SHARED_SECRET"],
            "clientId": uuid.uuid4().hex,
            "tenant": "t",
        }
    }
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture(scope="session")
def bad_cert_southgate_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("sg-badcert")
    wrong = _seeded_southgate(root / "wrong-host", ("wrong.example",), expired=False)
    try:
        old = _seeded_southgate(root / "expired", ("localhost", "127.0.0.1", "::1"), expired=True)
        try:
            yield {"wrong_host": wrong, "expired": old, "root": root}
        finally:
            old.stop()
            _keep_log(old.log_path, "expired")
    finally:
        wrong.stop()
        _keep_log(wrong.log_path, "wrong-host")


@pytest.fixture
def bad_certs(bad_cert_southgate_servers: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Two southgates the agent must refuse: 'wrong_host' (certificate for wrong.example only) and
    'expired' (certificate expired yesterday), each with its CA (DER), log path and an agentconfig.json."""
    out: dict[str, dict[str, str]] = {}
    for name in ("wrong_host", "expired"):
        s = bad_cert_southgate_servers[name]
        out[name] = {
            "base_url": s.base_url,
            "ca_der": s.ca_der,
            "log": str(s.log_path),
            "config": _fake_config(s.data_dir / "agentconfig.json", s.base_url),
        }
    return out


@pytest.fixture
def identity_proxy() -> Iterator[dict[str, str]]:
    """A local HTTP CONNECT proxy with Basic auth: 'url' (with credentials) and 'bad_url' (wrong password).

    After the test it must have carried at least one tunnel: the agent really went through it.
    """
    from support.connect_proxy import ConnectProxy

    with ConnectProxy(auth=("agent", "p@ss word")) as p:
        bad = p.url_with_auth.replace("p%40ss", "wrong")
        yield {"url": p.url_with_auth, "bad_url": bad}
        assert p.tunnels >= 1, "no tunnel through the proxy: %r" % (p.stats(),)
