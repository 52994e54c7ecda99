"""The rarely needed half of mcagent.http, imported on first use (a board pays heap for it only then): the
CONNECT proxy tunnel, absolute request URLs, bodies without a plain Content-Length (chunked, read until
close), Retry-After, and the making of every error with its message.

It reads and writes through the connection's buffer interface (http.Connection: write, flush, read_head,
read_line, fill, take; mv[r0:r1], budget, phase, what), never through its private members.
The exception classes stay in mcagent.http, so `except` clauses match whichever module raised."""

from mcagent import compat, http
from mcagent.http import MAX_HEAD, HttpError, TransportError, split_url

# the texts of http.Connection.phase (0 connect, 1 proxy, 2 TLS, 3 send, 4 wait, 5 body)
PHASES = ("connect", "proxy CONNECT", "TLS handshake", "send", "wait for response", "read body")
_HEX = "0123456789abcdefABCDEF"

_ERROR_CLASSES = ("TlsVerifyError", "Timeout", "ProtocolError", "ProxyError")


def exc_class(name):
    """The TransportError subclass http.<name>, made on first use (http.__getattr__) and kept in http."""
    if name not in _ERROR_CLASSES:
        raise AttributeError(name)
    cls = type(name, (TransportError,), {"__module__": "mcagent.http"})
    setattr(http, name, cls)
    return cls


# -- connection set-up -----------------------------------------------------------------------------------


def hostport(conn):
    """The origin as 'host:port' ('[::1]:443' for IPv6): what CONNECT asks for, and messages name."""
    h = conn.host
    return "%s:%d" % ("[%s]" % h if ":" in h else h, conn.port)


def on_origin(conn, url):
    """The path of an absolute URL on conn's origin (ValueError for another origin or a relative path)."""
    if "://" not in url:
        raise ValueError("request path must start with /")
    u = split_url(url)
    if (u[0] == "https") != conn.tls or u[1].lower() != conn.host.lower() or u[2] != conn.port:
        raise ValueError("URL not on this connection's origin")
    return u[3]


def tunnel(conn, user):
    """Ask conn's proxy (its socket I/O is set up, user: the proxy URL's "user:password" or None) for a
    tunnel to conn's origin; the TLS handshake then runs through it."""
    conn.phase = 1  # PHASES[1]
    target = hostport(conn)
    put = conn.write
    put("CONNECT ")
    put(target)
    put(" HTTP/1.1\r\nHost: ")
    put(target)
    if user is not None:
        import binascii

        u, _, p = user.partition(":")
        put("\r\nProxy-Authorization: Basic ")
        put(binascii.b2a_base64((unquote(u) + ":" + unquote(p)).encode(), newline=False))
    put("\r\n\r\n")
    conn.flush()
    status, reason, _, _ = conn.read_head()
    if not 200 <= status < 300:
        e = http.ProxyError("proxy refused CONNECT to %s: %d %s" % (target, status, reason))
        e.status = status
        raise e
    if conn.r0 != conn.r1:
        raise http.ProtocolError("proxy sent bytes after accepting CONNECT")


def unquote(s):
    """Percent-decoding (the user:password of a proxy URL)."""
    b = s.encode()
    out = bytearray()
    i = 0
    while i < len(b):
        if b[i] == 37 and i + 2 < len(b):  # %XX
            out.append(int(b[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b[i])
            i += 1
    return out.decode()


# -- errors ----------------------------------------------------------------------------------------------


def net_error(conn, e, target=None):
    """The exception to raise for e, met by conn: an OSError becomes a Timeout or TransportError saying where
    and in which phase, a certificate refused in the TLS handshake a TlsVerifyError; others stay as they are.
    target: when connecting failed, the address tried (the proxy's or (_, host, port)); e None: the name had
    no address."""
    if e is None:
        return TransportError("cannot resolve %s" % target[1])
    phase = conn.phase
    if phase == 2 and isinstance(e, compat.TLS_VERIFY_ERRORS):  # in the TLS handshake
        return http.TlsVerifyError("%s: certificate refused: %s" % (hostport(conn), str(e).strip()))
    if isinstance(e, TransportError) or not isinstance(e, OSError):
        return e
    if target is not None:
        where = "%s:%d" % (target[1], target[2])
    else:
        where = hostport(conn) if phase < 3 else conn.what  # opening a connection, or a request
    where += ": " + PHASES[phase]
    if compat.is_timeout(e):
        if "deadline" in str(e):
            return http.Timeout(
                "%s: not done within the request's deadline of %ss" % (where, conn.deadline_s)
            )
        return http.Timeout("%s: timed out after %ss" % (where, conn.timeout_s))
    return TransportError("%s: %s" % (where, e))


# The errors http and this module raise with a fixed text, by key (http passes the key: a short name costs
# it less heap than the text): (class, text). A str class names an http.TransportError subclass; with a
# connection, the text follows its request ("METHOD /path: ...").
_ERRORS = {
    "token": (ValueError, "bad character in method or header name"),
    "path": (ValueError, "space or control character in request path"),
    "crlf": (ValueError, "CR/LF in a header value"),
    "ours": (ValueError, "%s is set by the connection"),  # arg: the header's name
    "length": (ValueError, "streaming body length must be an int >= 0"),
    "fewer": (ValueError, "streaming body wrote %d of its %d bytes"),  # arg: (written, length)
    "more": (ValueError, "streaming body wrote more than its length"),
    "resolve": (TransportError, "cannot resolve %s: %s"),  # arg: (host, error)
    "closed": (TransportError, "connection closed by the server (%s)"),  # arg: the phase
    "status": ("ProtocolError", "no HTTP/1.x status line"),
    "header": ("ProtocolError", "bad header line"),
    "head": ("ProtocolError", "response head over %d bytes" % MAX_HEAD),
    "content-length": ("ProtocolError", "bad Content-Length"),
    "chunk": ("ProtocolError", "bad chunk size"),
    "chunk end": ("ProtocolError", "chunk without CRLF"),
}


def error(why, conn=None, arg=None):
    """The exception for `why`, a key of _ERRORS ("closed" with conn: the phase is filled in). arg: what
    the text's %s/%d take."""
    if why == "closed":
        arg = PHASES[conn.phase]
    cls, text = _ERRORS[why]
    if arg is not None:
        text = text % arg
    if conn is not None:
        text = conn.what + ": " + text
    return (getattr(http, cls) if isinstance(cls, str) else cls)(text)


def ascii_text(b):
    """bytes that are not UTF-8 -> str, other bytes as '?'."""
    return "".join([chr(c) if c < 128 else "?" for c in b])


# -- bodies without a plain Content-Length ---------------------------------------------------------------


def read_body(conn, resp, method, max_body):
    """Read the body of an answer other than a plain Content-Length within max_body into resp (up to
    max_body; the rest drained up to conn.drain_max, else the connection is closed): none (HEAD, 204,
    304, 101), chunked, until close, longer than max_body, a repeated Content-Length. True if the
    connection can carry another request."""
    headers = resp.headers
    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if method == "HEAD" or resp.status in (101, 204, 304):
        return resp.status != 101
    limit = max_body + conn.drain_max
    total = 0
    keep = True
    if te is None and cl is not None:
        cl = [v.strip() for v in cl.split(",")]  # "5, 5": a repeated header with one value is allowed
        if not compat.digits(cl[0]) or any(v != cl[0] for v in cl):
            raise error("content-length", conn)
        total = int(cl[0])
        body = bytearray(min(total, max_body))  # the body's final buffer, as http does
        conn.take(len(body), memoryview(body))
        if total - len(body) > conn.drain_max:  # draining would cost more than a new connection
            keep = False
        else:
            conn.take(total - len(body))
        if body:
            resp.body = body
        resp.truncated = total > len(body)
        return keep
    body = bytearray()
    if te is not None and te.lower().rstrip().endswith("chunked"):
        while True:
            conn.budget = len(conn.mv)
            size = conn.read_line().split(";")[0].strip()
            if not size or any(c not in _HEX for c in size):
                raise error("chunk", conn)
            size = int(size, 16)
            if not size:
                break
            k = min(size, max_body - len(body))
            total += size
            if total > limit:  # too much to drain: keep what fits, then close
                _keep(conn, body, k)
                keep = False
                break
            _keep(conn, body, k)
            conn.take(size - k)
            conn.budget = 3
            if conn.read_line():
                raise error("chunk end", conn)
        if keep:
            conn.budget = MAX_HEAD
            while conn.read_line():  # trailers: read and dropped
                pass
    else:  # the body ends when the server closes the connection
        keep = False
        while total <= limit:
            if conn.r0 == conn.r1:
                try:
                    conn.fill()
                except TransportError:  # only the end of the stream (read errors are OSError)
                    break
            k = conn.r1 - conn.r0
            total += k
            _keep(conn, body, min(k, max_body - len(body)))
            conn.r0 = conn.r1
    if body:
        resp.body = bytes(body)
    resp.truncated = total > len(body)
    return keep


def _keep(conn, body, n):
    """Append the next n body bytes to body."""
    while n > 0:
        if conn.r0 == conn.r1:
            conn.fill()
        r0 = conn.r0
        k = min(n, conn.r1 - r0)
        body.extend(conn.mv[r0 : r0 + k])
        conn.r0 = r0 + k
        n -= k


# -- answers ---------------------------------------------------------------------------------------------


def retry_after(resp):
    """Response.retry_after: seconds from its Retry-After header (delay or HTTP date), or None."""
    h = resp.headers
    return parse_retry_after(h["retry-after"], h.get("date")) if "retry-after" in h else None


def parse_retry_after(value, date=None, now_s=None):
    """Retry-After (delay-seconds or an HTTP date) -> seconds to wait (>= 0); None if unreadable.

    A date is measured against the response's own Date header when there is one (both come from the
    server's clock, so a wrong device clock does not matter), else against now_s or the device clock.
    """
    if not value:
        return None
    value = value.strip()
    if compat.digits(value):
        return int(value)
    from mcagent import clock

    try:
        when = clock.parse_http_date(value)
    except ValueError:
        return None
    now = now_s
    if date:
        try:
            now = clock.parse_http_date(date)
        except ValueError:
            pass
    if now is None:
        now = clock.Clock().now_s()
    return max(0, when - now)


def excerpt(body, n=200):
    """A printable one-line excerpt of a body for messages (other bytes become '?')."""
    part = bytearray(body[:n])
    for i in range(len(part)):
        if not 32 <= part[i] <= 126:
            part[i] = 63
    return part.decode() + ("..." if len(body) > n else "")


def http_error(resp, what=None):
    """The HttpError for an unexpected answer (the one maker of them: Response.raise_for_status, identity,
    enrolment, DSC): status, Retry-After, the body and a message with a printable excerpt of it, never a
    request header. what: the step that failed ("onboarding"), put before the message.

    A success status the step did not expect (a 2xx) says nothing of its body: a successful answer may carry a
    secret (a registration's client secret, an access token), and messages reach logs and status()."""
    body = resp.body if resp.status >= 300 else b""
    shown = excerpt(body) if body else "(body not shown)"
    text = "HTTP %d %s (%s): %s" % (resp.status, resp.reason, resp.what, shown)
    return HttpError(resp.status, what + ": " + text if what else text, retry_after(resp), body)


def json_error(resp):
    if resp.truncated:
        why = "is longer than max_body (%d bytes kept)" % len(resp.body)
    else:
        why = "is not valid JSON (%d bytes): %s" % (len(resp.body), excerpt(resp.body, 80))
    return ValueError("%s: HTTP %d body %s" % (resp.what, resp.status, why))
