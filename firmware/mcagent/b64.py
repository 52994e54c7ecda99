"""Base64url (RFC 4648 §5) as JWTs use it: encode without padding, decode with or without it."""

import binascii


def urlsafe_encode(data):
    """bytes -> base64url bytes, no '=' padding, no newline."""
    out = binascii.b2a_base64(data, newline=False)
    return out.replace(b"+", b"-").replace(b"/", b"_").rstrip(b"=")


def urlsafe_decode(text):
    """base64url str/bytes, padded or not -> bytes. ValueError on anything else."""
    if isinstance(text, str):
        text = text.encode()
    text = text.rstrip(b"=")
    if len(text) % 4 == 1:
        raise ValueError("invalid base64url length")
    for c in text:
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 45 or c == 95):
            raise ValueError("invalid base64url character")
    text = text.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(text) % 4)
    return binascii.a2b_base64(text)
