"""mcagent.http against real local servers (fixtures_http): verified TLS, keep-alive, bodies, errors, proxy.

Runs under CPython and the MicroPython Unix port. Server-side counters are read through the control server
(plain HTTP, a raw socket here, so the client under test does not check itself).
"""

import hashlib
import json
import socket
import time

from checks import is_micropython, raises
from mcagent import http

UPY_MPY = True  # import the firmware precompiled, as on a board


# -- helpers ------------------------------------------------------------------------------------------


def der(path):
    with open(path, "rb") as f:
        return f.read()


def connect(env, url=None, ca="ca_der", **kw):
    return http.Connection(url or env["https"], [der(env[ca])], **kw)


def stats(env, name, settle=False):
    """Counters of one test server, from the control server (raw socket, HTTP/1.0, closed after)."""
    host, port = env["control"]
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], socket.SOCK_STREAM)
    s.connect(ai[-1])
    query = "?settle=1" if settle else ""
    s.send(f"GET /stats/{name}{query} HTTP/1.0\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


_PAT = bytes(range(251)) * 6  # pattern(n)[i] == i % 251, as the servers send it


def pattern(n):
    out = bytearray(n)
    mv = memoryview(_PAT)
    i = 0
    while i < n:
        k = min(1000, n - i)
        out[i : i + k] = mv[i % 251 : i % 251 + k]
        i += k
    return bytes(out)


def hexdigest(data):
    import binascii

    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def ms():
    if is_micropython():
        return time.ticks_ms()
    return int(time.monotonic() * 1000)


class PatternBody:
    """A streaming body: `length` pattern bytes, written through one reused buffer of `piece` bytes."""

    content_type = "application/octet-stream"

    def __init__(self, length, piece=700, lie=0):
        self.length = length
        self._buf = bytearray(piece)
        self._lie = lie  # write this many bytes more (or fewer) than length
        self.calls = 0

    def write_to(self, write):
        self.calls += 1
        n = self.length + self._lie
        src = memoryview(_PAT)
        mv = memoryview(self._buf)
        i = 0
        while i < n:
            k = min(len(self._buf), n - i, 1000)
            mv[0:k] = src[i % 251 : i % 251 + k]
            write(mv[0:k])
            for j in range(k):  # the writer must have consumed the chunk: scribble over it
                self._buf[j] = 0
            i += k


def test_split_url():
    assert http.split_url("https://h") == ("https", "h", 443, "/", None)
    assert http.split_url("HTTP://u:p@w@h:81/a/b?q=1#f") == ("http", "h", 81, "/a/b?q=1", "u:p@w")
    assert http.split_url("https://[::1]:8443?x") == ("https", "::1", 8443, "/?x", None)
    assert http.split_url("https://[::1]") == ("https", "::1", 443, "/", None)
    for bad in ("h/x", "ftp://h/", "https://", "https://h:0/", "https://h:x/", "https://:80/"):
        raises(ValueError, http.split_url, bad)


def test_error_classes_made_on_first_use_stay_the_same():
    """Timeout, TlsVerifyError, ProtocolError, ProxyError are made by httputil when first needed (heap) and
    kept in http: the same class for every except clause, whichever module raised."""
    for name in ("Timeout", "TlsVerifyError", "ProtocolError", "ProxyError"):
        cls = getattr(http, name)
        assert cls is getattr(http, name) and issubclass(cls, http.TransportError) and cls.__name__ == name
    raises(AttributeError, getattr, http, "NoSuchThing")


# -- happy paths --------------------------------------------------------------------------------------


def test_keep_alive_two_requests_one_handshake(http_env):
    with connect(http_env) as c:
        r1 = c.request("GET", "/echo?x=1", {"X-Test": "one"})
        r2 = c.request("POST", "/echo", {"Content-Type": "application/json"}, b'{"a": 1}')
        assert (r1.status, r2.status) == (200, 200)
        d1, d2 = r1.json(), r2.json()
        assert d1["method"] == "GET" and d1["target"] == "/echo?x=1"
        assert d1["headers"]["x-test"] == "one"
        assert d1["headers"]["host"] == http_env["https"].split("//")[1]
        assert d2["method"] == "POST" and d2["length"] == 8
        assert d2["headers"]["content-type"] == "application/json"
        assert d2["sha256"] == hexdigest(b'{"a": 1}')
        assert d1["conn"] == d2["conn"] and d2["nth"] == 2
        assert (c.handshakes, c.requests, c.reopened, c.resent) == (1, 2, 0, 0)
        assert r1.headers["content-type"] == "application/json" and not r1.truncated
    st = stats(http_env, "good")
    assert (st["connections"], st["handshakes"], st["requests"]) == (1, 1, 2)
    assert st["sni"] == ["localhost"]


def test_base_url_path_prefix_and_absolute_url(http_env):
    with connect(http_env, http_env["https"] + "/api/") as c:
        assert c.request("GET", "/x").status == 404
        assert c.request("GET", http_env["https"] + "/echo?q=1").json()["target"] == "/echo?q=1"
        raises(ValueError, c.request, "GET", "https://elsewhere.example/echo")
        raises(ValueError, c.request, "GET", "no-slash")
    assert stats(http_env, "good")["paths"] == ["/api/x", "/echo"]


def test_streaming_body_exact_and_resendable(http_env):
    body = PatternBody(50000, piece=700)
    with connect(http_env) as c:
        d = c.request("PUT", "/echo", None, body).json()
        assert d["length"] == 50000 and d["sha256"] == hexdigest(pattern(50000))
        assert d["headers"]["content-type"] == "application/octet-stream"
        assert d["headers"]["content-length"] == "50000"
        # caller's Content-Type wins; a str body is UTF-8; an empty POST says Content-Length: 0
        d = c.request("POST", "/echo", {"Content-Type": "text/plain"}, PatternBody(3, 2)).json()
        assert d["headers"]["content-type"] == "text/plain" and d["sha256"] == hexdigest(pattern(3))
        assert c.request("POST", "/echo", None, "h\u00e9").json()["length"] == 3
        assert c.request("POST", "/echo").json()["headers"]["content-length"] == "0"
        # pieces larger than the 1 KiB buffer: a long header and a bytes body go out directly
        d = c.request("POST", "/echo", {"X-Big": "y" * 3000}, pattern(5000)).json()
        assert d["headers"]["x-big"] == "y" * 3000 and d["sha256"] == hexdigest(pattern(5000))
        assert c.handshakes == 1
    assert body.calls == 1


def test_streaming_body_of_wrong_length_is_refused(http_env):
    with connect(http_env) as c:
        e = raises(ValueError, c.request, "POST", "/echo", None, PatternBody(5000, lie=1))
        assert "more" in str(e)
        e = raises(ValueError, c.request, "POST", "/echo", None, PatternBody(5000, lie=-1))
        assert "4999" in str(e)
        assert c.request("GET", "/echo").status == 200  # a new connection: the old one was abandoned
    assert stats(http_env, "good")["requests"] == 1


def test_chunked_response_with_trailers(http_env):
    with connect(http_env) as c:
        r = c.request("GET", "/bytes?n=5000&chunked=1&chunk=700&trailer=1", max_body=8000)
        assert r.status == 200 and r.body == pattern(5000) and not r.truncated
        r = c.request("GET", "/bytes?n=0&chunked=1")
        assert r.body == b"" and not r.truncated
        assert c.request("GET", "/echo").status == 200
        assert c.handshakes == 1


def test_large_body_truncated_then_drained_or_closed(http_env):
    with connect(http_env) as c:
        r = c.request("GET", "/bytes?n=20000", max_body=100)
        assert r.body == pattern(100) and r.truncated
        r = c.request("GET", "/bytes?n=20000&chunked=1&chunk=3000", max_body=100)
        assert r.body == pattern(100) and r.truncated
        r = c.request("GET", "/bytes?n=100", max_body=100)
        assert r.body == pattern(100) and not r.truncated
        assert c.handshakes == 1  # drained: the connection was kept
        c.drain_max = 4096
        r = c.request("GET", "/bytes?n=20000", max_body=100)
        assert r.body == pattern(100) and r.truncated
        r = c.request("GET", "/bytes?n=20000&chunked=1&chunk=1000", max_body=100)
        assert r.body == pattern(100) and r.truncated
        assert c.request("GET", "/echo").status == 200
        assert c.handshakes == 3  # too much to drain: closed instead, twice


def test_connection_close_http10_and_read_until_close(http_env):
    with connect(http_env) as c:
        assert c.request("GET", "/close").body == b"bye"
        assert c.request("GET", "/http10").body == b"old"
        r = c.request("GET", "/eof?n=3000", max_body=5000)
        assert r.body == pattern(3000) and not r.truncated
        r = c.request("GET", "/eof?n=3000", max_body=10)
        assert r.body == pattern(10) and r.truncated
        assert c.request("GET", "/echo", {"Connection": "close"}).status == 200
        assert c.request("GET", "/echo").status == 200
        assert c.handshakes == 6 and c.requests == 6


def test_informational_no_content_and_head(http_env):
    with connect(http_env) as c:
        r = c.request("GET", "/continue")
        assert (r.status, r.body) == (200, b"after")
        r = c.request("GET", "/nocontent")
        assert (r.status, r.body) == (204, b"")
        r = c.request("HEAD", "/bytes?n=500")
        assert r.status == 200 and r.headers["content-length"] == "500" and r.body == b""
        assert c.request("GET", "/echo").status == 200
        assert c.handshakes == 1


def test_long_header_line_and_head_cap(http_env):
    with connect(http_env) as c:
        r = c.request("GET", "/headers?n=1&size=3000")  # one line longer than the 1 KiB buffer
        assert r.headers["x-filler-0"] == "v" * 3000
        r = c.request("GET", "/headers?n=30&size=100")
        assert len(r.headers) > 30
        e = raises(http.ProtocolError, c.request, "GET", "/headers?n=100&size=100")
        assert "8192" in str(e)
        assert isinstance(e, http.TransportError)
        assert c.request("GET", "/echo").status == 200


def test_malformed_responses(http_env):
    with connect(http_env) as c:
        raises(http.ProtocolError, c.request, "GET", "/garbage")
        raises(http.ProtocolError, c.request, "GET", "/badchunk")
        assert c.request("GET", "/echo").status == 200
    with connect(http_env) as c:
        e = raises(http.ProtocolError, c.request, "GET", "/superscript-length")
        assert "Content-Length" in str(e)
    with connect(http_env) as c:
        r = c.request("GET", "/deep-json", max_body=8000)
        try:
            r.json()  # MicroPython's parser takes any depth; CPython's gives up: a ValueError, not a crash
        except ValueError as e:
            assert "not valid JSON" in str(e)


# -- stale connections and the resend rule --------------------------------------------------------


def test_idle_connection_closed_by_server_is_reopened(http_env):
    with connect(http_env) as c:
        assert c.request("GET", "/bye").body == b"bye"
        time.sleep(0.3)  # the server hangs up meanwhile
        d = c.request("POST", "/echo", None, b"data").json()  # any method: nothing was sent on the dead one
        assert d["nth"] == 1 and d["length"] == 4
        assert (c.reopened, c.resent, c.handshakes, c.requests) == (1, 0, 2, 2)
    st = stats(http_env, "good")
    assert (st["handshakes"], st["requests"]) == (2, 2)


def test_request_lost_on_reused_connection_resent_once_if_idempotent(http_env):
    with connect(http_env) as c:
        c.request("GET", "/arm-drop")  # the server will close when the next request arrives
        d = c.request("GET", "/echo").json()
        assert d["nth"] == 1 and c.resent == 1
        c.request("GET", "/arm-drop")
        e = raises(http.TransportError, c.request, "POST", "/echo", None, b"x")  # may have been acted on
        assert not isinstance(e, http.Timeout)
        assert c.resent == 1
        c.request("GET", "/arm-drop")
        assert c.request("POST", "/echo", None, b"x", idempotent=True).status == 200
        assert c.resent == 2
    st = stats(http_env, "good")
    assert st["dropped"] == 3 and st["requests"] == 8


def test_failure_on_a_fresh_connection_is_not_resent(http_env):
    with connect(http_env) as c:
        raises(http.TransportError, c.request, "GET", "/hangup")
        assert c.resent == 0
    assert stats(http_env, "good")["requests"] == 1


# -- errors, statuses, Retry-After --------------------------------------------------------------------


def test_error_statuses_returned_and_raised(http_env):
    with connect(http_env) as c:
        secret = {"Authorization": "Bearer s3cr3t"}
        r = c.request("POST", "/status?code=503&retry_after=7&body=busy", secret, b"x")
        assert r.status == 503 and r.body == b"busy" and r.retry_after == 7
        e = raises(http.HttpError, r.raise_for_status)
        assert (e.status, e.retry_after, e.body) == (503, 7, b"busy")
        assert "busy" in str(e) and "503" in str(e) and "s3cr3t" not in str(e) and "Bearer" not in str(e)
        r = c.request("GET", "/status?code=429&retry_after=Sun,%2006%20Nov%202044%2008:49:37%20GMT"
                      "&date=Sun,%2006%20Nov%202044%2008:48:37%20GMT")
        assert r.retry_after == 60
        r = c.request("GET", "/status?code=404&body=nope")
        e = raises(http.HttpError, r.raise_for_status)
        assert e.retry_after is None and e.status == 404
        r = c.request("GET", "/status?code=200&body=not%20json")
        assert r.raise_for_status() is r
        e = raises(ValueError, r.json)
        assert "not valid JSON" in str(e)
        r = c.request("GET", "/echo", max_body=10)
        assert r.truncated and "max_body" in str(raises(ValueError, r.json))
        assert c.handshakes == 1
    from mcagent import httputil

    assert httputil.parse_retry_after("Thu, 01 Jan 2099 00:00:10 GMT", now_s=4070908800) == 10
    assert httputil.parse_retry_after("soon") is None and httputil.parse_retry_after(None) is None
    assert httputil.unquote("pa%3Ass%20w%40rd") == "pa:ss w@rd"


def test_timeouts(http_env):
    with connect(http_env, timeout_s=0.3) as c:
        t = ms()
        e = raises(http.Timeout, c.request, "GET", "/slow?delay=1")
        assert 250 <= ms() - t < 2500, ms() - t  # (the server would answer after 1 s)
        assert "timed out" in str(e) and "GET /slow" in str(e)
        raises(http.Timeout, c.request, "GET", "/stall?delay=1")  # half a body, then silence
        assert c.request("GET", "/echo").status == 200
    for url in (http_env["blackhole"], http_env["silent"]):  # connect, TLS handshake
        with connect(http_env, url, timeout_s=0.3) as c:
            t = ms()
            e = raises(http.Timeout, c.request, "GET", "/")
            assert not isinstance(e, http.TlsVerifyError)
            assert 250 <= ms() - t < 2500, ms() - t


def test_a_request_ends_by_its_deadline_however_the_server_drips(http_env):
    """Endless 100 Continue, or one byte at a time: each byte restarts the inactivity timeout, the request's
    deadline holds (the connection is dropped, a Timeout raised: a caller keeps its data)."""
    for path in ("/continue-forever?s=8", "/drip?every=0.2"):
        with connect(http_env, timeout_s=1, deadline_s=2) as c:
            t = ms()
            e = raises(http.Timeout, c.request, "GET", path)
            took = ms() - t
            assert 1900 <= took < 3500, (path, took)
            assert "deadline of 2s" in str(e), str(e)
            assert c.request("GET", "/echo").status == 200  # a new connection, a new deadline
    with connect(http_env, timeout_s=5) as c:
        assert c.deadline_s == 20  # default: four inactivity timeouts


def test_write_timeout(http_env):
    with connect(http_env, http_env["sink"], timeout_s=0.5) as c:  # the server never reads the body
        t = ms()
        raises(http.Timeout, c.request, "POST", "/sink?hold=3", None, PatternBody(64 * 1024 * 1024, 1024))
        assert ms() - t < 2500, ms() - t


def test_connection_refused_and_bad_arguments(http_env):
    e = raises(http.TransportError, connect(http_env, http_env["closed_port"]).request, "GET", "/")
    assert not isinstance(e, http.Timeout)
    raises(ValueError, http.Connection, http_env["https"])  # https without a CA
    raises(ValueError, http.Connection, http_env["https"], [der(http_env["ca_pem"])])  # PEM
    raises(TypeError, http.Connection, http_env["https"], [42])  # neither DER bytes nor a path
    http.Connection(http_env["https"], [http_env["ca_der"]]).close()  # the path of a DER file
    raises(ValueError, http.Connection, http_env["https"], [http_env["ca_der"] + ".missing"])
    raises(ValueError, http.Connection, http_env["https"], [http_env["ca_pem"]])  # a PEM file
    raises(ValueError, http.Connection, "ftp://x/")
    raises(ValueError, http.Connection, "https://h:99999/", [der(http_env["ca_der"])])
    with connect(http_env) as c:
        raises(ValueError, c.request, "GET", "/echo", {"X-Evil": "a\r\nInjected: 1"})
        raises(ValueError, c.request, "GET", "/echo", {"Content-Length": "5"})
        raises(ValueError, c.request, "GET", "/a b")
        assert c.handshakes == 0  # refused before connecting


def test_plain_http_when_the_url_says_so(http_env):
    with http.Connection(http_env["http"]) as c:
        assert c.request("GET", "/echo").json()["method"] == "GET"
        assert c.request("GET", "/bytes?n=3000").body == pattern(3000)
        assert c.handshakes == 1
    assert stats(http_env, "plain")["requests"] == 2


# -- TLS refusals: before any request byte ------------------------------------------------------------


def _refused(env, url, server, ca="ca_der"):
    c = connect(env, url, ca)
    e = raises(http.TlsVerifyError, c.request, "POST", "/echo", {"Authorization": "Bearer tok"}, b"secret")
    assert isinstance(e, http.TransportError)
    assert c.handshakes == 0 and c.requests == 0
    st = stats(env, server, settle=True)
    assert st["handshake_failures"] == 1, st
    assert (st["handshakes"], st["requests"], st["request_bytes"]) == (0, 0, 0), st
    return str(e)


def test_wrong_ca_refused(http_env):
    _refused(http_env, http_env["https"], "good", "other_ca_der")


def test_wrong_host_name_refused(http_env):
    _refused(http_env, http_env["wronghost"], "wronghost")


def test_expired_certificate_refused(http_env):
    msg = _refused(http_env, http_env["expired"], "expired")
    assert "expired" in msg.lower(), msg


# -- CONNECT proxy ------------------------------------------------------------------------------------


def test_proxy_tunnel(http_env):
    for proxy, name in ((http_env["proxy"], "proxy"), (http_env["proxy_auth"], "proxy_auth")):
        with connect(http_env, proxy=proxy) as c:
            assert c.request("GET", "/echo").json()["headers"]["host"] == http_env["https"].split("//")[1]
            assert c.request("POST", "/echo", None, PatternBody(3000)).json()["length"] == 3000
            assert c.handshakes == 1
        ps = stats(http_env, name)
        assert ps["tunnels"] == 1 and ps["targets"] == [http_env["https"].split("//")[1]]
    assert stats(http_env, "good")["handshakes"] == 2


def test_proxy_refusing(http_env):
    bad = connect(http_env, proxy=http_env["proxy_bad_auth"])
    e = raises(http.ProxyError, bad.request, "GET", "/echo")
    assert e.status == 407 and "wrong" not in str(e)
    e = raises(http.ProxyError, connect(http_env, proxy=http_env["proxy_auth_nocreds"]).request, "GET", "/")
    assert e.status == 407
    unreachable = connect(http_env, http_env["closed_port"], proxy=http_env["proxy"])
    e = raises(http.ProxyError, unreachable.request, "GET", "/")
    assert e.status == 502 and isinstance(e, http.TransportError)
    assert stats(http_env, "good")["connections"] == 0


# -- memory -------------------------------------------------------------------------------------------


def test_heap_does_not_grow_across_requests(http_env):
    """Keep-alive requests leave nothing behind (MicroPython GC heap; the small-heap run itself is in
    host_tests/test_http_host.py, because this module alone needs more heap to compile)."""
    import gc

    c = connect(http_env)
    body = PatternBody(20000, 512)
    for _ in range(2):  # warm up: connection, TLS socket, first-use allocations
        assert c.request("POST", "/echo", {"Authorization": "Bearer x"}, body).status == 200
        assert len(c.request("GET", "/bytes?n=4000").body) == 4000
    gc.collect()
    before = gc.mem_free() if hasattr(gc, "mem_free") else 0
    for _ in range(5):
        assert c.request("POST", "/echo", {"Authorization": "Bearer x"}, body).status == 200
        assert len(c.request("GET", "/bytes?n=4000").body) == 4000
    gc.collect()
    after = gc.mem_free() if hasattr(gc, "mem_free") else 0
    assert c.handshakes == 1
    assert before - after < 256, (before, after)
    c.close()
