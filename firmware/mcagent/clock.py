"""UTC time as the protocol needs it: Unix epoch seconds/milliseconds and ISO 8601 text.

Calendar arithmetic is done here (days-from-civil), not with time.gmtime/mktime, because those count from
2000 on ESP32 and from 1970 on Unix. A Clock also keeps a correction learned from the server's `Date` or
`Server-Time` header, so a board with a wrong RTC still signs assertions with a sane time.
"""

from micropython import const

from mcagent import compat

SANE_AFTER_S = const(1704067200)  # 2024-01-01T00:00:00Z: an earlier clock is certainly wrong
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of a day count since 1970-01-01."""
    z += 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return (y + (m <= 2), m, d)


def iso_ms(epoch_ms):
    """Unix milliseconds -> 'YYYY-MM-DDTHH:MM:SS.sssZ'."""
    epoch_ms = int(epoch_ms)
    days, ms = divmod(epoch_ms, 86400000)
    y, mo, d = civil_from_days(days)
    s, ms = divmod(ms, 1000)
    h, s = divmod(s, 3600)
    mi, s = divmod(s, 60)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (y, mo, d, h, mi, s, ms)


def _int(text, start, end):
    part = text[start:end]
    if len(part) != end - start or not part.isdigit():
        raise ValueError("bad ISO 8601 time: %r" % text)
    return int(part)


def parse_iso(text):
    """ISO 8601 UTC or offset time -> Unix milliseconds.

    Accepts 'YYYY-MM-DDTHH:MM:SS', optional fraction of any length (kept to ms), then 'Z', '+HH:MM',
    '-HH:MM' or nothing (taken as UTC). ValueError on anything else.
    """
    if (len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":"
            or text[16] != ":"):
        raise ValueError("bad ISO 8601 time: %r" % text)
    y, mo, d = _int(text, 0, 4), _int(text, 5, 7), _int(text, 8, 10)
    h, mi, s = _int(text, 11, 13), _int(text, 14, 16), _int(text, 17, 19)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        raise ValueError("bad ISO 8601 time: %r" % text)
    i = 19
    ms = 0
    if i < len(text) and text[i] == ".":
        j = i + 1
        while j < len(text) and text[j].isdigit():
            j += 1
        if j == i + 1:
            raise ValueError("bad ISO 8601 time: %r" % text)
        ms = int((text[i + 1 : j] + "00")[:3])
        i = j
    offset_min = 0
    rest = text[i:]
    if rest in ("Z", "z", ""):
        pass
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset_min = _int(rest, 1, 3) * 60 + _int(rest, 4, 6)
        if rest[0] == "-":
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
    if len(parts) != 6 or parts[5] != "GMT" or parts[2] not in _MONTHS:
        raise ValueError("bad HTTP date: %r" % text)
    hms = parts[4].split(":")
    if len(hms) != 3 or not parts[1].isdigit() or not parts[3].isdigit():
        raise ValueError("bad HTTP date: %r" % text)
    try:
        h, mi, s = int(hms[0]), int(hms[1]), int(hms[2])
    except ValueError:
        raise ValueError("bad HTTP date: %r" % text)
    days = days_from_civil(int(parts[3]), _MONTHS.index(parts[2]) + 1, int(parts[1]))
    return days * 86400 + h * 3600 + mi * 60 + s


def parse_server_time(text):
    """A `Server-Time` value -> Unix seconds: ISO 8601, or digits (epoch seconds; milliseconds when it has
    more than 11 digits); None when it is neither."""
    text = text.strip()
    if text.isdigit():
        n = int(text)
        return n // 1000 if len(text) > 11 else n
    try:
        return parse_iso(text) // 1000
    except ValueError:
        return None


class Clock:
    """Unix time from the port's clock plus a correction learned from the server.

    time_module is injectable so tests can run the 2000-epoch (ESP32) path on any interpreter.
    """

    def __init__(self, time_module=None, correction_ms=0):
        if time_module is None:
            import time as time_module
        self._time = time_module
        self._offset_ms = compat.epoch_offset(time_module) * 1000
        self.correction_ms = correction_ms

    def device_ms(self):
        """Unix ms by the device clock alone."""
        return compat.port_time_ms(self._time) + self._offset_ms

    def now_ms(self):
        return self.device_ms() + self.correction_ms

    def now_s(self):
        return self.now_ms() // 1000

    def is_sane(self):
        return self.now_s() >= SANE_AFTER_S

    def learn(self, server_s):
        """Adopt the server's time (Unix seconds), e.g. from its Date header. Returns the correction (ms)."""
        self.correction_ms = int(server_s) * 1000 - self.device_ms()
        return self.correction_ms

    def learn_from_headers(self, server_time=None, date=None):
        """Learn from a `Server-Time` header (ISO 8601, or epoch seconds or milliseconds: MindConnect Library
        C documents it as epoch time) or else from `Date` (HTTP); True if one was usable."""
        s = parse_server_time(server_time) if server_time else None
        if s is None and date:
            try:
                s = parse_http_date(date)
            except ValueError:
                return False
        if s is None:
            return False
        self.learn(s)
        return True
