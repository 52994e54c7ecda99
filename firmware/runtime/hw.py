"""Hardware: the thin layer over the port's board modules (machine, network, ntptime, esp32) that the node
runtime uses, with harmless stand-ins where a port lacks one (the unix board): no watchdog, the host's
clock, deep sleep simulated by raising DeepSleep. Tests hand in fakes of the modules.

Heap: this module stays loaded for a whole wake, through the upload (its peak), so it keeps what a wake uses
all along: ticks, sleep, the watchdog's feed, RTC memory. What a wake asks of the board once (finding the
port's modules, the reset cause, starting the watchdog and its timer, setting the RTC, reading a pin, making
an I2C bus) is in runtime.hwcold, loaded per call and released at once.
"""

from mcagent import compat

_rtc_memory = b""  # the unix board's RTC memory: survives a simulated deep sleep, not a new process


def power_on():
    """The unix board is switched on: its RTC memory starts empty (a run of main.main in a process that
    ran another, as tests do, must not read the last run's schedule from it)."""
    global _rtc_memory
    _rtc_memory = b""


class DeepSleep(BaseException):
    """Raised instead of sleeping where the port cannot deep-sleep (the unix board): main() catches it,
    waits, and boots the node again as a deep-sleep wake. BaseException, so no `except Exception` eats it."""

    def __init__(self, ms):
        super().__init__(ms)
        self.ms = ms


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
        self.cause = reset_cause  # the reset cause to report (None: ask the port; runtime.hwcold)
        self.wdt = None  # the watchdog once started (runtime.hwcold.start_watchdog)
        self.buses = {}  # I2C buses made, by (id, scl, sda, freq)
        self.feeds = 0

    # time
    def ticks_ms(self):
        return compat.ticks_ms(self.time)

    def ticks_add(self, a, ms):
        return compat.ticks_add(a, ms, self.time)

    def ticks_diff(self, a, b):
        return compat.ticks_diff(a, b, self.time)

    def sleep_ms(self, ms):
        compat.sleep_ms(ms, self.time)

    # watchdog, sleep, RTC memory
    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()
            self.feeds += 1

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

    def free_heap(self):
        return compat.heap_free()

    def i2c(self, spec):
        """One shared bus object per (id, scl, sda, freq): several sensors on a bus share it (the sensor
        drivers' contract; runtime.hwcold.i2c)."""
        return compat.call_cold("runtime.hwcold", "i2c", self, spec)
