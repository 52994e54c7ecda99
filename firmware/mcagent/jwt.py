"""HS256 JSON Web Tokens and the MindConnect client assertion (docs/protocol.md §C.2).

Header and claims text are built explicitly (cjson.Obj) so that the same inputs give the same token bytes
on CPython and MicroPython: the signature covers the text, not a dict.
"""

from binascii import hexlify

from micropython import const

from mcagent import b64, cjson
from mcagent.compat import urandom
from mcagent.hmac256 import hmac_sha256

ASSERTION_LIFETIME_S = const(3600)  # what the Node.js library uses; the service accepts up to 24 h
_HEADER = cjson.Obj(("alg", "HS256"), ("typ", "JWT"))
SCHEMAS = ("urn:siemens:mindsphere:v1",)


def uuid4(random16=None):
    """A random UUID version 4 string (from os.urandom unless 16 bytes are given)."""
    b = bytearray(random16 if random16 is not None else urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = hexlify(b).decode()
    return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]


def encode_hs256(claims, key, header=_HEADER):
    """Sign claims (cjson.Obj or dict) with HMAC-SHA256 under key (bytes). Returns the token as str."""
    signing_input = (
        b64.urlsafe_encode(cjson.dumps(header).encode())
        + b"."
        + b64.urlsafe_encode(cjson.dumps(claims).encode())
    )
    signature = b64.urlsafe_encode(hmac_sha256(key, signing_input))
    return (signing_input + b"." + signature).decode()


def assertion_claims(client_id, tenant, now_s, jti, lifetime_s=ASSERTION_LIFETIME_S):
    """The claims of a MindConnect client assertion, in a fixed order."""
    return cjson.Obj(
        ("iss", client_id),
        ("sub", client_id),
        ("aud", ["southgate"]),
        ("iat", now_s),
        ("nbf", now_s),
        ("exp", now_s + lifetime_s),
        ("schemas", list(SCHEMAS)),
        ("ten", tenant),
        ("jti", jti),
    )


def client_assertion(client_id, tenant, client_secret, now_s, jti=None, lifetime_s=ASSERTION_LIFETIME_S):
    """The HS256 client assertion the token endpoint wants; the key is the client secret as UTF-8."""
    if jti is None:
        jti = uuid4()
    claims = assertion_claims(client_id, tenant, int(now_s), jti, lifetime_s)
    return encode_hs256(claims, client_secret.encode())
