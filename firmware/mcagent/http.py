"""HTTP/1.1 client for the agent: one keep-alive connection, verified TLS, streamed bodies, bounded responses.

Why not micropython-lib `requests`: it never verifies the server certificate, builds bodies in RAM and
reads whole responses into RAM. Here:
- TLS always verifies the server against the DER CA certificates given (SNI and host-name check); nothing
  turns that off. Plain http:// only where the base URL says so. A refused certificate raises
  TlsVerifyError from the handshake, before any request byte is written.
- One socket carries many requests (keep-alive); the resend rule for a dropped connection is in
  Connection.request.
- Request bodies (bytes, or a streaming body with .length/.content_type/.write_to) go out with
  Content-Length through the connection's one buffer; response heads are capped (MAX_HEAD), bodies kept
  up to max_body and the rest drained (or the connection closed when draining would cost more).
- Nothing here logs or prints: request headers carry tokens, and no error message quotes them.

Heap: on a board this module's bytecode lives in the GC heap for the whole upload, so it holds only what a
keep-alive request answered with a Content-Length needs. Everything else (proxy tunnel, chunked and
read-until-close bodies, absolute URLs, Retry-After, the error classes but two, the text of every error)
is in mcagent.httputil, imported on first use; what a Connection needs once when it is made (URL parsing,
argument checks) is in mcagent.httpsetup, loaded for that and unloaded again.
"""

import socket

from micropython import const

from mcagent import compat

MAX_HEAD = const(8192)  # status line + headers (or chunked trailers) beyond this: ProtocolError
_MIN_RATE = const(2048)  # bytes/s of request body the deadline allows for on top of deadline_s
_DRAIN_MAX = const(65536)  # unread body bytes worth draining to keep a connection; beyond: close it

# Connection.phase: where a request is, for error messages (texts in httputil.PHASES, same order)
_CONNECT = const(0)
_PROXY = const(1)
_TLS = const(2)
_SEND = const(3)
_WAIT = const(4)
_BODY = const(5)


class TransportError(OSError):
    """The exchange failed below HTTP: name resolution, connect, TLS, reset, EOF, a malformed response.

    Its subclasses are made on first use, by __getattr__ below: TlsVerifyError (the server's certificate or
    host name was refused by the handshake, before any request byte), Timeout (no progress within timeout_s
    while connecting, handshaking, writing or reading; or the request's deadline passed), ProtocolError (the
    peer's bytes are not HTTP/1.x as accepted here: bad status line, head over the cap, bad chunk) and
    ProxyError (the CONNECT proxy refused the tunnel; .status is its answer, e.g. 407, 502).
    """


def __getattr__(name):
    """http.Timeout, http.TlsVerifyError, http.ProtocolError, http.ProxyError: each class costs ~120 bytes
    of heap and most wakes raise none, so httputil makes one the first time it is needed and keeps it in
    this module (it stays the same class for every `except`, even if httputil is unloaded)."""
    return _cold("exc_class", name)


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


def _cold(fn, *args):
    """fn(*args) of mcagent.httputil, the rarely needed half of this client. It is loaded for the call and
    unloaded after (it keeps no state): a wake that met one error or one chunked answer does not keep its
    ~6 KB of code through the rest of the upload."""
    return compat.call_cold("mcagent.httputil", fn, *args)


def split_url(url):
    """'scheme://[user:pass@]host[:port][/path][?query]' -> (scheme, host, port, path, userinfo).

    http and https only; path keeps the query and defaults to '/'. Messages never quote the URL (a proxy
    URL may carry a password). The parser is in mcagent.httpsetup, loaded for the call.
    """
    return compat.call_cold("mcagent.httpsetup", "split_url", url)


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
        return _cold("retry_after", self)

    def json(self):
        """The body parsed as JSON; ValueError with a clear message if it was cut off or is not JSON."""
        import json

        if not self.truncated:
            try:
                return json.loads(self.body)
            except (ValueError, RuntimeError):  # RuntimeError: nested too deep (CPython's RecursionError)
                pass
        raise _cold("json_error", self)

    def raise_for_status(self):
        """Raise HttpError for 4xx/5xx (status, Retry-After, body excerpt); return self otherwise."""
        if self.status >= 400:
            raise _cold("http_error", self)
        return self


class Connection:
    """One keep-alive HTTP/1.1 connection to the origin of base_url, opened on first use.

    ca_ders: list of DER CA certificates (bytes, or paths of DER files) the https server must chain to
    (required for https).
    proxy: None or "http://[user:pass@]host:port" of an HTTP CONNECT proxy (Basic auth with user:pass).
    timeout_s: inactivity timeout of each connect, handshake, write and read. deadline_s (default 4 x
    timeout_s, plus a second per 2 KB of request body): the whole request, from connecting to the last
    byte of the answer, whatever a server drips; past it the connection is dropped with Timeout.
    drain_max: unread body bytes worth draining to keep the connection (64 KB; beyond: closed instead).
    Counters: handshakes (connections opened: TLS handshakes on https), requests (answers received),
    reopened (idle connections found closed by the server and replaced before sending), resent.

    The buffer interface its cold half (mcagent.httputil: proxy tunnel, chunked and until-close bodies,
    errors) works through, not meant for users: write(data) / flush() queue and send request bytes;
    fill() reads more into the buffer, whose unread bytes are mv[r0:r1] (TransportError at the end of the
    stream); read_line() (at most `budget` more bytes), read_head() -> (status, reason, headers, HTTP/1.0),
    take(n, into=None) consume them; phase (where the request is: connect .. read body) and what
    ("METHOD /path") say where an error happened.
    """

    def __init__(self, base_url, ca_ders=(), proxy=None, timeout_s=30, buf_size=1024, deadline_s=None):
        # host, port, tls, _prefix, _hosthdr, _ctx, _proxy; ValueError/TypeError for a bad argument
        compat.call_cold("mcagent.httpsetup", "setup", self, base_url, ca_ders, proxy)
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s or 4 * timeout_s
        self.drain_max = _DRAIN_MAX
        self._buf = bytearray(buf_size)
        self.mv = memoryview(self._buf)
        self._sock = self._io = None
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
        _check(method, b":", "token")
        path = self._prefix + path if path.startswith("/") else _cold("on_origin", self, path)
        _check(path, b"\x7f", "path")
        extra = []  # (name, value) of every header after Host
        typed = close = False
        if hasattr(headers, "items"):
            headers = headers.items()
        for name, value in headers or ():
            name = str(name)
            if not isinstance(value, str):
                value = str(value)  # str(a str) copies it on MicroPython: a token is ~1 KB
            _check(name, b":", "token")
            if "\r" in value or "\n" in value:
                raise _cold("error", "crlf")
            low = name.lower()
            if low in ("host", "content-length", "transfer-encoding"):
                raise _cold("error", "ours", None, name)
            typed = typed or low == "content-type"
            close = close or low == "connection" and "close" in value.lower()
            extra.append((name, value))
        length = None
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            if hasattr(body, "write_to"):
                length = body.length
                if not isinstance(length, int) or length < 0:
                    raise _cold("error", "length")
                ctype = getattr(body, "content_type", None)
                if ctype and not typed:  # the caller's Content-Type wins
                    extra.append(("Content-Type", ctype))
            else:
                length = len(body)
        elif method in ("POST", "PUT", "PATCH"):
            length = 0
        if length is not None:
            extra.append(("Content-Length", str(length)))
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        self.what = method + " " + path.split("?")[0]
        ms = int((self.deadline_s + (length or 0) // _MIN_RATE) * 1000)
        self._deadline = compat.ticks_add(compat.ticks_ms(), ms)
        retried = False
        while True:
            if self._io is not None and not self._io.idle_ok():
                self.close()  # the server closed it while idle: nothing was sent, any method may go again
                self.reopened += 1
            fresh = self._io is None
            self.r0 = self.r1 = self._w = 0  # on a reused connection, r1 > 0 means: the answer began
            if fresh:
                self._open()
            self._io.deadline = self._deadline
            self._bad_body = sent = False
            try:
                self._send(method, path, extra, body, length)
                sent = True
                resp = self._response(method, max_body)
            except BaseException as e:  # noqa: B036 - the socket is in an unknown state: never reuse it
                self.close()
                if self._bad_body:
                    raise
                e = _cold("net_error", self, e)
                if (
                    not (retried or fresh or self.r1)
                    and type(e) is TransportError
                    and (idempotent or not sent)
                ):
                    retried = True
                    self.resent += 1
                    continue
                raise e
            self.requests += 1
            if close:
                self.close()
            return resp

    def close(self, *exc):
        """Close the socket (the next request opens a new connection)."""
        sock = self._sock
        self._sock = self._io = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    __exit__ = close  # the end of a with block closes the connection

    def __enter__(self):
        return self

    def _open(self):
        self.phase = _CONNECT
        p = self._proxy or (None, self.host, self.port)
        ms = int(self.timeout_s * 1000)
        try:
            infos = socket.getaddrinfo(p[1], p[2], 0, socket.SOCK_STREAM)
        except OSError as e:
            raise _cold("error", "resolve", None, (p[1], e))
        err = None
        for ai in infos:  # e.g. localhost -> ::1, then 127.0.0.1
            sock = socket.socket(ai[0], socket.SOCK_STREAM)
            try:
                compat.blocking(sock, compat.time_left(self._deadline, ms) / 1000)
                sock.connect(ai[-1])  # MicroPython: [-1] is a ready sockaddr; CPython: a tuple
                break
            except OSError as e:
                sock.close()
                err = e
        else:
            raise _cold("net_error", self, err, p)
        self._sock = sock
        try:
            if self._proxy:  # CONNECT over the plain socket first
                self._io = compat.SockIO(sock, ms)
                self._io.deadline = self._deadline
                _cold("tunnel", self, self._proxy[4])
            if self._ctx is not None:
                self.phase = _TLS  # a refused certificate: TlsVerifyError (httputil.net_error)
                compat.blocking(sock, compat.time_left(self._deadline, ms) / 1000)
                sock = self._sock = compat.tls_wrap(self._ctx, sock, self.host)
            self._io = compat.SockIO(sock, ms)
        except BaseException as e:  # noqa: B036
            self.close()
            raise _cold("net_error", self, e)
        self.handshakes += 1

    # -- writing ----------------------------------------------------------------------------------

    def _send(self, method, path, extra, body, length):
        self.phase = _SEND
        put = self.write
        put(method)
        put(" ")
        put(path)
        put(" HTTP/1.1\r\nHost: ")
        put(self._hosthdr)
        for name, value in extra:
            put("\r\n")
            put(name)
            put(": ")
            put(value)
        put("\r\n\r\n")
        if length:
            if hasattr(body, "write_to"):
                self.budget = length
                # While write_to runs, a failure is the body's (e.g. a flash read error), not the network's:
                # it is raised as it is, never resent. _put_body clears the flag while it sends.
                self._bad_body = True
                body.write_to(self._put_body)
                if self.budget:
                    raise _cold("error", "fewer", None, (length - self.budget, length))
                self._bad_body = False
            else:
                put(body)
        self.flush()

    def _put_body(self, data):
        """The write() a streaming body writes through: stops it at its length."""
        self.budget -= len(data)
        if self.budget < 0:
            raise _cold("error", "more")
        self._bad_body = False  # a failure to send is the network's
        self.write(data)
        self._bad_body = True

    def write(self, data):
        """Queue bytes (or str) for the socket through the buffer; big pieces go out directly. A str is read
        in place on MicroPython (compat.utf8): the ~1 KB Authorization value is not copied per request."""
        if isinstance(data, str):
            data = memoryview(compat.utf8(data))
        n = len(data)
        w = self._w
        cap = len(self._buf)
        if w + n <= cap:
            self.mv[w : w + n] = data
            self._w = w + n
            return
        if not isinstance(data, memoryview):
            data = memoryview(data)
        i = 0
        if w:  # top the buffer up first, so TLS records stay full
            i = cap - w
            self.mv[w:cap] = data[:i]
            self._w = cap
            self.flush()
        if n - i >= cap:
            self._io.send(data[i:])
        else:
            self.mv[0 : n - i] = data[i:]
            self._w = n - i

    def flush(self):
        w = self._w
        if w:
            self._w = 0
            self._io.send(self.mv[0:w])

    # -- reading: the buffer holds the unread bytes mv[r0:r1] -------------------------------------------

    def fill(self):
        """Read more bytes into the buffer, whose bytes the caller has consumed; EOF: TransportError."""
        n = self._io.recv_into(self.mv)
        if not n:
            raise _cold("error", "closed", self)
        self.r0 = 0
        self.r1 = n

    def read_line(self):
        """Next line of a head (without CRLF) as str (bytes that are not UTF-8 become '?'); ProtocolError
        once the head passes self.budget."""
        line = b""
        while True:
            r0 = self.r0
            i = self._buf.find(b"\n", r0, self.r1)
            end = self.r1 if i < 0 else i + 1
            self.budget -= end - r0
            if self.budget < 0:
                raise _cold("error", "head", self)
            line += self.mv[r0:end]
            self.r0 = end
            if i >= 0:
                line = line.rstrip(b"\r\n")
                try:
                    return line.decode()
                except UnicodeError:
                    return _cold("ascii_text", line)
            self.fill()

    def read_head(self):
        """Status line and headers -> (status, reason, headers, is HTTP/1.0)."""
        self.budget = MAX_HEAD
        line = self.read_line()
        # Slices, not line[i]: a character taken from a str is interned for good on MicroPython.
        if len(line) < 12 or line[:7] != "HTTP/1." or line[8:9] != " " or not compat.digits(line[9:12]):
            raise _cold("error", "status", self)
        headers = {}
        last = None
        while True:
            h = self.read_line()
            if not h:
                return int(line[9:12]), line[13:], headers, line[7:8] == "0"
            if h[:1] in (" ", "\t") and last:  # obsolete line folding
                headers[last] += " " + h.strip()
                continue
            i = h.find(":")
            if i <= 0:
                raise _cold("error", "header", self)
            last = h[:i].strip().lower()
            value = h[i + 1 :].strip()
            headers[last] = headers[last] + ", " + value if last in headers else value

    def _response(self, method, max_body):
        self.phase = _WAIT
        status = 100
        while 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints: not the answer
            status, reason, headers, http10 = self.read_head()
        resp = Response(status, reason, headers, self.what)
        conn = headers.get("connection", "").lower()
        keep = ("keep-alive" in conn) if http10 else ("close" not in conn)
        self.phase = _BODY
        n = headers.get("content-length", "")
        if (
            compat.digits(n)
            and int(n) <= max_body
            and method != "HEAD"
            and status not in (101, 204, 304)
            and "transfer-encoding" not in headers
        ):
            # The usual answer, read into its final buffer: a token answer is ~1 KB, and a bytes copy would
            # need a second block that size at once.
            body = bytearray(int(n))
            self.take(len(body), memoryview(body))
            if body:
                resp.body = body
        else:  # no body, chunked, until close, longer than max_body, a repeated Content-Length
            keep = _cold("read_body", self, resp, method, max_body) and keep
        if not keep or self.r0 != self.r1:  # not fully read, or bytes nobody asked for
            self.close()
        return resp

    def take(self, n, into=None):
        """Consume the next n body bytes, copying them into the memoryview `into` (n bytes) if given."""
        i = 0
        while i < n:
            if self.r0 == self.r1:
                self.fill()
            r0 = self.r0
            k = min(n - i, self.r1 - r0)
            if into is not None:
                into[i : i + k] = self.mv[r0 : r0 + k]
            self.r0 = r0 + k
            i += k


def _check(s, bad, why):
    """ValueError (httputil.error(why)) if s has a space, a control character or a byte of bad. It scans
    the UTF-8 bytes: a character taken from a str is interned for good on MicroPython."""
    for c in memoryview(compat.utf8(s)):
        if c <= 32 or c in bad:
            raise _cold("error", why)
