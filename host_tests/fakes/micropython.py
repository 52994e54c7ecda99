"""CPython stand-in for MicroPython's `micropython` module (only what the firmware uses)."""


def const(value):
    return value


def native(fn):
    return fn


def viper(fn):
    return fn


def mem_info(*args):
    pass
