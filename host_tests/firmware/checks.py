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


def b64url_decode(text):
    """base64url, padded or not -> bytes: what a test needs to read a token (the firmware never decodes)."""
    import binascii

    if isinstance(text, str):
        text = text.encode()
    text = text.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    return binascii.a2b_base64(text + b"=" * (-len(text) % 4))


def is_micropython():
    import sys

    return sys.implementation.name == "micropython"


RUNTIME_HEAP_KB = 64


def _keep(name):
    """compat.unload while board_heap() holds: frozen code is never released (it is not in the heap)."""


def board_heap(kb=RUNTIME_HEAP_KB):
    """Leave kb of free heap for what the agent does at run time, as on a board whose firmware is frozen
    (MicroPython only; None on CPython). Keep the returned ballast referenced while the agent works.

    Frozen code lives in flash, not in the heap; on the Unix port .mpy bytecode (and its names) is loaded
    into the heap. So every mcagent module is loaded first and kept (compat.unload does nothing from now on:
    a frozen module is never released), then a ballast holds the surplus: what is left is run-time data
    only. The ballast fills the heap from the bottom in 1 KB pieces, so the free kb lie mostly in one stretch
    at the top. The heap as deployed (.mpy on the filesystem, modules loaded and released per phase) is
    measured on the 32-bit port by test_fit32.py."""
    import sys

    if sys.implementation.name != "micropython":
        return None
    import gc
    import os

    import mcagent
    from mcagent import compat

    compat.unload = _keep
    for name in sorted(os.listdir(mcagent.__path__)):
        if name.endswith(".mpy") or name.endswith(".py"):
            base = name.rsplit(".", 1)[0]
            if base not in ("__init__", "hostcompat"):  # hostcompat: CPython's, never on a board
                compat.load("mcagent." + base)
    gc.collect()
    want = kb * 1024
    pieces = []
    while True:
        spare = gc.mem_free() - want
        if spare <= 64:
            return pieces or None
        pieces.append(bytearray(min(1024, spare - 32)))
