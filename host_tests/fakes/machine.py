# Fake of MicroPython's `machine` module for host tests (CPython and the MicroPython Unix port alike).
#
# One simulated board lives in `sim` (reset it with reset_sim()). Its clock is a SimTime, which also serves
# as the `time` module handed to the firmware: sleeping advances simulated time at once, and advancing time
# fires Timer callbacks and checks the watchdog, so a test can run days of a node's life in milliseconds.
# Scripted parts: reset_cause, RTC memory, ADC voltages, pin levels, I2C devices (BME280Model), and what
# deepsleep()/reset() do (raise DeepSleep/Reset, which are BaseExceptions so `except Exception` in the
# firmware cannot swallow them, as on a real board where they never return).

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
BROWNOUT_RESET = 6

Y2K_S = 946684800
_TICKS_PERIOD = 1 << 30
_TICKS_HALF = 1 << 29


class DeepSleep(BaseException):
    """machine.deepsleep(ms) was called: on a board, the next thing is a reboot."""

    def __init__(self, ms):
        super().__init__(ms)
        self.ms = ms


class Reset(BaseException):
    """machine.reset() was called."""


class WatchdogReset(BaseException):
    """The watchdog was not fed within its timeout: a board would reset here."""


# Calendar arithmetic: the firmware's own (a fake board keeps the same calendar as the agent).
from mcagent.clock import civil_from_days as _civil_from_days  # noqa: E402
from mcagent.clock import days_from_civil as _days_from_civil  # noqa: E402


class SimTime:
    """A port's `time` module over simulated time.

    true_ms: real Unix time (what NTP or a server would say); the device clock reads true_ms + error_ms.
    epoch_year: 2000 (ESP32: time() counts from 2000-01-01) or 1970 (Unix port).
    """

    def __init__(self, unix_s=1790000000, epoch_year=2000, device_unix_s=None, ticks=0):
        self.true_ms = int(unix_s * 1000)
        self.error_ms = 0 if device_unix_s is None else int(device_unix_s * 1000) - self.true_ms
        self.epoch_year = epoch_year
        self.ticks = ticks  # the ms counter behind ticks_ms (not wrapped here; wrapped when read)
        self.timers = []
        self.wdt = None
        self.slept_ms = 0

    # the clock
    def device_ms(self):
        return self.true_ms + self.error_ms

    def set_device_unix_ms(self, ms):
        """Set the device clock (RTC.datetime, NTP) without moving true time or ticks."""
        self.error_ms = int(ms) - self.true_ms

    def _offset_s(self):
        return Y2K_S if self.epoch_year == 2000 else 0

    def time(self):
        s = self.device_ms() // 1000 - self._offset_s()
        return s if self.epoch_year == 2000 else float(s)

    def time_ns(self):
        return (self.device_ms() - self._offset_s() * 1000) * 1000000

    def gmtime(self, secs=None):
        if secs is None:
            secs = self.device_ms() // 1000 - self._offset_s()
        unix = int(secs) + self._offset_s()
        days, s = divmod(unix, 86400)
        y, mo, d = _civil_from_days(days)
        return (y, mo, d, s // 3600, s // 60 % 60, s % 60, (days + 3) % 7, 1)

    localtime = gmtime

    def mktime(self, t):
        return _days_from_civil(t[0], t[1], t[2]) * 86400 + t[3] * 3600 + t[4] * 60 + t[5] - self._offset_s()

    # ticks
    def ticks_ms(self):
        return self.ticks % _TICKS_PERIOD

    def ticks_add(self, a, b):
        return (a + b) % _TICKS_PERIOD

    def ticks_diff(self, a, b):
        # MicroPython's contract: both from ticks_ms()/ticks_add() (a sum past the period is not a tick: on a
        # 32-bit port it is not even a small int, and ticks_diff of it is garbage)
        if not (0 <= a < _TICKS_PERIOD and 0 <= b < _TICKS_PERIOD):
            raise ValueError(f"ticks_diff({a!r}, {b!r}): not made by ticks_ms or ticks_add")
        return ((a - b + _TICKS_HALF) % _TICKS_PERIOD) - _TICKS_HALF

    # sleeping = advancing
    def sleep_ms(self, ms):
        self.slept_ms += int(ms)
        self.advance(int(ms))

    def sleep(self, s):
        self.sleep_ms(int(s * 1000))

    def sleep_us(self, us):
        self.sleep_ms(us // 1000)

    def advance(self, ms):
        """Move time forward by ms, firing due timers and checking the watchdog on the way."""
        end = self.ticks + int(ms)
        while True:
            nxt = end
            for t in self.timers:
                if t.next_at <= nxt:
                    nxt = t.next_at
            w = self.wdt
            if w is not None and w.last_feed + w.timeout < nxt:
                nxt = w.last_feed + w.timeout + 1
            if nxt > end:
                nxt = end
            self.true_ms += nxt - self.ticks
            self.ticks = nxt
            for t in list(self.timers):
                if t.next_at <= self.ticks:
                    t.next_at += t.period
                    t.fire()
            if w is not None and self.ticks - w.last_feed > w.timeout:
                w.expired += 1
                if sim.wdt_raises:
                    starved = self.ticks - w.last_feed
                    raise WatchdogReset(f"watchdog not fed for {starved} ms (timeout {w.timeout})")
                w.last_feed = self.ticks
            if self.ticks >= end:
                return


class _Sim:
    pass


sim = _Sim()


def reset_sim(time=None, reset_cause=PWRON_RESET, wdt_raises=True):
    """A fresh simulated board; returns sim. time: a SimTime (default: 2026, 2000 epoch, clock set)."""
    sim.time = time if time is not None else SimTime()
    sim.reset_cause = reset_cause
    sim.wdt_raises = wdt_raises
    sim.rtc_memory = b""
    sim.deepsleeps = []
    sim.lightsleeps = []
    sim.wdt = None
    sim.wdt_feeds = 0
    sim.adc_uv = {}  # GPIO -> microvolts
    sim.pins = {}  # GPIO -> level read
    sim.i2c_devices = {}  # address -> model with read(reg, n) / write(reg, data)
    sim.timers = []
    return sim


reset_sim()


def reboot(cause=DEEPSLEEP_RESET, keep_rtc_memory=True):
    """What a reset does to the simulated board: watchdog and timers gone, RAM lost (the test makes new
    objects), RTC memory kept across deep sleep but not across a power cut."""
    t = sim.time
    t.wdt = None
    t.timers = []
    sim.wdt = None
    sim.timers = []
    sim.reset_cause = cause
    if not keep_rtc_memory:
        sim.rtc_memory = b""
    return sim


def reset_cause():
    return sim.reset_cause


def deepsleep(ms=None):
    sim.deepsleeps.append(ms)
    raise DeepSleep(ms)


def lightsleep(ms=None):
    sim.lightsleeps.append(ms)
    if ms:
        sim.time.sleep_ms(ms)


def idle():
    pass


def reset():
    raise Reset()


def soft_reset():
    raise Reset()


def freq(hz=None):
    return 160000000


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        self.expired = 0
        self.last_feed = sim.time.ticks
        sim.wdt = self
        sim.time.wdt = self

    def feed(self):
        self.feeds += 1
        sim.wdt_feeds += 1
        self.last_feed = sim.time.ticks


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        self.id = id
        self.callback = None
        self.period = 0
        self.next_at = 0
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=1000, callback=None, freq=None):
        if freq:
            period = 1000 // freq
        self.period = int(period)
        self.mode = mode
        self.callback = callback
        self.next_at = sim.time.ticks + self.period
        if self not in sim.time.timers:
            sim.time.timers.append(self)
        sim.timers.append(self)

    def fire(self):
        if self.mode == Timer.ONE_SHOT:
            self.deinit()
        if self.callback is not None:
            self.callback(self)

    def deinit(self):
        if self in sim.time.timers:
            sim.time.timers.remove(self)


class RTC:
    def __init__(self, id=0):
        pass

    def memory(self, data=None):
        if data is None:
            return sim.rtc_memory
        if len(data) > 2048:
            raise ValueError("buffer too long")
        sim.rtc_memory = bytes(data)

    def datetime(self, dt=None):
        t = sim.time
        if dt is None:
            ms = t.device_ms()
            days, rest = divmod(ms // 1000, 86400)
            y, mo, d = _civil_from_days(days)
            return (y, mo, d, (days + 3) % 7, rest // 3600, rest // 60 % 60, rest % 60, (ms % 1000) * 1000)
        y, mo, d, _wd, h, mi, s = dt[:7]
        sub_us = dt[7] if len(dt) > 7 else 0
        unix_s = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
        t.set_device_unix_ms(unix_s * 1000 + sub_us // 1000)

    def init(self, dt):
        self.datetime(dt)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        if value is not None:
            sim.pins[id] = value

    def value(self, v=None):
        if v is None:
            return sim.pins.get(self.id, 1 if self.pull == Pin.PULL_UP else 0)
        sim.pins[self.id] = 1 if v else 0

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, v=None):
        return self.value(v)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_12BIT = 3
    _FULL_UV = (950000, 1250000, 1750000, 2450000)

    def __init__(self, pin, atten=None):
        self.pin = pin.id if isinstance(pin, Pin) else pin
        self._atten = ADC.ATTN_0DB if atten is None else atten
        self.reads = 0

    def atten(self, a):
        self._atten = a

    def read_uv(self):
        self.reads += 1
        return min(sim.adc_uv.get(self.pin, 0), ADC._FULL_UV[self._atten])

    def read_u16(self):
        uv = min(sim.adc_uv.get(self.pin, 0), ADC._FULL_UV[self._atten])
        return uv * 65535 // ADC._FULL_UV[self._atten]

    def read(self):
        return self.read_u16() >> 4


class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.scl = scl
        self.sda = sda
        self.freq = freq

    def _dev(self, addr):
        dev = sim.i2c_devices.get(addr)
        if dev is None:
            raise OSError(19)  # ENODEV: nobody acknowledged the address (ESP32's errno for a NACK)
        return dev

    def scan(self):
        return sorted(sim.i2c_devices)

    def readfrom_mem(self, addr, reg, n, addrsize=8):
        return bytes(self._dev(addr).read(reg, n))

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        data = self._dev(addr).read(reg, len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self._dev(addr).write(reg, bytes(buf))

    def writeto(self, addr, buf, stop=True):
        data = bytes(buf)
        dev = self._dev(addr)
        if data:
            dev.write(data[0], data[1:])
        return 1

    def readfrom(self, addr, n, stop=True):
        return bytes(self._dev(addr).read(None, n))


SoftI2C = I2C


class BME280Model:
    """Register model of a Bosch BME280 (or a BMP280 with chip_id=0x58) for the fake I2C bus.

    cal: the 18 compensation values T1..T3, P1..P9, H1..H6, stored in registers 0x88..0xA1 and
    0xE1..0xE7 in the datasheet's layout; raw: (adc_T, adc_P, adc_H) that the next forced measurement
    puts into 0xF7..0xFE. busy_polls: status reads that still show "measuring" after a trigger.
    """

    # The BMP280 datasheet's example calibration (section 3.12) and typical BME280 humidity values.
    DEFAULT_CAL = (
        27504,
        26435,
        -1000,
        36477,
        -10685,
        3024,
        2855,
        140,
        -7,
        15500,
        -14600,
        6000,
        75,
        362,
        0,
        313,
        50,
        30,
    )

    def __init__(self, cal=None, raw=(519888, 415148, 30000), chip_id=0x60, busy_polls=1):
        import struct

        self.regs = bytearray(256)
        self.regs[0xD0] = chip_id
        c = cal or BME280Model.DEFAULT_CAL
        self.cal = c
        self.regs[0x88 : 0x88 + 24] = struct.pack("<HhhHhhhhhhhh", *c[:12])
        self.regs[0xA1] = c[12] & 0xFF
        h4, h5 = c[15], c[16]
        self.regs[0xE1:0xE3] = struct.pack("<h", c[13])
        self.regs[0xE3] = c[14] & 0xFF
        self.regs[0xE4] = (h4 >> 4) & 0xFF
        self.regs[0xE5] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
        self.regs[0xE6] = (h5 >> 4) & 0xFF
        self.regs[0xE7] = c[17] & 0xFF
        self.raw = raw
        self.busy_polls = busy_polls
        self._busy = 0
        self.writes = []  # (reg, value) in order
        self.measurements = 0
        self.resets = 0

    def read(self, reg, n):
        if reg == 0xF3:
            if self._busy > 0:
                self._busy -= 1
                return bytes([0x08])
            return bytes([0x00])
        return bytes(self.regs[reg : reg + n])

    def write(self, reg, data):
        for i in range(len(data)):
            r = reg + i
            v = data[i]
            self.writes.append((r, v))
            if r == 0xE0 and v == 0xB6:
                self.resets += 1
                for k in (0xF2, 0xF4, 0xF5):
                    self.regs[k] = 0
                continue
            self.regs[r] = v
            if r == 0xF4 and v & 0x03 == 0x01:  # forced mode: measure once, then back to sleep
                self.measurements += 1
                self._busy = self.busy_polls
                t, p, h = self.raw
                self.regs[0xF7] = (p >> 12) & 0xFF
                self.regs[0xF8] = (p >> 4) & 0xFF
                self.regs[0xF9] = (p & 0x0F) << 4
                self.regs[0xFA] = (t >> 12) & 0xFF
                self.regs[0xFB] = (t >> 4) & 0xFF
                self.regs[0xFC] = (t & 0x0F) << 4
                self.regs[0xFD] = (h >> 8) & 0xFF
                self.regs[0xFE] = h & 0xFF
                self.regs[0xF4] = v & 0xFC
