"""HS256 JSON Web Tokens and the MindConnect client assertion (docs/protocol.md §C.2).

Header and claims text are built explicitly (cjson.Obj) so that the same inputs give the same token bytes
on CPython and MicroPython: the signature covers the text, not a dict. The signature's two primitives live
here, written for this one use: base64url without padding (RFC 4648 §5) and HMAC-SHA256 (RFC 2104) on
hashlib.sha256, because micropython-lib's `hmac` is not in ESP32 firmware, defaults to MD5 and allows one
digest. Nothing on a board decodes a token or compares digests, so neither is here: a module a wake loads
costs heap for every name in it.
"""

import hashlib
from binascii import b2a_base64, hexlify

from micropython import const

from mcagent import cjson
from mcagent.compat import urandom

_ASSERTION_LIFETIME_S = const(3600)  # what the Node.js library uses; the service accepts up to 24 h
_BLOCK = const(64)  # SHA-256's block size, HMAC's key length
_HEADER = cjson.Obj(("alg", "HS256"), ("typ", "JWT"))
_SCHEMAS = const(("urn:siemens:mindsphere:v1",))


def b64url(data):
    """bytes -> base64url bytes, no '=' padding, no newline."""
    return b2a_base64(data, newline=False).replace(b"+", b"-").replace(b"/", b"_").rstrip(b"=")


def hmac_sha256(key, msg):
    """HMAC-SHA256 of msg under key (both bytes). MicroPython's sha256 cannot be copied: one use per key."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes([b ^ 0x36 for b in key]))
    inner.update(msg)
    outer = hashlib.sha256(bytes([b ^ 0x5C for b in key]))
    outer.update(inner.digest())
    return outer.digest()


def uuid4(random16=None):
    """A random UUID version 4 string (from os.urandom unless 16 bytes are given)."""
    b = bytearray(random16 if random16 is not None else urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = hexlify(b).decode()
    return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]


def encode_hs256(claims, key, header=_HEADER):
    """Sign claims (cjson.Obj or dict) with HMAC-SHA256 under key (bytes). Returns the token as str."""
    signing_input = b64url(cjson.dumps(header).encode()) + b"." + b64url(cjson.dumps(claims).encode())
    return (signing_input + b"." + b64url(hmac_sha256(key, signing_input))).decode()


def assertion_claims(client_id, tenant, now_s, jti, lifetime_s=_ASSERTION_LIFETIME_S):
    """The claims of a MindConnect client assertion, in a fixed order."""
    return cjson.Obj(
        ("iss", client_id),
        ("sub", client_id),
        ("aud", ["southgate"]),
        ("iat", now_s),
        ("nbf", now_s),
        ("exp", now_s + lifetime_s),
        ("schemas", list(_SCHEMAS)),
        ("ten", tenant),
        ("jti", jti),
    )


def client_assertion(client_id, tenant, client_secret, now_s, jti=None, lifetime_s=_ASSERTION_LIFETIME_S):
    """The HS256 client assertion the token endpoint wants; the key is the client secret as UTF-8."""
    if jti is None:
        jti = uuid4()
    claims = assertion_claims(client_id, tenant, int(now_s), jti, lifetime_s)
    return encode_hs256(claims, client_secret.encode())
