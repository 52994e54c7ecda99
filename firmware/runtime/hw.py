"""Hardware: the thin layer over the port's board modules (machine, network, ntptime, esp32) that the node
runtime uses, with harmless stand-ins where a port lacks one (the unix board): no watchdog, the host's
clock, deep sleep simulated by raising DeepSleep. Tests hand in fakes of the modules.
"""

from mcagent import compat

RESET_NAMES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET", "BROWNOUT_RESET")
_rtc_memory = b""  # the unix board's RTC memory: survives a simulated deep sleep, not a new process


class DeepSleep(BaseException):
    """Raised instead of sleeping where the port cannot deep-sleep (the unix board): main() catches it,
    waits, and boots the node again as a deep-sleep wake. BaseException, so no `except Exception` eats it."""

    def __init__(self, ms):
        super().__init__(ms)
        self.ms = ms


def _try_import(name):
    try:
        return __import__(name)
    except ImportError:
        return None


class Hardware:
    """What main.py needs from the board, over the port's modules; tests hand in fakes.

    Absent facilities (the Unix port has no WDT, RTC, deepsleep, network or ntptime) become no-ops, so the
    same runtime runs on the unix board: no watchdog, the host's clock, simulated deep sleep.
    """

    def __init__(
        self, machine=None, network=None, ntptime=None, esp32=None, time_module=None, reset_cause=None
    ):
        if time_module is None:
            import time as time_module
        self.machine = machine
        self.network = network
        self.ntptime = ntptime
        self.esp32 = esp32
        self.time = time_module
        self._reset_cause = reset_cause
        self._wdt = None
        self._buses = {}
        self.feeds = 0

    @classmethod
    def detect(cls, reset_cause=None):
        """The running port's own modules (whatever of them exist)."""
        return cls(
            _try_import("machine"),
            _try_import("network"),
            _try_import("ntptime"),
            _try_import("esp32"),
            None,
            reset_cause,
        )

    # time
    def ticks_ms(self):
        return compat.ticks_ms(self.time)

    def ticks_diff(self, a, b):
        return compat.ticks_diff(a, b, self.time)

    def sleep_ms(self, ms):
        compat.sleep_ms(ms, self.time)

    # reset cause, watchdog, sleep
    def reset_cause(self):
        """The name of why this boot happened, e.g. "DEEPSLEEP_RESET" ("PWRON_RESET" where unknown)."""
        if self._reset_cause is not None:
            return self._reset_cause
        m = self.machine
        fn = getattr(m, "reset_cause", None)
        if fn is None:
            return "PWRON_RESET"
        code = fn()
        for name in RESET_NAMES:
            if getattr(m, name, None) == code:
                return name
        return "RESET_%s" % code

    def start_watchdog(self, timeout_ms):
        """Start the hardware watchdog (it cannot be stopped again); False where the port has none."""
        wdt = getattr(self.machine, "WDT", None)
        if wdt is None or not timeout_ms:
            return False
        self._wdt = wdt(timeout=timeout_ms)
        return True

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()
            self.feeds += 1

    def timer(self, period_ms, callback):
        """A periodic timer calling callback(t), or None where the port has none."""
        timer = getattr(self.machine, "Timer", None)
        if timer is None:
            return None
        try:
            t = timer(0)
            t.init(period=period_ms, mode=timer.PERIODIC, callback=callback)
            return t
        except (OSError, ValueError, TypeError):
            return None

    def deepsleep(self, ms):
        fn = getattr(self.machine, "deepsleep", None)
        if fn is None:
            raise DeepSleep(ms)
        fn(ms)
        raise DeepSleep(ms)  # not reached on a board: waking is a reboot

    def rtc_memory(self):
        global _rtc_memory
        rtc = getattr(self.machine, "RTC", None)
        if rtc is None:
            return _rtc_memory
        try:
            return bytes(rtc().memory())
        except (OSError, AttributeError):
            return b""

    def set_rtc_memory(self, data):
        global _rtc_memory
        rtc = getattr(self.machine, "RTC", None)
        if rtc is None:
            _rtc_memory = bytes(data)
            return
        try:
            rtc().memory(data)
        except (OSError, AttributeError):
            pass

    def set_time(self, unix_s):
        """Set the RTC to a Unix time (so the device clock survives deep sleep); False where impossible."""
        rtc = getattr(self.machine, "RTC", None)
        if rtc is None:
            return False
        from mcagent.clock import civil_from_days

        days, s = divmod(int(unix_s), 86400)
        y, mo, d = civil_from_days(days)
        try:
            rtc().datetime((y, mo, d, (days + 3) % 7, s // 3600, s // 60 % 60, s % 60, 0))
        except (OSError, AttributeError, ValueError):
            return False
        return True

    def pin_low(self, pin):
        """True if the GPIO reads low with its pull-up on (a held button); False where unreadable."""
        m = self.machine
        if m is None or not hasattr(m, "Pin"):
            return False
        try:
            return m.Pin(pin, m.Pin.IN, m.Pin.PULL_UP).value() == 0
        except (OSError, ValueError, AttributeError, TypeError):
            return False

    def free_heap(self):
        return compat.heap_free()

    def i2c(self, spec):
        """One shared bus object per (id, scl, sda, freq): several sensors on a bus share it."""
        if not isinstance(spec, dict):
            raise ValueError("no I2C bus configured")
        bus_id = spec.get("id", 0)
        key = (bus_id, spec["scl"], spec["sda"], spec.get("freq", 100000))
        bus = self._buses.get(key)
        if bus is None:
            m = self.machine
            pin = m.Pin
            if bus_id == -1:
                bus = m.SoftI2C(scl=pin(key[1]), sda=pin(key[2]), freq=key[3])
            else:
                bus = m.I2C(bus_id, scl=pin(key[1]), sda=pin(key[2]), freq=key[3])
            self._buses[key] = bus
        return bus
