"""Host fixtures for the core firmware tests (HMAC, JWT): reference values computed by CPython's stdlib."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from vectors import ASSERTION_INPUTS


@pytest.fixture
def hmac_vectors() -> list[list[str]]:
    """Random (key, message, CPython hmac digest) triples as hex, for cross-checking the firmware HMAC."""
    rng = random.Random(4231)
    vectors = []
    for _ in range(60):
        key = rng.randbytes(rng.choice([0, 1, 31, 32, 63, 64, 65, 100, 200]))
        msg = rng.randbytes(rng.randint(0, 300))
        vectors.append([key.hex(), msg.hex(), hmac.new(key, msg, hashlib.sha256).hexdigest()])
    return vectors


@pytest.fixture
def cpython_assertion() -> str:
    """The client assertion for the fixed inputs of test_jwt, produced by the firmware code on CPython."""
    from mcagent import jwt

    return jwt.client_assertion(*ASSERTION_INPUTS[:4], jti=ASSERTION_INPUTS[4])

