"""HS256 client assertion (docs/protocol.md §C.2): same bytes on both interpreters, verifiable by CPython."""

import json

from checks import raises
from mcagent import b64, cjson, jwt
from mcagent.hmac256 import hmac_sha256
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
    assert sig == b64.urlsafe_encode(hmac_sha256(ASSERTION_INPUTS[2].encode(), head.encode())).decode()


def test_assertion_equals_the_cpython_run(cpython_assertion):
    # The fixture ran the same firmware code on CPython: the token must be byte-identical here.
    assert make() == cpython_assertion


def test_claims_as_protocol_says():
    token = make()
    header_b64, claims_b64, _ = token.split(".")
    assert json.loads(b64.urlsafe_decode(header_b64)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(b64.urlsafe_decode(claims_b64))
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
