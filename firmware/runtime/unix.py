"""The unix board's command line: the real node on this computer, flash = a littlefs image (or a directory).

Loaded only on the Unix port (main.main() with arguments, or at a virtual board's REPL) for setup() and
released before the node runs; a board never imports it.
"""

from micropython import const

from mcagent import compat

_USAGE = const("""usage: micropython firmware/main.py [options]   (the unix board: the node on this computer)
  --flash IMAGE        littlefs image file used as the board's flash (created on first use)
  --root DIR           use a host directory as the flash instead (default: the current directory, as on
                       `mcagent vboard`; also works under CPython)
  --board PATH         board.json to install on the flash (default: the one already there)
  --settings PATH      settings.json to install on the flash
  --install PATH[:NAME]  copy a host file onto the flash, e.g. agentconfig.json or ca.der:certs/ca.der (CA
                       certificates go to certs/, where the node looks for them); repeatable
  --speed N            run the schedule N times faster (timestamps stay real)
  --run-s SECONDS      stop after this many real seconds (uploading what is left first)
  --cycles N           stop after N cycles
  --wake               one wake from deep sleep, as a board's (one that deep-sleeps): the node resumes from
                       the state on the flash (reset cause DEEPSLEEP_RESET) and the run ends when it goes
                       back to sleep
  --quiet              no per-cycle lines; only the final summary
""")


# The options as constants (a literal of up to 10 characters would be a name in the heap for the rest of
# the run); the parsed options are keyed by the option itself.
_FLASH = const("--flash")
_ROOT = const("--root")
_BOARD = const("--board")
_SETTINGS = const("--settings")
_INSTALL = const("--install")
_SPEED = const("--speed")
_RUN_S = const("--run-s")
_CYCLES = const("--cycles")
_QUIET = const("--quiet")
_WAKE = const("--wake")


def _parse_args(argv):
    """{option: value} of the command line: paths and numbers as given, flags True, _INSTALL a list."""
    opts = {_INSTALL: []}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(_USAGE)
            raise SystemExit(0)
        if a in (_QUIET, _WAKE):
            opts[a] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise SystemExit("main.py: %s needs a value\n%s" % (a, _USAGE))
        v = argv[i + 1]
        if a == _INSTALL:
            opts[_INSTALL].append(v)
        elif a in (_SPEED, _RUN_S, _CYCLES):
            try:
                n = int(v) if a == _CYCLES else float(v)
            except ValueError:
                n = 0
            if not n > 0:
                raise SystemExit("main.py: %s must be a number more than 0\n%s" % (a, _USAGE))
            opts[a] = n
        elif a in (_FLASH, _ROOT, _BOARD, _SETTINGS):
            opts[a] = v
        else:
            raise SystemExit("main.py: unknown option %s\n%s" % (a, _USAGE))
        i += 2
    for path in [opts.get(_BOARD), opts.get(_SETTINGS)] + [x.rsplit(":", 1)[0] for x in opts[_INSTALL]]:
        if path and not compat.exists(path):
            raise SystemExit("main.py: cannot read %s" % path)
    return opts


def _make_parent(path):
    """The directories a file at path needs (--install targets, a new flash image)."""
    if "/" in path.strip("/"):
        compat.makedirs(path.rsplit("/", 1)[0])


def _copy(src, path):
    _make_parent(path)
    with open(src, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data)


def _anchor_path(here):
    """Relative module paths (MICROPYPATH=build/mpy, and the packages imported from there) made absolute:
    the node runs in its flash directory. A path that is no directory here (a frozen package's) stays."""
    import os
    import sys

    def anchored(p):
        if p in ("", "."):  # the directory it started in, not the flash it moves into
            return here
        if p[0] == "/" or p == ".frozen":
            return p
        try:
            if os.stat(p)[0] & 0x4000:  # S_IFDIR
                return here.rstrip("/") + "/" + p
        except OSError:
            pass
        return p

    for i, p in enumerate(sys.path):
        sys.path[i] = anchored(p)
    import mcagent
    import runtime

    for pkg in (mcagent, runtime):  # imported by now; others come later, by sys.path
        p = getattr(pkg, "__path__", None)
        if isinstance(p, str):
            pkg.__path__ = anchored(p)


def setup(argv, mounted=None):
    """Parse the command line, mount the flash, install files, load node.json: a runtime.power.Session,
    or None when a STOP file keeps the node off. Runs once; this module is released before the node runs.
    mounted: the flash image's block device, mounted at /flash already (by the upload wake)."""
    import json
    import os

    from runtime import nodecfg
    from runtime.power import Session

    try:
        opts = _parse_args(argv)
    except BaseException:
        if mounted is not None:
            mounted.close()
        raise
    dev = mounted
    flash = opts.get(_FLASH)
    board_path = opts.get(_BOARD)
    settings_path = opts.get(_SETTINGS)
    if not flash:
        root = (opts.get(_ROOT) or ".").rstrip("/") or "/"
        compat.makedirs(root)
    elif dev is not None:
        root = "/flash"
    else:
        blocks = 512
        if board_path:
            with open(board_path) as f:
                blocks = json.loads(f.read()).get("flash", {}).get("blocks", blocks)
        from runtime.flashimage import mount_image

        _make_parent(flash)
        dev = mount_image(flash, "/flash", blocks)
        root = "/flash"
    if board_path:
        _copy(board_path, root + "/board.json")
    if settings_path:
        _copy(settings_path, root + "/settings.json")
    for item in opts[_INSTALL]:
        src, name = item, item.rsplit("/", 1)[-1]
        if ":" in item:
            src, name = item.rsplit(":", 1)
        _copy(src, root + "/" + name)
    here = os.getcwd()
    session = Session(here, dev)
    _anchor_path(here)
    os.chdir(root)
    try:
        if compat.exists("STOP"):  # as on a board: the node stays off while this file exists
            print("mcagent: STOP file: staying at the REPL")
            session.end()
            return None
        b, settings = nodecfg.load()
        nodecfg.scaled(b, opts.get(_SPEED) or b.speed)
        if opts.get(_WAKE) and b.sleep != "deep":
            raise SystemExit('main.py: --wake needs a board that deep-sleeps (schedule.sleep "deep")')
    except BaseException:
        session.end()
        raise
    finally:
        nodecfg = None
        compat.unload("runtime.nodecfg")
    session.board = b
    session.settings = settings
    session.quiet = bool(opts.get(_QUIET))
    session.one_wake = bool(opts.get(_WAKE))
    session.argv = argv  # RTC memory: from the wake before to the wake after, with --wake (runtime.unixrtc)
    run_s = opts.get(_RUN_S)
    session.limit_ms = int(run_s * 1000) if run_s else None
    session.max_cycles = opts.get(_CYCLES)
    return session
