"""HMAC-SHA256 (RFC 2104) on hashlib.sha256.

Written here because micropython-lib's `hmac` is not frozen into ESP32 firmware, defaults to MD5 and allows
only one digest. MicroPython's sha256 objects cannot be copied, so each HMAC keeps the padded key.
"""

import hashlib

from micropython import const

_BLOCK = const(64)


def _pad(key, byte):
    return bytes([b ^ byte for b in key])


class HMAC256:
    """Incremental HMAC-SHA256: update() any number of times, then digest() once."""

    def __init__(self, key, msg=None):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key + bytes(_BLOCK - len(key))
        self._outer_key = _pad(key, 0x5C)
        self._inner = hashlib.sha256(_pad(key, 0x36))
        if msg:
            self._inner.update(msg)

    def update(self, msg):
        self._inner.update(msg)

    def digest(self):
        outer = hashlib.sha256(self._outer_key)
        outer.update(self._inner.digest())
        return outer.digest()


def hmac_sha256(key, msg):
    """One-shot HMAC-SHA256 of msg under key (both bytes)."""
    return HMAC256(key, msg).digest()


def compare_digest(a, b):
    """Constant-time comparison of two byte strings (time does not depend on where they differ)."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
