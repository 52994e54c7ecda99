"""HS256 client assertion (docs/protocol.md §C.2): same bytes on both interpreters, verifiable by CPython;
its base64url (RFC 4648 vectors) and HMAC-SHA256 (RFC 4231 cases 1-7, random cross-checks against CPython)."""

import binascii
import json

from checks import b64url_decode, raises
from mcagent import cjson, jwt
from vectors import ASSERTION_INPUTS

# The token for ASSERTION_INPUTS. Both interpreters must produce exactly these bytes; the host test
# test_jwt_host.py checks it with CPython's hmac and PyJWT.
GOLDEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpc3MiOiIwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiIsInN1YiI6IjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJj"
    "ZGVmIiwiYXVkIjpbInNvdXRoZ2F0ZSJdLCJpYXQiOjE3OTAwMDAwMDAsIm5iZiI6MTc5MDAwMDAwMCwiZXhwIjoxNzkwMDAzNjAwLCJz"
    "Y2hlbWFzIjpbInVybjpzaWVtZW5zOm1pbmRzcGhlcmU6djEiXSwidGVuIjoibXl0ZW5hbnQiLCJqdGkiOiIxYjRlMjhiYS0yZmExLTQx"
    "ZDItODgzZi0wMDE2ZDNjY2E0MjcifQ."
    "q1OyDGQgqC2tY_foL9gcdP-CTWYQ9ELY0qtdkHvMnUo"
)


def make():
    client_id, tenant, secret, now = ASSERTION_INPUTS[:4]
    return jwt.client_assertion(client_id, tenant, secret, now, jti=ASSERTION_INPUTS[4])


def test_assertion_bytes_equal_golden():
    token = make()
    assert token == GOLDEN, token
    head, _, sig = token.rpartition(".")
    assert sig == jwt.b64url(jwt.hmac_sha256(ASSERTION_INPUTS[2].encode(), head.encode())).decode()


def test_assertion_equals_the_cpython_run(cpython_assertion):
    # The fixture ran the same firmware code on CPython: the token must be byte-identical here.
    assert make() == cpython_assertion


def test_claims_as_protocol_says():
    token = make()
    header_b64, claims_b64, _ = token.split(".")
    assert json.loads(b64url_decode(header_b64)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(b64url_decode(claims_b64))
    client_id, tenant, _, now, jti = ASSERTION_INPUTS
    assert claims["iss"] == claims["sub"] == client_id
    assert claims["aud"] == ["southgate"]
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == now + 3600
    assert claims["schemas"] == ["urn:siemens:mindsphere:v1"]
    assert claims["ten"] == tenant
    assert claims["jti"] == jti
    assert "=" not in token


def test_uuid4_format_and_randomness():
    seen = set()
    for _ in range(20):
        u = jwt.uuid4()
        assert len(u) == 36 and u[14] == "4" and u[19] in "89ab", u
        assert [len(p) for p in u.split("-")] == [8, 4, 4, 4, 12]
        seen.add(u)
    assert len(seen) == 20
    assert jwt.uuid4(bytes(16)) == "00000000-0000-4000-8000-000000000000"


def test_default_jti_is_fresh():
    a = jwt.client_assertion("a" * 32, "t", "k", 1790000000)
    b = jwt.client_assertion("a" * 32, "t", "k", 1790000000)
    assert a != b


def test_cjson_is_compact_and_escapes():
    assert cjson.dumps(cjson.Obj(("b", 1), ("a", [True, None, "x"]))) == '{"b":1,"a":[true,null,"x"]}'
    assert cjson.dumps({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert cjson.dumps('q"\\\n\x01') == '"q\\"\\\\\\n\\u0001"'
    assert cjson.dumps("\u00e9") == '"\u00e9"'
    assert cjson.dumps(1.5) == "1.5"
    raises(ValueError, cjson.dumps, float("nan"))
    raises(TypeError, cjson.dumps, object())


B64URL = [
    (b"", b""),
    (b"f", b"Zg"),
    (b"fo", b"Zm8"),
    (b"foo", b"Zm9v"),
    (b"foob", b"Zm9vYg"),
    (b"fooba", b"Zm9vYmE"),
    (b"foobar", b"Zm9vYmFy"),
    (b"\xfb\xff\xfe", b"-__-"),
]


def test_b64url_rfc4648_vectors_without_padding():
    for raw, enc in B64URL:
        assert jwt.b64url(raw) == enc, raw
        assert b64url_decode(enc) == raw


def test_b64url_roundtrip_all_lengths():
    data = bytes(range(256))
    for n in range(0, 70):
        assert b64url_decode(jwt.b64url(data[n : n * 3])) == data[n : n * 3]
        assert b"=" not in jwt.b64url(data[n : n * 3])


RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),  # truncated to 128 bits
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. The key needs"
        b" to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


def hexs(b):
    return binascii.hexlify(b).decode()


def test_hmac_rfc4231_cases_1_to_7():
    for key, msg, expected in RFC4231:
        assert hexs(jwt.hmac_sha256(key, msg))[: len(expected)] == expected


def test_hmac_random_vectors_match_cpython_hmac(hmac_vectors):
    assert len(hmac_vectors) == 60
    for key, msg, expected in hmac_vectors:
        assert hexs(jwt.hmac_sha256(binascii.unhexlify(key), binascii.unhexlify(msg))) == expected
