"""Small HTTP/1.1 test servers (plain and TLS) and the certificates they use (host side, CPython only).

Certificates come from trustme, made once per test session and written as files, DER for the firmware
(MicroPython's mbedTLS does not parse PEM). `HTTPTestServer` is a threaded server whose behaviour is picked
by the request path (see `HTTPTestServer.route`) and which counts what it saw: connections, completed and
refused TLS handshakes, requests, and application bytes received. Tests read these counters (directly, or
from MicroPython through `ControlServer`) to prove e.g. that a refused certificate cost the server zero
request bytes, or that two requests shared one handshake.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

_PATTERN = bytes(i % 251 for i in range(65536))


def pattern(n: int) -> bytes:
    """The body /bytes?n=N sends: byte i is i % 251 (firmware tests compute the same)."""
    whole, rest = divmod(n, len(_PATTERN))
    return _PATTERN * whole + _PATTERN[:rest]


def pem_to_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


class TestCerts:
    """A CA, a stranger CA, and leaf certificates: good (localhost, 127.0.0.1), for another host name,
    and expired. Files in directory: ca.der, ca.pem, other-ca.der."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        now = datetime.datetime.now(datetime.timezone.utc)
        self.good = self.ca.issue_cert("localhost", "127.0.0.1")
        self.wrong_host = self.ca.issue_cert("other.example")
        self.expired = self.ca.issue_cert(
            "localhost",
            "127.0.0.1",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        self.ca_der = directory / "ca.der"
        self.ca_pem = directory / "ca.pem"
        self.other_ca_der = directory / "other-ca.der"
        self.ca_der.write_bytes(pem_to_der(self.ca.cert_pem.bytes()))
        self.ca_pem.write_bytes(self.ca.cert_pem.bytes())
        self.other_ca_der.write_bytes(pem_to_der(self.other_ca.cert_pem.bytes()))

    def server_context(self, leaf: trustme.LeafCert) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body_len: int, sha256: str) -> None:
        self.method = method
        self.target = target
        parts = urlsplit(target)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = headers
        self.body_len = body_len
        self.sha256 = sha256

    def q(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)


class _Closed(Exception):
    pass


class _Conn:
    """One accepted connection: buffered reads that count application bytes."""

    def __init__(self, server: HTTPTestServer, sock: socket.socket, conn_id: int) -> None:
        self.server = server
        self.sock = sock
        self.id = conn_id
        self.buf = b""
        self.requests = 0
        self.drop_next = False
        self.head_only = False

    def recv(self) -> bytes:
        data = self.sock.recv(65536)
        if data:
            self.server.count("request_bytes", len(data))
        return data

    def read_head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            data = self.recv()
            if not data:
                if self.buf:
                    raise _Closed("EOF inside a request head")
                return None
            self.buf += data
            if len(self.buf) > 65536:
                raise _Closed("request head too large")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def read_body(self, n: int) -> tuple[int, str]:
        h = hashlib.sha256()
        got = 0
        while got < n:
            if not self.buf:
                self.buf = self.recv()
                if not self.buf:
                    raise _Closed("EOF inside a request body")
            piece = self.buf[: n - got]
            self.buf = self.buf[len(piece) :]
            h.update(piece)
            got += len(piece)
        return got, h.hexdigest()

    def send(self, data: bytes) -> None:
        if self.head_only:  # answer to HEAD: the head alone
            data = data[: data.index(b"\r\n\r\n") + 4]
        self.sock.sendall(data)


def response(
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    reason: str | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    reasons = {
        200: "OK",
        201: "Created",
        204: "No Content",
        400: "Bad Request",
        401: "Unauthorized",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    if reason is None:
        reason = reasons.get(status, "Status")
    lines = [f"{version} {status} {reason}"]
    hdrs = list(headers or [])
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs)
    if not framed and status not in (204, 304):
        hdrs.append(("Content-Length", str(len(body))))
    lines += [f"{k}: {v}" for k, v in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int, trailers: list[tuple[str, str]] | None = None) -> bytes:
    out = []
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out.append(b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n")
    out.append(b"0\r\n")
    out += [f"{k}: {v}\r\n".encode() for k, v in trailers or []]
    out.append(b"\r\n")
    return b"".join(out)


class HTTPTestServer:
    """Threaded HTTP/1.1 server on 127.0.0.1 (TLS if given a context) with path-scripted behaviours.

    Counters (`stats()`): connections, handshakes (completed), handshake_failures (+ handshake_errors),
    requests (fully received), request_bytes (application bytes after the handshake), dropped (requests
    answered by closing), sni (names seen), paths. rcvbuf shrinks the receive buffer (write-timeout tests).
    """

    __test__ = False

    def __init__(self, tls: ssl.SSLContext | None = None, name: str = "", rcvbuf: int | None = None) -> None:
        self.tls = tls
        self.name = name
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self._socks: set[socket.socket] = set()
        self._active = 0
        self.reset()
        if tls is not None:
            tls.sni_callback = self._sni
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"http-test-{name}", daemon=True)
        self._thread.start()

    # -- bookkeeping --

    def reset(self) -> None:
        """Hang up on every open connection (left over from an earlier test), then zero the counters."""
        self._hang_up(close=False)
        # A handler still sleeping in /slow or /sink finds its socket dead and counts nothing more.
        deadline = time.monotonic() + 0.05
        while self._active and time.monotonic() < deadline:
            time.sleep(0.005)
        with self._lock:
            self._stats = {
                "connections": 0,
                "handshakes": 0,
                "handshake_failures": 0,
                "handshake_errors": [],
                "requests": 0,
                "request_bytes": 0,
                "dropped": 0,
                "sni": [],
                "paths": [],
            }

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def stats(self, settle: bool = False) -> dict[str, Any]:
        """A copy of the counters; settle: first wait (<= 3 s) until no connection handler runs, e.g.
        for the server to record a handshake the client refused."""
        deadline = time.monotonic() + 3.0
        while settle and self._active and time.monotonic() < deadline:
            time.sleep(0.005)
        with self._lock:
            return json.loads(json.dumps(self._stats))

    def _sni(self, sslobj: Any, name: str | None, ctx: Any) -> None:
        with self._lock:
            self._stats["sni"].append(name)

    def url(self, host: str = "localhost") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def close(self) -> None:
        self._closing = True
        try:
            self._listener.close()
        except OSError:
            pass
        self._hang_up(close=True)

    def _hang_up(self, close: bool) -> None:
        """Shut down (and optionally close) every open connection."""
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if close:
                s.close()

    def __enter__(self) -> HTTPTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving --

    def _accept_loop(self) -> None:
        conn_id = 0
        while not self._closing:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn_id += 1
            with self._lock:
                self._stats["connections"] += 1
                self._active += 1
                self._socks.add(sock)
            threading.Thread(target=self._serve, args=(sock, conn_id), daemon=True).start()

    def _serve(self, raw: socket.socket, conn_id: int) -> None:
        sock: socket.socket = raw
        try:
            raw.settimeout(10)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    with self._lock:
                        self._stats["handshake_failures"] += 1
                        self._stats["handshake_errors"].append(str(e))
                    return
                self.count("handshakes")
            conn = _Conn(self, sock, conn_id)
            while not self._closing:
                if not self._one(conn):
                    return
        except (_Closed, OSError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                self._active -= 1
                self._socks.discard(raw)

    def _one(self, conn: _Conn) -> bool:
        """Serve one request; False when the connection is to be closed."""
        head = conn.read_head()
        if head is None:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        req_path = urlsplit(target).path
        if req_path == "/sink":  # never read the body: the client's writes must stall
            with self._lock:
                self._stats["paths"].append(req_path)
            time.sleep(float(parse_qs(urlsplit(target).query).get("hold", ["3"])[0]))
            return False
        n, digest = conn.read_body(int(headers.get("content-length", "0")))
        req = Request(method, target, headers, n, digest)
        conn.requests += 1
        conn.head_only = method == "HEAD"
        with self._lock:
            self._stats["requests"] += 1
            self._stats["paths"].append(req.path)
        if conn.drop_next:
            self.count("dropped")
            conn.sock.close()
            return False
        return self.route(req, conn)

    def route(self, req: Request, conn: _Conn) -> bool:
        """Behaviours by path. Returns False to close the connection afterwards."""
        p = req.path
        if p == "/echo":
            doc = {
                "method": req.method,
                "target": req.target,
                "headers": req.headers,
                "length": req.body_len,
                "sha256": req.sha256,
                "conn": conn.id,
                "nth": conn.requests,
            }
            conn.send(response(200, json.dumps(doc).encode(), [("Content-Type", "application/json")]))
        elif p == "/bytes":
            body = pattern(int(req.q("n", "0")))
            if req.q("chunked"):
                trailers = [("X-Trailer", "t")] if req.q("trailer") else None
                head = response(200, b"", [("Transfer-Encoding", "chunked")])
                conn.send(head + chunked(body, int(req.q("chunk", "1000")), trailers))
            else:
                conn.send(response(200, body, [("Content-Type", "application/octet-stream")]))
        elif p == "/status":
            code = int(req.q("code", "500"))
            hdrs = [("Content-Type", "text/plain")]
            if req.q("retry_after"):
                hdrs.append(("Retry-After", req.q("retry_after")))
            if req.q("date"):
                hdrs.append(("Date", req.q("date")))
            conn.send(response(code, req.q("body", "").encode(), hdrs))
        elif p == "/headers":
            size = int(req.q("size", "100"))
            hdrs = [(f"X-Filler-{i}", "v" * size) for i in range(int(req.q("n", "1")))]
            conn.send(response(200, b"ok", hdrs))
        elif p == "/slow":
            time.sleep(float(req.q("delay", "1")))
            conn.send(response(200, b"late"))
        elif p == "/stall":  # half a body, then silence
            conn.send(response(200, b"", [("Content-Length", "100")]) + b"x" * 50)
            time.sleep(float(req.q("delay", "2")))
            return False
        elif p == "/close":
            conn.send(response(200, b"bye", [("Connection", "close")]))
            return False
        elif p == "/eof":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + pattern(int(req.q("n", "10"))))
            return False
        elif p == "/http10":
            conn.send(response(200, b"old", version="HTTP/1.0"))
            return False
        elif p == "/continue":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n" + response(200, b"after"))
        elif p == "/continue-forever":  # 100 Continue after 100 Continue, quickly, for `s` seconds
            end = time.monotonic() + float(req.q("s", "10"))
            try:
                while time.monotonic() < end:
                    conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                    time.sleep(0.01)
            except OSError:
                pass
            return False
        elif p == "/drip":  # a valid answer, one byte per `every` seconds
            data = response(200, b"x" * 200)
            try:
                for i in range(len(data)):
                    conn.send(data[i : i + 1])
                    time.sleep(float(req.q("every", "1")))
            except OSError:
                pass
            return False
        elif p == "/nocontent":
            conn.send(response(204))
        elif p == "/bye":  # answer normally (keep-alive), then hang up while the client is idle
            conn.send(response(200, b"bye"))
            time.sleep(0.05)
            return False
        elif p == "/arm-drop":  # answer, then close as soon as the next request has arrived
            conn.drop_next = True
            conn.send(response(200, b"armed"))
        elif p == "/hangup":  # read the request, close without a word
            self.count("dropped")
            return False
        elif (
            p == "/superscript-length"
        ):  # "Content-Length: \u00b2": a digit to CPython's isdigit, not a number
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nab")
            return False
        elif p == "/deep-json":
            conn.send(response(200, b"[" * 3000 + b"]" * 3000))
        elif p == "/garbage":
            conn.send(b"SSH-2.0-OpenSSH\r\n\r\n")
            return False
        elif p == "/badchunk":
            conn.send(response(200, b"", [("Transfer-Encoding", "chunked")]) + b"zz\r\nhello\r\n0\r\n\r\n")
            return False
        else:
            conn.send(response(404, b"no such test route"))
        return True


class ControlServer(HTTPTestServer):
    """Plain HTTP: GET /stats/<name>[?settle=1] answers that server's counters as JSON, then closes."""

    def __init__(self, registry: dict[str, Callable[[bool], dict[str, Any]]]) -> None:
        self.registry = registry
        super().__init__(None, "control")

    def route(self, req: Request, conn: _Conn) -> bool:
        name = req.path.rsplit("/", 1)[-1]
        fn = self.registry.get(name)
        if fn is None:
            conn.send(response(404, b"unknown server", [("Connection", "close")]))
        else:
            doc = json.dumps(fn(bool(req.q("settle")))).encode()
            conn.send(response(200, doc, [("Content-Type", "application/json"), ("Connection", "close")]))
        return False


class SilentServer:
    """Accepts TCP connections and never says a word (a TLS handshake against it must time out)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._closing = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._closing:
            try:
                s, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(s)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        for s in self._held:
            s.close()


class Blackhole:
    """A port whose SYNs go unanswered: a listener with backlog 0, its queue filled and never accepted.

    Linux drops further SYNs while the accept queue is full, so connect() hangs until its timeout.
    """

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self._fill: list[socket.socket] = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fill.append(s)
        time.sleep(0.05)

    def close(self) -> None:
        for s in self._fill:
            s.close()
        self._listener.close()
