"""UTC time on 1970- and 2000-epoch ports, ISO 8601 and HTTP dates, server-learned correction."""

from checks import raises
from mcagent import clock, compat

Y2K = 946684800


class FakeTime:
    """A `time` module of a port: epoch 2000 (like ESP32) or 1970, clock set to a given Unix time."""

    def __init__(self, unix_s, epoch_year=2000, with_ns=True):
        self.unix_s = unix_s
        self.epoch_year = epoch_year
        if with_ns:
            self.time_ns = self._time_ns

    def _port_s(self):
        return self.unix_s - (Y2K if self.epoch_year == 2000 else 0)

    def gmtime(self, secs=0):
        return (self.epoch_year, 1, 1, 0, 0, 0, 5, 1)

    def time(self):
        return int(self._port_s())

    def _time_ns(self):
        return int(self._port_s() * 1000) * 1000000


def test_iso_format_known_values():
    assert clock.iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert clock.iso_ms(951782400000) == "2000-02-29T00:00:00.000Z"
    assert clock.iso_ms(1790000000123) == "2026-09-21T14:13:20.123Z"
    assert clock.iso_ms(4102444799999) == "2099-12-31T23:59:59.999Z"


def test_iso_parse_variants():
    assert clock.parse_iso("2026-09-21T14:13:20.123Z") == 1790000000123
    assert clock.parse_iso("2026-09-21T14:13:20Z") == 1790000000000
    assert clock.parse_iso("2026-09-21T14:13:20.1234567Z") == 1790000000123
    assert clock.parse_iso("2026-09-21T16:13:20.123+02:00") == 1790000000123
    assert clock.parse_iso("2026-09-21T13:13:20.123-01:00") == 1790000000123
    assert clock.parse_iso("2026-09-21T14:13:20.5") == 1790000000500
    for bad in ["", "2026-09-21", "2026-13-01T00:00:00Z", "2026-09-21T14:13:20.Z", "2026-09-21T14:13:20+0200",
                "2026-09-21T14:13:2xZ", "2026/09/21T14:13:20Z", "2026-09-21T14:13:20ZZ",
                "2025-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-09-21T24:00:00Z",  # no such time
                "\uff12026-09-21T14:13:20Z"]:  # a full-width digit: a digit to CPython, not to a timestamp
        raises(ValueError, clock.parse_iso, bad)
    assert clock.parse_iso("2024-02-29T00:00:00Z") == 19782 * 86400000  # a leap day is


def test_iso_roundtrip_across_centuries_and_leap_days():
    ms = -86400000 * 365 * 3
    while ms < 4200000000000:
        assert clock.parse_iso(clock.iso_ms(ms)) == ms
        ms += 86400000 * 17 + 3600007


def test_civil_days_match_known_dates():
    assert clock.days_from_civil(1970, 1, 1) == 0
    assert clock.days_from_civil(2000, 1, 1) * 86400 == Y2K
    assert clock.days_from_civil(2024, 2, 29) == 19782
    assert clock.civil_from_days(19782) == (2024, 2, 29)
    assert clock.civil_from_days(-1) == (1969, 12, 31)


def test_http_dates():
    assert clock.http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert clock.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert clock.parse_http_date(clock.http_date(1790000000)) == 1790000000
    for bad in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
                "Sun, 06 Nov 1994 08:49 GMT", "", "Tue, 31 Feb 2026 10:00:00 GMT",
                "Sun, 06 Nov 1994 99:99:99 GMT",
                "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT"]:
        raises(ValueError, clock.parse_http_date, bad)
    # a Server-Time that is no number and no time: None (the Date header is used), not an exception
    assert clock.parse_server_time("1790000000\u00b2") is None


def test_epoch_2000_port_gives_unix_time():
    fake = FakeTime(1790000000.25, epoch_year=2000)
    assert compat.epoch_offset(fake) == Y2K
    c = clock.Clock(fake)
    assert c.now_s() == 1790000000
    assert c.now_ms() == 1790000000250
    assert c.is_sane()


def test_epoch_2000_port_without_time_ns():
    c = clock.Clock(FakeTime(1790000000, epoch_year=2000, with_ns=False))
    assert c.now_ms() == 1790000000000


def test_epoch_1970_port_and_real_clock():
    assert clock.Clock(FakeTime(1790000000, epoch_year=1970)).now_s() == 1790000000
    real = clock.Clock()
    assert real.is_sane()  # this machine's clock is set
    assert abs(real.now_s() - compat.port_time_ms() // 1000 - compat.epoch_offset()) <= 1


def test_insane_device_clock_corrected_from_server_date():
    # A board whose RTC never got set: 2000-01-01 plus ten minutes of uptime.
    fake = FakeTime(Y2K + 600, epoch_year=2000)
    c = clock.Clock(fake)
    assert not c.is_sane()
    assert c.learn_from_headers(date="Mon, 21 Sep 2026 14:13:20 GMT")
    assert c.now_s() == 1790000000 and c.is_sane()
    fake.unix_s += 30
    assert c.now_s() == 1790000030
    assert c.learn_from_headers(server_time="2026-09-21T14:14:00.000Z")
    assert c.now_s() == 1790000040
    assert not c.learn_from_headers(date="garbage")
    assert not c.learn_from_headers()
    assert c.now_s() == 1790000040
