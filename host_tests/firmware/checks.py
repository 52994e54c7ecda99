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


RUNTIME_HEAP_KB = 64
# mcagent.enroll with the signing code it pulls in (jwt, hmac256, b64), ~11 KB as 64-bit .mpy: the agent
# imports it when a token is to be fetched and releases it after, so it cannot be loaded before the ballast
# is taken; its room is added to the budget (on a board with frozen firmware it costs nothing). Likewise the
# cold parts a flush loads per use and releases at once, one or two at a time (clockutil per answer,
# exchangecold per file item, httpsetup per connection, storeinfo after the flush): ~4 KB more.
ON_DEMAND_CODE_KB = 16


def board_heap(kb=RUNTIME_HEAP_KB + ON_DEMAND_CODE_KB):
    """Leave kb of free heap, as on a board whose firmware is frozen (MicroPython only; None on CPython).

    On the Unix port .mpy bytecode lives in the heap; a board with frozen firmware has it in flash. So a
    test starts with a bigger -X heapsize and holds the surplus in this ballast once the modules are
    loaded. Keep the returned ballast referenced while the agent works."""
    import sys

    if sys.implementation.name != "micropython":
        return None
    import gc

    gc.collect()
    spare = gc.mem_free() - kb * 1024
    return bytearray(spare) if spare > 0 else None
