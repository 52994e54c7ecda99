"""Host fixtures for the http firmware tests (owned by that area).

`http_env` hands the test (CPython or MicroPython) plain strings and numbers: DER paths, base URLs of the
test servers, proxy URLs, and the control server's address for reading the servers' counters.
The servers live for the whole session (one set per xdist worker); their counters are reset per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.connect_proxy import ConnectProxy
from support.tls_servers import Blackhole, ControlServer, HTTPTestServer, SilentServer, TestCerts


class HttpWorld:
    def __init__(self, directory: Any) -> None:
        self.certs = certs = TestCerts(directory)
        self.servers = {
            "good": HTTPTestServer(certs.server_context(certs.good), "good"),
            "wronghost": HTTPTestServer(certs.server_context(certs.wrong_host), "wronghost"),
            "expired": HTTPTestServer(certs.server_context(certs.expired), "expired"),
            "plain": HTTPTestServer(None, "plain"),
            "sink": HTTPTestServer(certs.server_context(certs.good), "sink", rcvbuf=4096),
        }
        self.proxy = ConnectProxy().start()
        self.proxy_auth = ConnectProxy(auth=("agent", "pa:ss w@rd")).start()
        self.silent = SilentServer()
        self.blackhole = Blackhole()
        registry = {name: srv.stats for name, srv in self.servers.items()}
        registry["proxy"] = self.proxy.stats
        registry["proxy_auth"] = self.proxy_auth.stats
        self.control = ControlServer(registry)

    def reset(self) -> None:
        for srv in self.servers.values():
            srv.reset()
        self.proxy.reset()
        self.proxy_auth.reset()

    def env(self) -> dict[str, Any]:
        s = self.servers
        return {
            "ca_der": str(self.certs.ca_der),
            "other_ca_der": str(self.certs.other_ca_der),
            "ca_pem": str(self.certs.ca_pem),
            "https": s["good"].url(),
            "https_ip": s["good"].url("127.0.0.1"),
            "wronghost": s["wronghost"].url(),
            "expired": s["expired"].url(),
            "http": s["plain"].url("127.0.0.1"),
            "sink": s["sink"].url(),
            "silent": f"https://localhost:{self.silent.port}",
            "blackhole": f"https://127.0.0.1:{self.blackhole.port}",
            "closed_port": f"https://localhost:{_closed_port()}",
            "proxy": self.proxy.url,
            "proxy_auth": self.proxy_auth.url_with_auth,
            "proxy_auth_nocreds": self.proxy_auth.url,
            "proxy_bad_auth": self.proxy_auth.url_with_auth.replace("pa%3Ass", "wrong"),
            "control": ["127.0.0.1", self.control.port],
        }

    def close(self) -> None:
        for srv in self.servers.values():
            srv.close()
        self.control.close()
        self.proxy.close()
        self.proxy_auth.close()
        self.silent.close()
        self.blackhole.close()


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def http_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpWorld]:
    world = HttpWorld(tmp_path_factory.mktemp("http-certs"))
    yield world
    world.close()


@pytest.fixture
def http_env(http_world: HttpWorld) -> dict[str, Any]:
    """URLs, DER paths and the control address for one http test (counters reset)."""
    http_world.reset()
    return http_world.env()
