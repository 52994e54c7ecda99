"""HMAC-SHA256 written in the firmware: RFC 4231 cases 1-7 and random cross-checks against CPython's hmac."""

import binascii

from mcagent.hmac256 import HMAC256, compare_digest, hmac_sha256

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


def test_rfc4231_cases_1_to_7():
    for key, msg, expected in RFC4231:
        assert hexs(hmac_sha256(key, msg))[: len(expected)] == expected


def test_incremental_equals_one_shot():
    key, msg, expected = RFC4231[6]
    h = HMAC256(key)
    for i in range(0, len(msg), 7):
        h.update(msg[i : i + 7])
    assert hexs(h.digest()) == expected


def test_random_vectors_match_cpython_hmac(hmac_vectors):
    assert len(hmac_vectors) == 60
    for key, msg, expected in hmac_vectors:
        assert hexs(hmac_sha256(binascii.unhexlify(key), binascii.unhexlify(msg))) == expected


def test_compare_digest():
    assert compare_digest(b"abc", b"abc")
    assert not compare_digest(b"abc", b"abd")
    assert not compare_digest(b"abc", b"ab")
    assert compare_digest(b"", b"")
