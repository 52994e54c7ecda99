"""What a wake asks of the board once, over runtime.hw.Hardware's modules: finding the port's modules, the
reset cause, starting the watchdog and its timer, setting the RTC, reading a pin, making an I2C bus. Loaded
per call (mcagent.compat.call_cold) and released at once: runtime.hw keeps only what a wake uses all along.
"""

RESET_NAMES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET", "BROWNOUT_RESET")


def _try_import(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def detect(reset_cause=None):
    """A Hardware over the running port's own modules (whatever of them exist)."""
    from runtime.hw import Hardware

    return Hardware(
        _try_import("machine"),
        _try_import("network"),
        _try_import("ntptime"),
        _try_import("esp32"),
        None,
        reset_cause,
    )


def reset_cause(hw):
    """The name of why this boot happened, e.g. "DEEPSLEEP_RESET" ("PWRON_RESET" where unknown)."""
    if hw.cause is not None:
        return hw.cause
    m = hw.machine
    fn = getattr(m, "reset_cause", None)
    if fn is None:
        return "PWRON_RESET"
    code = fn()
    for name in RESET_NAMES:
        if getattr(m, name, None) == code:
            return name
    return "RESET_%s" % code


def start_watchdog(hw, timeout_ms):
    """Start the hardware watchdog (it cannot be stopped again); False where the port has none. Once per
    boot: an upload wake (runtime.upsetup) started it before the node's boot."""
    if hw.wdt is not None:
        return True
    wdt = getattr(hw.machine, "WDT", None)
    if wdt is None or not timeout_ms:
        return False
    hw.wdt = wdt(timeout=timeout_ms)
    return True


def timer(hw, period_ms, callback):
    """A periodic timer calling callback(t), or None where the port has none."""
    t = getattr(hw.machine, "Timer", None)
    if t is None:
        return None
    try:
        tm = t(0)
        tm.init(period=period_ms, mode=t.PERIODIC, callback=callback)
        return tm
    except (OSError, ValueError, TypeError):
        return None


def set_time(hw, epoch_s):
    """Set the RTC to a Unix time (so the device clock survives deep sleep); False where impossible."""
    rtc = getattr(hw.machine, "RTC", None)
    if rtc is None:
        return False
    from mcagent.clock import civil_from_days

    days, s = divmod(int(epoch_s), 86400)
    y, mo, d = civil_from_days(days)
    try:
        rtc().datetime((y, mo, d, (days + 3) % 7, s // 3600, s // 60 % 60, s % 60, 0))
    except (OSError, AttributeError, ValueError):
        return False
    return True


def pin_low(hw, pin):
    """True if the GPIO reads low with its pull-up on (a held button); False where unreadable."""
    m = hw.machine
    if m is None or not hasattr(m, "Pin"):
        return False
    try:
        return m.Pin(pin, m.Pin.IN, m.Pin.PULL_UP).value() == 0
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def i2c(hw, spec):
    """Hardware.i2c: one shared bus object per (id, scl, sda, freq)."""
    if not isinstance(spec, dict):
        raise ValueError("no I2C bus configured")
    bus_id = spec.get("id", 0)
    key = (bus_id, spec["scl"], spec["sda"], spec.get("freq", 100000))
    bus = hw.buses.get(key)
    if bus is None:
        m = hw.machine
        pin = m.Pin
        if bus_id == -1:
            bus = m.SoftI2C(scl=pin(key[1]), sda=pin(key[2]), freq=key[3])
        else:
            bus = m.I2C(bus_id, scl=pin(key[1]), sda=pin(key[2]), freq=key[3])
        hw.buses[key] = bus
    return bus
