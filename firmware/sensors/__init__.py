"""Sensor drivers: one small module per kind, imported only when a board uses that kind.

Each driver module has:
- CHANNELS: {channel: (DSC type, unit)} it can measure, or None when points define their own (simulator);
- check(spec, chip, where, problems): append a sentence per problem in the sensor's board.json entry;
- Driver(spec, hw) with read(t_ms) -> {channel: value}; it raises SensorError (or OSError from the bus)
  when the hardware does not answer, so one broken sensor never stops the others.
hw is runtime.hw.Hardware (or a test stand-in with .machine, .esp32, .time, .sleep_ms(ms), .i2c(spec)).

The drivers import what they share from here (SensorError, number); this package names them only by their
kind, loading one when it is asked for (module): a driver costs heap only on a board that has that sensor,
and the package does not import its drivers (no import cycle).
"""

from mcagent import compat

KINDS = ("mcu_temp", "adc", "bme280", "sim")


class SensorError(Exception):
    """A sensor is missing, of the wrong type or answered nonsense; the message names it."""


def module(kind):
    """The driver module of a sensor kind, sensors.<kind> (ValueError for an unknown kind)."""
    if kind not in KINDS:
        raise ValueError("unknown sensor kind %r (known: %s)" % (kind, ", ".join(KINDS)))
    return compat.load("sensors." + kind)


def convert(typ, value):
    """A driver's value as the DSC type wants it (ValueError/TypeError if it cannot be)."""
    if typ == "DOUBLE":
        return float(value)
    if typ == "INT" or typ == "LONG":
        return int(round(value)) if isinstance(value, float) else int(value)
    if typ == "BOOLEAN":
        return bool(value)
    return str(value)


def number(spec, key, where, problems, default, lo=None, hi=None, whole=False):
    """spec[key] as a number within [lo, hi] (whole: an int, as a port's C functions take), or default when
    absent; a problem sentence otherwise."""
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        what = "whole number" if whole else "number"
        problems.append("%s.%s must be a %s, got %r" % (where, key, what, value))
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        problems.append("%s.%s must be between %s and %s, got %r" % (where, key, lo, hi, value))
        return default
    return value
