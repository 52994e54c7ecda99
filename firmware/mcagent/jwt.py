"""HS256 JSON Web Tokens and the MindConnect client assertion (docs/protocol.md §C.2).

Header and claims text are built explicitly (constant texts, the values quoted by cjson) so that the same
inputs give the same token bytes on CPython and MicroPython: the signature covers the text, not a dict.
The signature's two primitives live here, written for this one use: base64url without padding (RFC 4648
§5) and HMAC-SHA256 (RFC 2104) on hashlib.sha256, because micropython-lib's `hmac` is not in ESP32
firmware, defaults to MD5 and allows one digest. Nothing on a board decodes a token or compares digests,
so neither is here: a module a wake loads costs heap for every name in it.
"""

import hashlib
from binascii import b2a_base64, hexlify

from micropython import const

from mcagent import cjson
from mcagent.compat import urandom

_LIFETIME_S = const(3600)  # what the Node.js library uses; the service accepts up to 24 h
_BLOCK = const(64)  # SHA-256's block size, HMAC's key length
_HEADER = const(b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.")  # base64url of {"alg":"HS256","typ":"JWT"}, "."
# The claims in a fixed order, as text: a const has no name in the heap, a dict would intern every key.
_CLAIMS = const(
    '{"iss":%s,"sub":%s,"aud":["southgate"],"iat":%d,"nbf":%d,"exp":%d,'
    '"schemas":["urn:siemens:mindsphere:v1"],"ten":%s,"jti":%s}'
)


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


def uuid4(data=None):
    """A random UUID version 4 string (from os.urandom unless 16 bytes of data are given)."""
    b = bytearray(data if data is not None else urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = hexlify(b).decode()
    return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]


def client_assertion(client_id, tenant, secret, now_s, jti=None):
    """The HS256 client assertion the token endpoint wants (valid for an hour from now_s); the key is the
    client secret as UTF-8."""
    if jti is None:
        jti = uuid4()
    now_s = int(now_s)
    q = cjson.quote
    text = _CLAIMS % (q(client_id), q(client_id), now_s, now_s, now_s + _LIFETIME_S, q(tenant), q(jti))
    signed = _HEADER + b64url(text.encode())
    return (signed + b"." + b64url(hmac_sha256(secret.encode(), signed))).decode()
