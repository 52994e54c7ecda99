"""JSON Web Tokens as southgate needs them: HS256 client assertions in, RS256 access tokens and IATs out.

Written out rather than taken from a JWT library because the service must be exactly as lenient as the
protocol says (padded or unpadded base64url, `aud` string or list) and exactly as strict (no `alg: none`,
signature over the text as received).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .validation import Invalid, parse_json

MAX_TOKEN_CHARS = 16 * 1024  # far more than any token southgate issues or accepts
MAX_EPOCH_S = 2**53  # numeric claims beyond this are not epoch seconds (and lose float precision)


class TokenError(ValueError):
    """A token that cannot be accepted; the message says why (never contains the token)."""


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    """Decode base64url with or without '=' padding (MCL pads, Node doesn't)."""
    stripped = text.rstrip("=")
    if any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in stripped):
        raise TokenError("token segment is not base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("token segment is not base64url") from exc


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str, bytes]:
    """-> (header, claims, signing input text, signature bytes)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(f"token is longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token must have three dot-separated parts")
    try:
        header = parse_json(b64u_decode(parts[0]))
    except Invalid as exc:
        raise TokenError(f"token header is not JSON: {exc}") from None
    try:
        claims = parse_json(b64u_decode(parts[1]))
    except Invalid as exc:
        raise TokenError(f"token claims are not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("token header and claims must be JSON objects")
    return header, claims, parts[0] + "." + parts[1], b64u_decode(parts[2])


def unverified_claims(token: str) -> dict[str, Any] | None:
    """Claims without any check (used only to pick a rate-limit bucket or a log label)."""
    try:
        return split(token)[1]
    except TokenError:
        return None


def verify_hs256(signing_input: str, signature: bytes, secret: str) -> bool:
    expected = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(expected, signature)


def sign_rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey, kid: str) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    head = b64u_encode(json.dumps(header, separators=(",", ":")).encode())
    body = b64u_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = head + "." + body
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64u_encode(sig)


def verify_rs256(token: str, key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """Check an RS256 token issued by this server; returns its claims (expiry is the caller's business)."""
    header, claims, signing_input, sig = split(token)
    if header.get("alg") != "RS256":
        raise TokenError("token algorithm must be RS256")
    if header.get("kid") not in (None, kid):
        raise TokenError("token was signed with an unknown key")
    try:
        key.public_key().verify(sig, signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise TokenError("token signature is invalid") from exc
    return claims


def numeric_claim(claims: dict[str, Any], name: str, required: bool = True) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenError(f"claim {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenError(f"claim {name!r} must be a number (epoch seconds)")
    if isinstance(value, float) and not math.isfinite(value):
        raise TokenError(f"claim {name!r} must be a finite number (epoch seconds)")
    if not -MAX_EPOCH_S <= value <= MAX_EPOCH_S:
        raise TokenError(f"claim {name!r} is out of range for epoch seconds")
    return float(value)
