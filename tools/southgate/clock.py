"""One server clock for everything time-related (tokens, IAT, Date and Server-Time headers).

Tests move southgate through time with a configurable offset instead of sleeping, so every place that asks
"what time is it" must ask this object.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from email.utils import formatdate

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})$"
)


class ServerClock:
    """Wall clock plus an offset in seconds ("time travel")."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = float(offset_s)

    def now(self) -> float:
        return time.time() + self.offset_s

    def now_s(self) -> int:
        return int(self.now())

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def iso(self) -> str:
        return iso_ms(self.now_ms())

    def http_date(self) -> str:
        return formatdate(self.now(), usegmt=True)


MIN_MS = -62135596800000  # 0001-01-01T00:00:00Z: what a timestamp may name (parse_iso refuses the rest)
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


def iso_ms(epoch_ms: int) -> str:
    """Unix milliseconds -> 'YYYY-MM-DDTHH:MM:SS.sssZ' (the protocol's timestamp form); clamped to the years
    1-9999, so a stored value can never break a page or an answer."""
    epoch_ms = min(max(int(epoch_ms), MIN_MS), MAX_MS)
    dt = datetime.fromtimestamp(epoch_ms // 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


def parse_iso(text: str) -> int:
    """ISO 8601 time with a zone (Z or +hh:mm) -> Unix milliseconds; ValueError when malformed."""
    if not isinstance(text, str):
        raise ValueError("timestamp must be a string")
    m = _ISO_RE.match(text.strip())
    if not m:
        raise ValueError(f"not an ISO 8601 UTC timestamp: {text[:40]!r}")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"not a valid date/time: {text[:40]!r}") from exc
    ms = int((frac or "0")[:3].ljust(3, "0"))
    offset_s = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset_s = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    out = (int(dt.timestamp()) - offset_s) * 1000 + ms
    if not MIN_MS <= out <= MAX_MS:  # a zone offset past year 1 or 9999
        raise ValueError(f"timestamp out of range (years 1-9999 UTC): {text[:40]!r}")
    return out


def parse_iso_span(text: str) -> tuple[int, int]:
    """(floor, ceil) of an ISO 8601 time in Unix milliseconds: they differ when it has digits past the
    millisecond (a bound at 12:00:00.0005 excludes or includes the event at .000 depending on its side)."""
    floor = parse_iso(text)
    m = _ISO_RE.match(text.strip())
    frac = (m.group(7) if m else None) or ""
    return floor, floor + (1 if frac[3:].strip("0") else 0)


def is_protocol_timestamp(text: object) -> bool:
    """True for the strict agent form YYYY-MM-DDTHH:mm:ss.sssZ."""
    return (
        isinstance(text, str)
        and re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", text) is not None
    )
