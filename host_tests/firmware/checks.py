# Assertion helpers that work on CPython and MicroPython alike (firmware tests cannot import pytest).


class Skip(Exception):
    """Raise to skip a test at run time (reported as skipped under both interpreters)."""


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raises; fail if it raises nothing or something else."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("expected " + exc_type.__name__)


def is_micropython():
    import sys

    return sys.implementation.name == "micropython"
