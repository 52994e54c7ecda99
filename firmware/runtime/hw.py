"""Hardware: the thin layer over the port's board modules (machine, network, ntptime, esp32) that the node
runtime uses, with harmless stand-ins where a port lacks one (the unix board): no watchdog, the host's
clock, deep sleep simulated by raising DeepSleep. Tests hand in fakes of the modules.

Heap: this module stays loaded for a whole wake, through the upload (its peak), so it keeps what a wake uses
all along: ticks, sleep, the watchdog's feed, RTC memory. What a wake asks of the board once (finding the
port's modules, the reset cause, starting the watchdog and its timer, setting the RTC, reading a pin, making
an I2C bus) is in runtime.hwcold, loaded per call and released at once.
"""

from mcagent import compat

# What RTC memory holds (it survives deep sleep, not a power cut): the node's state, a copy of the one on
# flash, after one of these marks: the state (0), the state and a request that the next wake upload
# (1: runtime.cycle, runtime.upwake), or that request taken by the upload wake (2: a boot that finds it
# after the upload wake did not end well uploads the usual way). One name for the three.
MARKS = (b"MCN1", b"MCU1", b"MCT1")
# The unix board's RTC memory (survives a simulated deep sleep) and the file that keeps it between runs
# that are one wake from deep sleep each (runtime.unixrtc).
UNIX_RTC = [b"", None]


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
        self.deadline = None  # ticks until which tick() feeds the watchdog (guard)

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

    def tick(self, t):
        """The watchdog timer's callback: feed the watchdog while a guarded step is within its budget."""
        d = self.deadline
        if d is not None and self.ticks_diff(d, self.ticks_ms()) > 0:
            self.feed()

    def guard(self, ms):
        """From now on, for ms, the timer keeps the watchdog fed through blocking calls (a stalled
        upload); past the budget it stops, and the watchdog resets a hung board."""
        self.feed()
        self.deadline = self.ticks_add(self.ticks_ms(), ms)

    def unguard(self):
        self.deadline = None
        self.feed()

    def deepsleep(self, ms):
        fn = getattr(self.machine, "deepsleep", None)
        if fn is None:
            raise DeepSleep(ms)
        fn(ms)
        raise DeepSleep(ms)  # not reached on a board: waking is a reboot

    def rtc_memory(self):
        rtc = getattr(self.machine, "RTC", None)
        if rtc is None:
            return UNIX_RTC[0]
        try:
            return bytes(rtc().memory())
        except (OSError, AttributeError):
            return b""

    def set_rtc_memory(self, data):
        rtc = getattr(self.machine, "RTC", None)
        if rtc is None:
            UNIX_RTC[0] = bytes(data)
            if UNIX_RTC[1] is not None:
                with open(UNIX_RTC[1], "wb") as f:
                    f.write(UNIX_RTC[0])
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
