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


def _parse_args(argv):
    opts = {
        "flash": None,
        "root": None,
        "board": None,
        "settings": None,
        "install": [],
        "speed": None,
        "run_s": None,
        "cycles": None,
        "quiet": False,
        "wake": False,
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(_USAGE)
            raise SystemExit(0)
        if a in ("--quiet", "--wake"):
            opts[a[2:]] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise SystemExit("main.py: %s needs a value\n%s" % (a, _USAGE))
        v = argv[i + 1]
        if a == "--install":
            opts["install"].append(v)
        elif a in ("--speed", "--run-s", "--cycles"):
            try:
                n = int(v) if a == "--cycles" else float(v)
            except ValueError:
                n = 0
            if not n > 0:
                raise SystemExit("main.py: %s must be a number more than 0\n%s" % (a, _USAGE))
            opts[a[2:].replace("-", "_")] = n
        elif a in ("--flash", "--root", "--board", "--settings"):
            opts[a[2:]] = v
        else:
            raise SystemExit("main.py: unknown option %s\n%s" % (a, _USAGE))
        i += 2
    for path in [opts["board"], opts["settings"]] + [x.rsplit(":", 1)[0] for x in opts["install"]]:
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


def setup(argv):
    """Parse the command line, mount the flash, install files, load node.json: a runtime.power.Session,
    or None when a STOP file keeps the node off. Runs once; this module is released before the node runs."""
    import json
    import os

    from runtime import nodecfg
    from runtime.power import Session

    opts = _parse_args(argv)
    dev = None
    if not opts["flash"]:
        root = (opts["root"] or ".").rstrip("/") or "/"
        compat.makedirs(root)
    else:
        blocks = 512
        if opts["board"]:
            with open(opts["board"]) as f:
                blocks = json.loads(f.read()).get("flash", {}).get("blocks", blocks)
        from runtime.flashimage import mount_image

        _make_parent(opts["flash"])
        dev = mount_image(opts["flash"], "/flash", blocks)
        root = "/flash"
    if opts["board"]:
        _copy(opts["board"], root + "/board.json")
    if opts["settings"]:
        _copy(opts["settings"], root + "/settings.json")
    for item in opts["install"]:
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
        nodecfg.scaled(b, opts["speed"] or b.speed)
        if opts["wake"] and b.sleep != "deep":
            raise SystemExit('main.py: --wake needs a board that deep-sleeps (schedule.sleep "deep")')
    except BaseException:
        session.end()
        raise
    finally:
        nodecfg = None
        compat.unload("runtime.nodecfg")
    session.board = b
    session.settings = settings
    session.quiet = opts["quiet"]
    session.one_wake = opts["wake"]
    session.limit_ms = int(opts["run_s"] * 1000) if opts["run_s"] else None
    session.max_cycles = opts["cycles"]
    return session
