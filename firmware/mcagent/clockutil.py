"""Time as text a wake reads now and then: a server's `Date` and `Server-Time`, an ISO time in
agentconfig.json or a TIMESTAMP reading, a Retry-After date. mcagent.clock hands these functions out per use
(its module __getattr__) and releases this module at once, so its code is not held through a wake.
"""

from micropython import const

from mcagent import compat
from mcagent.clock import civil_from_days

_MONTHS = const(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))
_DAYS = const(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))
_PAD_MS = const("00")  # literals as constants: no name in the heap for them
_GMT = const("GMT")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _int(text, start, end):
    part = text[start:end]
    if len(part) != end - start or not compat.digits(part):
        raise ValueError("bad ISO 8601 time: %r" % text)
    return int(part)


def parse_iso(text):
    """ISO 8601 UTC or offset time -> Unix milliseconds.

    Accepts 'YYYY-MM-DDTHH:MM:SS', optional fraction of any length (kept to ms), then 'Z', '+HH:MM',
    '-HH:MM' or nothing (taken as UTC). ValueError on anything else.
    """
    # One-character slices, never text[i]: a character taken from a str is interned for good on MicroPython.
    if (
        len(text) < 19
        or text[4:5] != "-"
        or text[7:8] != "-"
        or text[10:11] not in ("T", "t", " ")
        or text[13:14] != ":"
        or text[16:17] != ":"
    ):
        raise ValueError("bad ISO 8601 time: %r" % text)
    y, mo, d = _int(text, 0, 4), _int(text, 5, 7), _int(text, 8, 10)
    h, mi, s = _int(text, 11, 13), _int(text, 14, 16), _int(text, 17, 19)
    ok = 1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60
    if not ok or civil_from_days(days_from_civil(y, mo, d)) != (y, mo, d):  # 31 Feb does not roll over
        raise ValueError("bad ISO 8601 time: %r" % text)
    i = 19
    ms = 0
    if text[i : i + 1] == ".":
        j = i + 1
        while compat.digits(text[j : j + 1]):
            j += 1
        if j == i + 1:
            raise ValueError("bad ISO 8601 time: %r" % text)
        ms = int((text[i + 1 : j] + _PAD_MS)[:3])
        i = j
    offset_min = 0
    rest = text[i:]
    if rest in ("Z", "z", ""):
        pass
    elif len(rest) == 6 and rest[:1] in ("+", "-") and rest[3:4] == ":":
        offset_min = _int(rest, 1, 3) * 60 + _int(rest, 4, 6)
        if rest[:1] == "-":
            offset_min = -offset_min
    else:
        raise ValueError("bad ISO 8601 time: %r" % text)
    seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset_min * 60
    return seconds * 1000 + ms


def http_date(epoch_s):
    """Unix seconds -> RFC 7231 IMF-fixdate, e.g. 'Sun, 06 Nov 1994 08:49:37 GMT'."""
    days, s = divmod(int(epoch_s), 86400)
    y, mo, d = civil_from_days(days)
    h, s = divmod(s, 3600)
    mi, s = divmod(s, 60)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[(days + 3) % 7], d, _MONTHS[mo - 1], y, h, mi, s)


def parse_http_date(text):
    """RFC 7231 IMF-fixdate -> Unix seconds. ValueError on other formats."""
    parts = text.strip().split()
    if len(parts) != 6 or parts[5] != _GMT or parts[2] not in _MONTHS:
        raise ValueError("bad HTTP date: %r" % text)
    hms = parts[4].split(":")
    if len(hms) != 3 or not compat.digits(parts[1] + parts[3] + hms[0] + hms[1] + hms[2]):
        raise ValueError("bad HTTP date: %r" % text)
    y, mo, d = int(parts[3]), _MONTHS.index(parts[2]) + 1, int(parts[1])
    h, mi, s = int(hms[0]), int(hms[1]), int(hms[2])
    days = days_from_civil(y, mo, d)
    if not (1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60) or civil_from_days(days) != (y, mo, d):
        raise ValueError("bad HTTP date: %r" % text)
    return days * 86400 + h * 3600 + mi * 60 + s


def parse_server_time(text):
    """A `Server-Time` value -> Unix seconds: ISO 8601, or digits (epoch seconds; milliseconds when it has
    more than 11 digits); None when it is neither."""
    text = text.strip()
    if compat.digits(text):
        n = int(text)
        return n // 1000 if len(text) > 11 else n
    try:
        return parse_iso(text) // 1000
    except ValueError:
        return None


def learn_from_headers(clock, server_time, date):
    """Clock.learn_from_headers (see there)."""
    s = parse_server_time(server_time) if server_time else None
    if s is None and date:
        try:
            s = parse_http_date(date)
        except ValueError:
            return False
    if s is None:
        return False
    clock.learn(s)
    return True
