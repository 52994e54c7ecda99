"""CPython-only checks of mcagent.http: the client in a small MicroPython heap, compiled by mpy-cross as on
a board, and the rule that it never prints (request headers carry tokens)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.tls_servers import HTTPTestServer, TestCerts

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
OURS = ["http.py", "httputil.py", "httpsetup.py", "compat.py"]
HEAP = "64k"  # the heap of the project's end-to-end acceptance runs (this workload needs ~56k)

# Runs inside `micropython -X heapsize=64k`: TLS, keep-alive, streamed uploads, bounded answers.
SCRIPT = r"""
import gc, sys
gc.collect()
f0 = gc.mem_free()
from mcagent import http
gc.collect()
f1 = gc.mem_free()
URL, CA = sys.argv[1], sys.argv[2]
with open(CA, "rb") as f:
    ca = f.read()

class Body:
    length = 20000
    content_type = "application/octet-stream"
    def __init__(self):
        self.buf = bytearray(512)
    def write_to(self, write):
        n = 0
        while n < self.length:
            k = min(512, self.length - n)
            write(memoryview(self.buf)[:k])
            n += k

c = http.Connection(URL, [ca])
gc.collect()
f2 = gc.mem_free()
for i in range(3):
    r = c.request("POST", "/echo", {"Authorization": "Bearer x"}, Body())
    assert r.json()["length"] == 20000
    r = c.request("GET", "/bytes?n=2000", max_body=2048)
    assert len(r.body) == 2000 and not r.truncated
assert c.handshakes == 1 and c.requests == 6
r = None
gc.collect()
f3 = gc.mem_free()
c.close()
print('{"start": %d, "imports": %d, "connection": %d, "open_tls": %d}' % (f0, f0 - f1, f1 - f2, f2 - f3))
"""


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HTTPTestServer, TestCerts]]:
    certs = TestCerts(tmp_path_factory.mktemp("certs"))
    with HTTPTestServer(certs.server_context(certs.good), "heap") as srv:
        yield srv, certs


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _compile(out: Path) -> None:
    pkg = out / "mcagent"
    pkg.mkdir(parents=True)
    for src in (FIRMWARE / "mcagent").glob("*.py"):
        subprocess.run([_tool("mpy-cross"), "-o", str(pkg / (src.stem + ".mpy")), str(src)], check=True)


def test_our_firmware_files_compile_with_mpy_cross(tmp_path: Path) -> None:
    for name in OURS:
        proc = subprocess.run(
            [_tool("mpy-cross"), "-o", str(tmp_path / "x.mpy"), str(FIRMWARE / "mcagent" / name)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr


def test_tls_client_fits_a_small_heap(tls_server: tuple[HTTPTestServer, TestCerts], tmp_path: Path) -> None:
    srv, certs = tls_server
    _compile(tmp_path / "mpy")
    env = {"MICROPYPATH": f"{tmp_path / 'mpy'}:{ROOT / 'host_tests' / 'fakes'}"}
    script = tmp_path / "heap_run.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [_tool("micropython"), "-X", f"heapsize={HEAP}", str(script), srv.url(), str(certs.ca_der)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print("MicroPython GC heap (bytes):", figures)
    assert figures["connection"] < 8000  # TLS context with the CA, the 1 KiB buffer, the object
    assert figures["open_tls"] < 4000  # the TLS socket and its poller (mbedTLS buffers are C heap)
    assert srv.stats()["handshakes"] == 1


def test_http_code_never_prints() -> None:
    for name in ("http.py", "httputil.py", "httpsetup.py"):
        text = (FIRMWARE / "mcagent" / name).read_text()
        assert not re.search(r"\bprint\s*\(|print_exception|sys\.std", text), name
