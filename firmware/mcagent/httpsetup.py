"""What an mcagent.http.Connection needs once, when it is made: URL parsing, reading the CA certificates and
the checks of its arguments (the base URL, the DER CA certificates, the proxy URL).

http runs it through compat.call_cold, which unloads it again: on a board its bytecode would otherwise sit
in the heap for the whole upload, next to the TLS connection it never touches."""

from micropython import const

from mcagent import compat

_HTTP = const("http")  # literals as constants: no name in the heap for them
_V6_HOST = const("[%s]")
_HOST_PORT = const("%s:%d")


def split_url(url):
    """http.split_url: 'scheme://[user:pass@]host[:port][/path][?query]' -> (scheme, host, port, path,
    userinfo). Messages never quote the URL (a proxy URL may carry a password)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError("URL must start with http:// or https://")
    rest = rest.split("#")[0]
    auth = rest.split("/")[0].split("?")[0]
    path = rest[len(auth) :]
    if not path.startswith("/"):
        path = "/" + path
    user, at, auth = auth.rpartition("@")
    host, colon, port = auth.rpartition(":")
    if not colon or "]" in port:  # no port (a colon inside an IPv6 literal's brackets is not one)
        host, port = auth, ""
    host = host.strip("[]")
    if port and not (port.isdigit() and 0 < int(port) < 65536) or not host:
        raise ValueError("bad host or port in URL")
    return scheme, host, int(port) if port else (443 if scheme == "https" else 80), path, user if at else None


def ca_files(items):
    """The CA items with each directory (a path ending in "/") replaced by the `.der` files in it (sorted;
    none if it is missing): how a node names every certificate deploy installed in certs/."""
    out = []
    for item in items:
        if isinstance(item, str) and item.endswith("/"):
            import os

            try:
                out += [item + n for n in sorted(os.listdir(item.rstrip("/") or "/")) if n.endswith(".der")]
            except OSError:
                pass
        else:
            out.append(item)
    return out


def read_ca(item):
    """A CA certificate as DER bytes: given as bytes, or read from the DER file at a path."""
    der = item
    if isinstance(item, str):
        try:
            with open(item, "rb") as f:
                der = f.read()
        except OSError:
            raise ValueError("CA certificate %s cannot be read" % item)
    elif not isinstance(item, (bytes, bytearray)):
        raise TypeError("ca_ders must be DER certificates as bytes (or paths of DER files)")
    if der[:5] == b"-----":
        raise ValueError(
            "CA certificate %s is PEM: mbedTLS here reads DER only (openssl x509 -outform der)"
            % (item if der is not item else "given as bytes")
        )
    return der


def setup(conn, base_url, ca_ders, proxy):
    """Connection.__init__'s part that needs no keeping: check the arguments, set host, port, tls, the
    base path (_prefix), the Host header (_hosthdr), the TLS context (_ctx) and the parsed proxy URL."""
    scheme, conn.host, conn.port, path, user = split_url(base_url)
    if user is not None:
        raise ValueError("credentials in the base URL are not supported")
    conn.tls = scheme == "https"
    conn._prefix = path.rstrip("/")
    h = _V6_HOST % conn.host if ":" in conn.host else conn.host
    conn._hosthdr = h if conn.port == (443 if conn.tls else 80) else _HOST_PORT % (h, conn.port)
    conn._ctx = conn._proxy = None
    if conn.tls:
        ca_ders = [read_ca(c) for c in ca_files(ca_ders)]
        try:
            conn._ctx = compat.tls_client_context(ca_ders)
        except OSError as e:  # CPython: ssl.SSLError for a bad DER (MicroPython: ValueError)
            raise ValueError("bad CA certificate: %s" % e)
    if proxy:
        conn._proxy = split_url(proxy)
        if conn._proxy[0] != _HTTP:
            raise ValueError("proxy must be an http:// CONNECT proxy")
