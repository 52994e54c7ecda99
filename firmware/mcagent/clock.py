"""UTC time as the protocol needs it: Unix epoch seconds/milliseconds and ISO 8601 text.

Calendar arithmetic is done here (days-from-civil), not with time.gmtime/mktime, because those count from
2000 on ESP32 and from 1970 on Unix. A Clock also keeps a correction learned from the server's `Date` or
`Server-Time` header, so a board with a wrong RTC still signs assertions with a sane time.

Held through a wake: the Clock and iso_ms (every reading uploaded is stamped with it). Parsing and the
HTTP date (days_from_civil, parse_iso, http_date, parse_http_date, parse_server_time) are attributes of this
module all the same, served from mcagent.clockutil, which is loaded per use and released at once.
"""

from micropython import const

from mcagent import compat

SANE_AFTER_S = const(1704067200)  # 2024-01-01T00:00:00Z: an earlier clock is certainly wrong


def __getattr__(name):
    """A function of mcagent.clockutil, whose module is forgotten at once: the function keeps it alive only
    as long as the caller holds it (module attributes not found here end up in this call)."""
    try:
        return getattr(compat.load("mcagent.clockutil"), name)
    finally:
        compat.unload("mcagent.clockutil")


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


def iso_ms(ms):
    """Unix milliseconds -> 'YYYY-MM-DDTHH:MM:SS.sssZ'."""
    days, ms = divmod(int(ms), 86400000)
    y, mo, d = civil_from_days(days)
    s, ms = divmod(ms, 1000)
    h, s = divmod(s, 3600)
    mi, s = divmod(s, 60)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (y, mo, d, h, mi, s, ms)


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

    def learn(self, s):
        """Adopt the server's time s (Unix seconds), e.g. from a Date header. Returns the correction (ms)."""
        self.correction_ms = int(s) * 1000 - self.device_ms()
        return self.correction_ms

    def learn_from_headers(self, server_time=None, date=None):
        """Learn from a `Server-Time` header (ISO 8601, or epoch seconds or milliseconds: MindConnect Library
        C documents it as epoch time) or else from `Date` (HTTP); True if one was usable. The parsing is in
        mcagent.clockutil, loaded for the call: Identity.observe reads an answer's time about once an hour."""
        return compat.call_cold("mcagent.clockutil", "learn_from_headers", self, server_time, date)
