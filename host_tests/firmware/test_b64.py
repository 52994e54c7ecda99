"""base64url: encode without padding, decode padded and unpadded."""

from checks import raises
from mcagent import b64

VECTORS = [
    (b"", b""),
    (b"f", b"Zg"),
    (b"fo", b"Zm8"),
    (b"foo", b"Zm9v"),
    (b"foob", b"Zm9vYg"),
    (b"fooba", b"Zm9vYmE"),
    (b"foobar", b"Zm9vYmFy"),
    (b"\xfb\xff\xfe", b"-__-"),
]


def test_encode_rfc4648_vectors_without_padding():
    for raw, enc in VECTORS:
        assert b64.urlsafe_encode(raw) == enc, raw


def test_decode_unpadded_and_padded():
    for raw, enc in VECTORS:
        assert b64.urlsafe_decode(enc) == raw
        assert b64.urlsafe_decode(enc + b"=" * (-len(enc) % 4)) == raw
        assert b64.urlsafe_decode(enc.decode()) == raw


def test_roundtrip_all_lengths():
    data = bytes(range(256))
    for n in range(0, 70):
        assert b64.urlsafe_decode(b64.urlsafe_encode(data[n : n * 3])) == data[n : n * 3]


def test_decode_rejects_garbage():
    raises(ValueError, b64.urlsafe_decode, "abc+")
    raises(ValueError, b64.urlsafe_decode, "a")
    raises(ValueError, b64.urlsafe_decode, "ab/c")
