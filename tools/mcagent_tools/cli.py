"""`mcagent`: put the agent on boards — flash MicroPython, deploy, check status, or run a virtual board.

mcagent flash  --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.24.1.bin
mcagent deploy --port /dev/ttyUSB0 --board esp32_generic --config agentconfig.json --settings settings.json
mpremote connect /dev/ttyUSB0 repl                 # watch it run
mcagent status --port /dev/ttyUSB0
mcagent vboard --dir ./vboard                      # a virtual board for trying it without hardware
mcagent read --southgate ./sg-data --app app.json --asset ID --aspect A --from ISO --to ISO --format csv
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from . import deploy, flash, package, read, status, vboard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcagent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands = (
        ("deploy", deploy, "compile the firmware for the board and install it with its configuration"),
        ("flash", flash, "erase a board and write a MicroPython firmware image with esptool"),
        ("status", status, "show the agent's state on a board (no secrets)"),
        ("read", read, "read an asset's time series (IoT Time Series) or events back as applications do"),
        ("vboard", vboard, "run a virtual board (MicroPython Unix port on a pseudo-terminal)"),
        ("package-json", package, "write (or --check) package.json, the file list for `mip install`"),
    )
    for name, module, help_text in commands:
        raw = argparse.RawDescriptionHelpFormatter
        p = sub.add_parser(name, help=help_text, description=module.__doc__, formatter_class=raw)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


#: Exit status when the reader of our output went away (`mcagent status | head -1`): what a shell reports
#: for a program ended by SIGPIPE, 128 + 13 (1 where there is no SIGPIPE).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


def _discard_stdout() -> None:
    """Point stdout at the null device, so the interpreter's last flush at exit cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests redirect it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            args = build_parser().parse_args(argv)
            return int(args.func(args))
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback when Python exits
    except KeyboardInterrupt:
        print("mcagent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped reading (`| head`): end quietly, like any Unix tool. The commands
        # write to no pipe but stdout and stderr (tools they run get stdin from the null device).
        _discard_stdout()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
