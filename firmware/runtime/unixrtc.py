"""The unix board's RTC memory when it is switched on: empty, or for a run that is one wake from deep sleep
(`--wake`, a process per wake) what the wake before left in a file beside the flash image (or in the flash
directory). runtime.hw reads and writes it (UNIX_RTC); loaded per call and released.
"""

from micropython import const

from runtime.hw import UNIX_RTC, Hardware

_WAKE = const("--wake")
_FLASH = const("--flash")
_ROOT = const("--root")
_QUIET = const("--quiet")
_BESIDE = const(".rtc-memory")


def _option(argv, opt):
    i = argv.index(opt) if opt in argv else -1
    return argv[i + 1] if 0 <= i < len(argv) - 1 else None


def power_on(argv=None, here=None):
    """Switched on: RTC memory empty (a run of main.main in a process that ran another, as tests do, must
    not read the last run's schedule), or for a `--wake` command line the file's (here: the directory the
    run started in, for a relative path), written through at every change from now on. A run that is not
    one wake from deep sleep, or whose flash image is not there, is a power-on: the file goes."""
    UNIX_RTC[0] = b""
    UNIX_RTC[1] = None
    if not argv:
        return
    import os

    flash = _option(argv, _FLASH)
    p = flash + _BESIDE if flash else (_option(argv, _ROOT) or ".").rstrip("/") + "/" + _BESIDE
    p = p if p[0] == "/" else (here or os.getcwd()) + "/" + p
    wake = _WAKE in argv
    if wake and flash:
        try:
            os.stat(flash)
        except OSError:
            wake = False  # no image yet: a new board
    if not wake:  # a power cut (or a new board) clears RTC memory
        try:
            os.remove(p)
        except OSError:
            pass
        return
    UNIX_RTC[1] = p
    try:
        with open(p, "rb") as f:
            UNIX_RTC[0] = f.read()
    except OSError:
        pass


def deep_wake(argv):
    """(hw, flash image or None, flash directory, log) for main.upload_wake when this run is a wake from
    deep sleep (RTC memory as the wake before left it), else None: before the command line's setup."""
    power_on(argv)
    if UNIX_RTC[1] is None:
        return None
    flash = _option(argv, _FLASH)
    root = "/flash" if flash else (_option(argv, _ROOT) or ".").rstrip("/") or "/"
    return Hardware(reset_cause="DEEPSLEEP_RESET"), flash, root, _quiet if _QUIET in argv else None


def _quiet(msg):
    pass
