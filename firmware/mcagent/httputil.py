"""The rarely needed parts of mcagent.http, imported on first use (a board pays heap for them only then):
the CONNECT proxy tunnel, Retry-After parsing and the texts of HTTP errors."""

from mcagent.http import HttpError, ProtocolError, ProxyError


def tunnel(conn):
    """Ask conn's proxy for a tunnel to conn's origin; the TLS handshake then runs through it."""
    conn._phase = "proxy CONNECT"
    put = conn._put
    put("CONNECT ")
    put(conn._hostport)
    put(" HTTP/1.1\r\nHost: ")
    put(conn._hostport)
    user = conn._proxy[4]
    if user is not None:
        import binascii

        u, _, p = user.partition(":")
        put("\r\nProxy-Authorization: Basic ")
        put(binascii.b2a_base64((unquote(u) + ":" + unquote(p)).encode(), newline=False))
    put("\r\n\r\n")
    conn._flush()
    status, reason, _, _ = conn._head()
    if not 200 <= status < 300:
        e = ProxyError("proxy refused CONNECT to %s: %d %s" % (conn._hostport, status, reason))
        e.status = status
        raise e
    if conn._r0 != conn._r1:
        raise ProtocolError("proxy sent bytes after accepting CONNECT")


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


def parse_retry_after(value, date=None, now_s=None):
    """Retry-After (delay-seconds or an HTTP date) -> seconds to wait (>= 0); None if unreadable.

    A date is measured against the response's own Date header when there is one (both come from the
    server's clock, so a wrong device clock does not matter), else against now_s or the device clock.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
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


def http_error(resp):
    return HttpError(
        resp.status,
        "HTTP %d %s (%s): %s" % (resp.status, resp.reason, resp.what, excerpt(resp.body)),
        resp.retry_after,
        resp.body,
    )


def json_error(resp):
    if resp.truncated:
        why = "is longer than max_body (%d bytes kept)" % len(resp.body)
    else:
        why = "is not valid JSON (%d bytes): %s" % (len(resp.body), excerpt(resp.body, 80))
    return ValueError("%s: HTTP %d body %s" % (resp.what, resp.status, why))
