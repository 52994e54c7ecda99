"""The unix board's command line: the real node on this computer, flash = a littlefs image (or a directory).

Loaded only on the Unix port (main.main() with arguments, or at a virtual board's REPL); a board never
imports it.
"""

from mcagent import compat


_USAGE = """usage: micropython firmware/main.py [options]   (the unix board: the node on this computer)
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
  --quiet              no per-cycle lines; only the final summary
"""


def _parse_args(argv):
    opts = {"flash": None, "root": None, "board": None, "settings": None, "install": [], "speed": None,
            "run_s": None, "cycles": None, "quiet": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(_USAGE)
            raise SystemExit(0)
        if a == "--quiet":
            opts["quiet"] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise SystemExit("main.py: %s needs a value\n%s" % (a, _USAGE))
        v = argv[i + 1]
        if a == "--install":
            opts["install"].append(v)
        elif a in ("--speed", "--run-s"):
            opts[a[2:].replace("-", "_")] = float(v)
        elif a == "--cycles":
            opts["cycles"] = int(v)
        elif a in ("--flash", "--root", "--board", "--settings"):
            opts[a[2:]] = v
        else:
            raise SystemExit("main.py: unknown option %s\n%s" % (a, _USAGE))
        i += 2
    return opts


def _copy(src, dst):
    import os

    parent = dst.rsplit("/", 1)[0]
    if parent and not compat.exists(parent):
        os.mkdir(parent)
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


def main(argv, agent_factory=None, run=None):
    """The unix board: flash = a littlefs image (or a directory), simulated sensors and deep sleep.

    It has no board modules (no WDT, RTC, Wi-Fi, NTP): the host's clock and network serve as they are.
    """
    import json
    import os

    from runtime import nodecfg
    from runtime.hw import DeepSleep, Hardware

    opts = _parse_args(argv)
    dev = None
    if not opts["flash"]:
        root = (opts["root"] or ".").rstrip("/") or "/"
        if not compat.exists(root):
            os.mkdir(root)
    else:
        blocks = 512
        if opts["board"]:
            with open(opts["board"]) as f:
                blocks = json.loads(f.read()).get("flash", {}).get("blocks", blocks)
        from runtime.flashimage import mount_image

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
    os.chdir(root)
    try:
        if compat.exists("STOP"):  # as on a board: the node stays off while this file exists
            print("mcagent: STOP file: staying at the REPL")
            return None
        b, settings = nodecfg.load()
        nodecfg.scaled(b, opts["speed"] or b.speed)
        nodecfg = None
        compat.unload("runtime.nodecfg")
        log = (lambda m: None) if opts["quiet"] else None
        import time

        start = compat.ticks_ms(time)
        limit_ms = int(opts["run_s"] * 1000) if opts["run_s"] else None
        cycles = [0]

        def stop(node):
            cycles[0] += 1
            if opts["cycles"] and cycles[0] >= opts["cycles"]:
                return True
            return limit_ms is not None and compat.ticks_diff(compat.ticks_ms(time), start, time) >= limit_ms

        cause = None
        while True:
            hw = Hardware(reset_cause=cause or "PWRON_RESET")
            try:
                node = run(b, settings, hw, agent_factory, stop=stop, log=log)
                break
            except DeepSleep as d:
                ms = d.ms
                if limit_ms is not None:  # do not oversleep the end of the run
                    ms = max(0, min(ms, limit_ms - compat.ticks_diff(compat.ticks_ms(time), start, time)))
                compat.sleep_ms(ms, time)
                cause = "DEEPSLEEP_RESET"
                compat.collect()
        print("mcagent-summary " + json.dumps(node.summary()))
        return node
    finally:
        os.chdir(here)
        if dev is not None:
            os.umount("/flash")
            dev.close()
