"""HTTP/1.1 client for the agent: one keep-alive connection, verified TLS, streamed bodies, bounded responses.

Why not micropython-lib `requests`: it never verifies the server certificate, builds bodies in RAM and
reads whole responses into RAM. Here:
- TLS always verifies the server against the DER CA certificates given (SNI and host-name check); nothing
  turns that off. Plain http:// only where the base URL says so. A refused certificate raises
  TlsVerifyError from the handshake, before any request byte is written.
- One socket carries many requests (keep-alive); the resend rule for a dropped connection is in
  Connection.request.
- Request bodies (bytes, or a streaming body with .length/.content_type/.write_to) go out with
  Content-Length through the connection's one buffer; response heads are capped (max_head), bodies kept
  up to max_body and the rest drained (or the connection closed when draining would cost more).
- Nothing here logs or prints: request headers carry tokens, and no error message quotes them.
Rarely needed parts (proxy tunnel, Retry-After, error texts) live in mcagent.httputil, imported on first
use so a board without a proxy does not spend heap on them.
"""

import socket

from micropython import const

from mcagent import compat

MAX_HEAD = const(8192)  # status line + headers (or chunked trailers) beyond this: ProtocolError
MIN_RATE = const(2048)  # bytes/s of request body the deadline allows for on top of deadline_s
DRAIN_MAX = const(65536)  # unread body bytes worth draining to keep a connection; beyond: close it
_IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
_HEX = b"0123456789abcdefABCDEF"

# body framings
_NONE = const(0)
_LENGTH = const(1)
_CHUNKED = const(2)
_UNTIL_CLOSE = const(3)


class TransportError(OSError):
    """The exchange failed below HTTP: name resolution, connect, TLS, reset, EOF, a malformed response."""


class TlsVerifyError(TransportError):
    """The server's certificate or host name was refused (by the handshake, before any request byte)."""


class Timeout(TransportError):
    """No progress within timeout_s while connecting, handshaking, writing or reading."""


class ProtocolError(TransportError):
    """The peer's bytes are not HTTP/1.x as accepted here (bad status line, head over the cap, bad chunk)."""


class ProxyError(TransportError):
    """The CONNECT proxy refused the tunnel; .status is its answer (e.g. 407, 502)."""


class HttpError(Exception):
    """A non-success HTTP answer as an exception (Response.raise_for_status, or raised by callers).

    retry_after: seconds the server asked us to wait, or None. body: the response body (bounded by
    max_body); the message carries a printable excerpt of it and never any request header.
    """

    def __init__(self, status, message, retry_after=None, body=b""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.body = body


def split_url(url):
    """'scheme://[user:pass@]host[:port][/path][?query]' -> (scheme, host, port, path, userinfo).

    http and https only; path keeps the query and defaults to '/'. Messages never quote the URL (a proxy
    URL may carry a password).
    """
    i = url.find("://")
    scheme = url[:i].lower() if i > 0 else ""
    if scheme not in ("http", "https"):
        raise ValueError("URL must start with http:// or https://")
    rest = url[i + 3 :]
    j = len(rest)
    for sep in "/?#":
        k = rest.find(sep)
        if 0 <= k < j:
            j = k
    auth, path = rest[:j], rest[j:].split("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    user = None
    k = auth.rfind("@")
    if k >= 0:
        user, auth = auth[:k], auth[k + 1 :]
    k = auth.rfind(":")
    port = auth[k + 1 :] if k > auth.rfind("]") else ""
    host = (auth[:k] if port or k > auth.rfind("]") else auth).strip("[]")
    if port and not (port.isdigit() and 0 < int(port) < 65536) or not host:
        raise ValueError("bad host or port in URL")
    return scheme, host, int(port) if port else (443 if scheme == "https" else 80), path, user


class Response:
    """One HTTP answer: .status (int), .reason, .headers (lower-case names -> str), .body (bytes-like, at most
    max_body: a bytearray when the server gave the length) and .truncated (True if the server sent more than
    max_body)."""

    def __init__(self, status, reason, headers, what):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = b""
        self.truncated = False
        self.what = what  # "METHOD /path" for messages (no query, no headers)

    @property
    def retry_after(self):
        """Seconds to wait from Retry-After (delay or HTTP date), or None."""
        if "retry-after" not in self.headers:
            return None
        from mcagent import httputil

        return httputil.parse_retry_after(self.headers["retry-after"], self.headers.get("date"))

    def json(self):
        """The body parsed as JSON; ValueError with a clear message if it was cut off or is not JSON."""
        import json

        if not self.truncated:
            try:
                return json.loads(self.body)
            except ValueError:
                pass
        from mcagent import httputil

        raise httputil.json_error(self)

    def raise_for_status(self):
        """Raise HttpError for 4xx/5xx (status, Retry-After, body excerpt); return self otherwise."""
        if self.status >= 400:
            from mcagent import httputil

            raise httputil.http_error(self)
        return self


class Connection:
    """One keep-alive HTTP/1.1 connection to the origin of base_url, opened on first use.

    ca_ders: list of DER CA certificates (bytes) the https server must chain to (required for https).
    proxy: None or "http://[user:pass@]host:port" of an HTTP CONNECT proxy (Basic auth with user:pass).
    timeout_s: inactivity timeout of each connect, handshake, write and read. deadline_s (default 4 x
    timeout_s, plus a second per MIN_RATE bytes of request body): the whole request, from connecting to the
    last byte of the answer, whatever a server drips; past it the connection is dropped with Timeout.
    Counters: handshakes (connections opened: TLS handshakes on https), requests (answers received),
    reopened (idle connections found closed by the server and replaced before sending), resent.
    """

    def __init__(self, base_url, ca_ders=(), proxy=None, timeout_s=30, buf_size=1024, deadline_s=None):
        scheme, self.host, self.port, path, user = split_url(base_url)
        if user is not None:
            raise ValueError("credentials in the base URL are not supported")
        self.tls = scheme == "https"
        self._prefix = path.rstrip("/")
        h = "[%s]" % self.host if ":" in self.host else self.host
        self._hostport = "%s:%d" % (h, self.port)
        self._hosthdr = h if self.port == (443 if self.tls else 80) else self._hostport
        self._ctx = None
        if self.tls:
            ca_ders = list(ca_ders)
            for der in ca_ders:
                if not isinstance(der, (bytes, bytearray)):
                    raise TypeError("ca_ders must be DER certificates as bytes")
                if der[:5] == b"-----":
                    raise ValueError("CA certificates must be DER, not PEM (mbedTLS here reads DER only)")
            try:
                self._ctx = compat.tls_client_context(ca_ders)
            except OSError as e:  # CPython: ssl.SSLError for a bad DER (MicroPython: ValueError)
                raise ValueError("bad CA certificate: %s" % e)
        self._proxy = None
        if proxy:
            p = split_url(proxy)
            if p[0] != "http":
                raise ValueError("proxy must be an http:// CONNECT proxy")
            self._proxy = p
        self.timeout_s = timeout_s
        # The whole of one request (connect, TLS, sending, 1xx answers, the response) ends by this, however
        # the server drips; plus a second per MIN_RATE bytes of request body (a big file may take long).
        self.deadline_s = deadline_s or 4 * timeout_s
        self._deadline = None
        self.max_head = MAX_HEAD
        self.drain_max = DRAIN_MAX
        self._buf = bytearray(buf_size)
        self._mv = memoryview(self._buf)
        self._sock = self._io = None
        self._r0 = self._r1 = self._w = 0
        self._got = self._bad_body = False
        self._phase = "connect"
        self._what = ""
        self.handshakes = self.requests = self.reopened = self.resent = 0

    def request(self, method, path, headers=None, body=None, max_body=4096, idempotent=None):
        """Send one request and read its answer; non-2xx answers are returned, not raised.

        path: '/...' (appended to the base URL's path) or an absolute URL on the same origin.
        headers: dict (or pairs) of extra headers; Host, Content-Length and Transfer-Encoding are ours.
        body: None, bytes-like, str (UTF-8) or a streaming body (.length, .content_type, .write_to(write)).

        Resend rule for a keep-alive connection the server dropped: an idle connection that shows EOF, a
        reset or stray bytes is replaced before anything is sent (any method). Otherwise a request is
        sent again, once, on a new connection, only if it failed with EOF/reset (not a timeout) on a
        reused connection before any byte of the answer arrived, and either it was not completely
        written (a server does not act on a partial request) or it is idempotent (GET, HEAD, PUT, DELETE,
        OPTIONS; idempotent=True/False overrides). A fully written POST is never resent here: the server
        may have acted on it, so the caller decides.
        """
        method = method.upper()
        _token(method)
        t = self._target(path)
        extra = []
        ctype = None
        close = False
        for name, value in (headers.items() if hasattr(headers, "items") else headers) if headers else ():
            if not isinstance(value, str):
                value = str(value)  # str(a str) copies it on MicroPython: a token is ~1 KB
            name = str(name)
            _token(name)
            if "\r" in value or "\n" in value:
                raise ValueError("CR/LF in a header value")
            low = name.lower()
            if low in ("host", "content-length", "transfer-encoding"):
                raise ValueError("%s is set by the connection" % name)
            if low == "content-type":
                ctype = value
            else:
                close = close or (low == "connection" and "close" in value.lower())
                extra.append((name, value))
        length = None
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            if hasattr(body, "write_to"):
                length = body.length
                if not isinstance(length, int) or length < 0:
                    raise ValueError("streaming body length must be an int >= 0")
                ctype = ctype or getattr(body, "content_type", None)
            else:
                length = len(body)
        elif method in ("POST", "PUT", "PATCH"):
            length = 0
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        self._what = method + " " + t.split("?")[0]
        self._deadline = compat.ticks_ms() + int((self.deadline_s + (length or 0) // MIN_RATE) * 1000)
        retried = False
        while True:
            fresh = True
            if self._io is not None:
                self._io.deadline = self._deadline
                if self._io.idle_ok():
                    fresh = False
                else:  # the server closed it while idle: nothing sent yet, any method may go
                    self._drop()
                    self.reopened += 1
            if fresh:
                self._open()
            self._got = self._bad_body = sent = False
            try:
                self._send(method, t, extra, body, length, ctype)
                sent = True
                resp = self._response(method, max_body)
            except BaseException as e:  # noqa: B036 - the socket is in an unknown state: never reuse it
                self._drop()
                if self._bad_body:
                    raise
                e = self._error(e)
                if not (retried or fresh or self._got) and type(e) is TransportError and (idempotent or not sent):
                    retried = True
                    self.resent += 1
                    continue
                raise e
            self.requests += 1
            if close:
                self._drop()
            return resp

    def close(self):
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._drop()

    # -- connection -----------------------------------------------------------------------------------

    def _drop(self):
        sock = self._sock
        self._sock = self._io = None
        self._r0 = self._r1 = self._w = 0
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _open(self):
        self._phase = "connect"
        self._r0 = self._r1 = self._w = 0
        host, port = (self._proxy[1], self._proxy[2]) if self._proxy else (self.host, self.port)
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as e:
            raise TransportError("cannot resolve %s: %s" % (host, e))
        err = TransportError("cannot resolve %s" % host)
        for ai in infos:  # e.g. localhost -> ::1, then 127.0.0.1
            sock = socket.socket(ai[0], socket.SOCK_STREAM)
            try:
                compat.blocking(sock, self._left_s())
                sock.connect(ai[-1])  # MicroPython: [-1] is a ready sockaddr; CPython: a tuple
                break
            except OSError as e:
                sock.close()
                err = e
        else:
            raise self._error(err, "%s:%d" % (host, port))
        self._sock = sock
        ms = int(self.timeout_s * 1000)
        try:
            if self._proxy:
                from mcagent import httputil

                self._io = compat.SockIO(sock, ms)
                self._io.deadline = self._deadline
                httputil.tunnel(self)
            if self._ctx is not None:
                self._phase = "TLS handshake"
                compat.blocking(sock, self._left_s())
                try:
                    sock = compat.tls_wrap(self._ctx, sock, self.host)
                except compat.TLS_VERIFY_ERRORS as e:
                    raise TlsVerifyError("%s: certificate refused: %s" % (self._hostport, str(e).strip()))
                self._sock = sock
            self._io = compat.SockIO(sock, ms)
            self._io.deadline = self._deadline
        except BaseException as e:  # noqa: B036
            self._drop()
            raise self._error(e, self._hostport)
        self.handshakes += 1

    def _left_s(self):
        """Seconds a blocking step (connect, TLS handshake) may take: the timeout, cut to the deadline."""
        return compat.time_left(self._deadline, int(self.timeout_s * 1000)) / 1000

    def _error(self, e, what=None):
        """OSError -> Timeout or TransportError with where it happened; other exceptions unchanged."""
        if isinstance(e, TransportError) or not isinstance(e, OSError):
            return e
        where = "%s: %s" % (what or self._what, self._phase)
        if compat.is_timeout(e):
            if "deadline" in str(e):
                return Timeout("%s: not done within the request's deadline of %ss" % (where, self.deadline_s))
            return Timeout("%s: timed out after %ss" % (where, self.timeout_s))
        return TransportError("%s: %s" % (where, e))

    def _target(self, path):
        if "://" in path:
            u = split_url(path)
            if (u[0] == "https") != self.tls or u[1].lower() != self.host.lower() or u[2] != self.port:
                raise ValueError("URL not on this connection's origin")
            path = u[3]
        elif path.startswith("/"):
            path = self._prefix + path
        else:
            raise ValueError("request path must start with /")
        for c in path:
            if c <= " " or c == "\x7f":
                raise ValueError("space or control character in request path")
        return path

    # -- writing ----------------------------------------------------------------------------------

    def _send(self, method, target, extra, body, length, ctype):
        self._phase = "send"
        self._w = 0
        put = self._put
        put(method)
        put(" ")
        put(target)
        put(" HTTP/1.1\r\nHost: ")
        put(self._hosthdr)
        for name, value in extra:
            put("\r\n")
            put(name)
            put(": ")
            put(value)
        if ctype:
            put("\r\nContent-Type: ")
            put(ctype)
        if length is not None:
            put("\r\nContent-Length: ")
            put(str(length))
        put("\r\n\r\n")
        if length:
            if hasattr(body, "write_to"):
                self._left = length
                try:
                    body.write_to(self._put_body)
                except OSError as e:
                    if not isinstance(e, TransportError):
                        self._bad_body = True  # e.g. a flash read error: not the network's fault
                    raise
                if self._left:
                    self._bad_body = True
                    raise ValueError("streaming body wrote %d of its %d bytes" % (length - self._left, length))
            else:
                put(body)
        self._flush()

    def _put_body(self, chunk):
        self._left -= len(chunk)
        if self._left < 0:
            self._bad_body = True
            raise ValueError("streaming body wrote more than its length")
        try:
            self._put(chunk)
        except OSError as e:
            raise self._error(e)

    def _put(self, data):
        """Queue bytes (or ASCII str) for the socket through the buffer; big pieces go out directly."""
        if isinstance(data, str):
            data = data.encode()
        n = len(data)
        w = self._w
        cap = len(self._buf)
        if w + n <= cap:
            self._mv[w : w + n] = data
            self._w = w + n
            return
        if not isinstance(data, memoryview):
            data = memoryview(data)
        i = 0
        if w:  # top the buffer up first, so TLS records stay full
            i = cap - w
            self._mv[w:cap] = data[:i]
            self._w = cap
            self._flush()
        if n - i >= cap:
            self._io.send(data[i:])
        else:
            self._mv[0 : n - i] = data[i:]
            self._w = n - i

    def _flush(self):
        w = self._w
        if w:
            self._w = 0
            self._io.send(self._mv[0:w])

    # -- reading ----------------------------------------------------------------------------------

    def _fill(self, eof_ok=False):
        """Read more bytes after the unread ones in the buffer; the count, 0 only at EOF if eof_ok."""
        r0, r1 = self._r0, self._r1
        if r0 == r1:
            r0 = r1 = 0
        elif r1 == len(self._buf):  # a partial line at the end: move it to the front (rare)
            tail = bytes(self._mv[r0:r1])
            r1 -= r0
            r0 = 0
            self._mv[0:r1] = tail
        self._r0 = r0
        self._r1 = r1
        n = self._io.recv_into(self._mv[r1:])
        if n:
            self._got = True
            self._r1 = r1 + n
        elif not eof_ok:
            raise TransportError("%s: connection closed by the server (%s)" % (self._what, self._phase))
        return n

    def _line(self):
        """Next line of a head (without CRLF) as bytes, counted against self._budget."""
        acc = None  # only for a line longer than the buffer
        while True:
            i = self._buf.find(b"\n", self._r0, self._r1)
            used = (i if i >= 0 else self._r1) - self._r0 + (len(acc) if acc else 0)
            if used >= self._budget:
                raise ProtocolError("%s: response head over %d bytes" % (self._what, self.max_head))
            if i >= 0:
                self._budget -= used + 1
                line = self._mv[self._r0 : i]
                self._r0 = i + 1
                if acc is not None:
                    acc.extend(line)
                    line = acc
                line = bytes(line)
                return line[:-1] if line.endswith(b"\r") else line
            if self._r0 == 0 and self._r1 == len(self._buf):
                acc = acc or bytearray()
                acc.extend(self._buf)
                self._r1 = 0
            self._fill()

    def _head(self):
        """Status line and headers -> (status, reason, headers, is HTTP/1.0)."""
        self._budget = self.max_head
        line = self._line()
        if len(line) < 12 or line[:7] != b"HTTP/1." or line[8] != 32 or not line[9:12].isdigit():
            raise ProtocolError("%s: no HTTP/1.x status line" % self._what)
        headers = {}
        last = None
        while True:
            h = self._line()
            if not h:
                return int(line[9:12]), _text(line[13:]), headers, line[7] == 48
            if h[0] in (32, 9) and last:  # obsolete line folding
                headers[last] += " " + _text(h.strip())
                continue
            i = h.find(b":")
            if i <= 0:
                raise ProtocolError("%s: bad header line" % self._what)
            last = _text(h[:i].strip()).lower()
            value = _text(h[i + 1 :].strip())
            headers[last] = headers[last] + ", " + value if last in headers else value

    def _response(self, method, max_body):
        self._phase = "wait for response"
        status = 100
        while 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints: not the answer
            status, reason, headers, http10 = self._head()
        resp = Response(status, reason, headers, self._what)
        conn = headers.get("connection", "").lower()
        keep = ("keep-alive" in conn) if http10 else ("close" not in conn)
        length = 0
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if method == "HEAD" or status in (101, 204, 304):
            mode = _NONE
            keep = keep and status != 101
        elif te is not None:
            mode = _CHUNKED if te.lower().rstrip().endswith("chunked") else _UNTIL_CLOSE
        elif cl is not None:
            mode = _LENGTH
            cl = [v.strip() for v in cl.split(",")]  # a repeated header with one value is allowed
            if not cl[0].isdigit() or any(v != cl[0] for v in cl):
                raise ProtocolError("%s: bad Content-Length" % self._what)
            length = int(cl[0])
        else:
            mode = _UNTIL_CLOSE
        self._phase = "read body"
        self._keep = max_body
        self._stored = self._total = 0
        self._cut = False
        self._store = bytearray(length if length < max_body else max_body) if mode == _LENGTH else bytearray()
        if not self._body(mode, length, max_body) or self._r0 != self._r1:
            keep = False  # not fully read, or bytes nobody asked for
        st = self._store
        # The preallocated buffer of a Content-Length body is the body (a token answer is ~1 KB: a bytes
        # copy would need a second block that size at once); other bodies are copied to their size.
        resp.body = (st if len(st) == self._stored else bytes(st)) if self._stored else b""
        self._store = None
        resp.truncated = self._cut or self._total > self._stored
        if not keep:
            self._drop()
        return resp

    def _body(self, mode, length, max_body):
        """Read a body into self._store (up to max_body). True if the connection can carry another request."""
        if mode == _LENGTH:
            if length - max_body > self.drain_max:  # draining would cost more than a new connection
                self._take(max_body)
                self._cut = True
                return False
            self._take(length)
            return True
        limit = max_body + self.drain_max
        if mode == _CHUNKED:
            while True:
                self._budget = len(self._buf)
                size = self._line().split(b";")[0].strip()
                if not size or any(c not in _HEX for c in size):
                    raise ProtocolError("%s: bad chunk size" % self._what)
                size = int(size, 16)
                if not size:
                    break
                if self._total + size > limit:  # too much to drain: keep what fits, then close
                    self._take(min(size, max_body - self._stored))
                    self._cut = True
                    return False
                self._take(size)
                self._budget = 3
                if self._line():
                    raise ProtocolError("%s: chunk without CRLF" % self._what)
            self._budget = self.max_head
            while self._line():  # trailers: read and dropped
                pass
            return True
        if mode == _UNTIL_CLOSE:
            while self._total <= limit and (self._r0 < self._r1 or self._fill(True)):
                self._take(self._r1 - self._r0)
            return False
        return True

    def _take(self, n):
        """Consume the next n body bytes, keeping them while the store has room."""
        while n:
            if self._r0 == self._r1:
                self._fill()
            r0 = self._r0
            k = min(n, self._r1 - r0)
            c = min(k, self._keep - self._stored)
            if c > 0:
                if len(self._store) >= self._stored + c:  # preallocated (Content-Length)
                    self._store[self._stored : self._stored + c] = self._mv[r0 : r0 + c]
                else:
                    self._store.extend(self._mv[r0 : r0 + c])
                self._stored += c
            self._r0 = r0 + k
            self._total += k
            n -= k


def _token(s):
    for c in s:
        if c in "\r\n:" or c <= " ":
            raise ValueError("bad character in method or header name")


def _text(b):
    """bytes -> str; bytes that are not UTF-8 become '?' (header values are ASCII in practice)."""
    try:
        return b.decode()
    except UnicodeError:
        return "".join([chr(c) if c < 128 else "?" for c in b])
