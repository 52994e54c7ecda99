"""`mcagent`: put the agent on boards — flash MicroPython, deploy, check status, or run a virtual board.

mcagent flash  --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.24.1.bin
mcagent deploy --port /dev/ttyUSB0 --board esp32_generic --config agentconfig.json --settings settings.json
mpremote connect /dev/ttyUSB0 repl                 # watch it run
mcagent status --port /dev/ttyUSB0
mcagent vboard --dir ./vboard                      # a virtual board for trying it without hardware
"""

from __future__ import annotations

import argparse
import sys

from . import deploy, flash, package, status, vboard


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcagent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser(
        "deploy",
        help="compile the firmware for the board and install it with its configuration",
        description=deploy.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    deploy.add_arguments(d)
    d.set_defaults(func=deploy.run)

    f = sub.add_parser(
        "flash",
        help="erase a board and write a MicroPython firmware image with esptool",
        description=flash.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flash.add_arguments(f)
    f.set_defaults(func=flash.run)

    s = sub.add_parser(
        "status",
        help="show the agent's state on a board (no secrets)",
        description=status.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_arguments(s)
    s.set_defaults(func=status.run)

    v = sub.add_parser(
        "vboard",
        help="run a virtual board (MicroPython Unix port on a pseudo-terminal)",
        description=vboard.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vboard.add_arguments(v)
    v.set_defaults(func=vboard.run)

    p = sub.add_parser(
        "package-json",
        help="write (or --check) package.json, the file list for `mpremote mip install`",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    package.add_arguments(p)
    p.set_defaults(func=package.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("mcagent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
