"""Erase a board and write a MicroPython firmware image with esptool (you download the .bin; we never do).

    mcagent flash --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.24.1.bin
    mcagent flash --port /dev/ttyACM0 --firmware ESP32_GENERIC_S3-v1.24.1.bin --chip esp32s3 --dry-run

The chip is read from the image header when --chip is not given; a --chip that disagrees with the image is
refused (writing an ESP32-S3 image to an ESP32 leaves a board that does not boot). Images from
micropython.org/download are written at 0x1000 on the ESP32 and at 0x0 on the S3 and C3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runner import ToolError, shell_line, tool_path
from .runner import run as run_tool

#: chip -> (flash offset of MicroPython's combined image, chip id in the image's extended header)
CHIPS = {
    "esp32": (0x1000, 0),
    "esp32s3": (0x0, 9),
    "esp32c3": (0x0, 5),
}
IMAGE_MAGIC = 0xE9
DEFAULT_BAUD = 460800


class FlashError(Exception):
    pass


def image_chip(data: bytes) -> str | None:
    """The chip an ESP app image was built for (from its extended header), None if unknown."""
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise FlashError(
            "not an ESP firmware image (no 0xE9 magic byte): download a MicroPython .bin for ESP32"
        )
    chip_id = int.from_bytes(data[12:14], "little")
    for name, (_, cid) in CHIPS.items():
        if cid == chip_id:
            return name
    return None


def plan(port: str, firmware: Path, chip: str | None, baud: int = DEFAULT_BAUD) -> list[list[str]]:
    """The esptool commands: erase the whole flash, then write the image at the chip's offset."""
    try:
        with open(firmware, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise FlashError(f"{firmware}: cannot read the firmware image ({e.strerror})") from None
    found = image_chip(head)
    if chip is None:
        if found is None:
            raise FlashError(
                f"{firmware}: cannot tell the chip from the image; give --chip esp32|esp32s3|esp32c3"
            )
        chip = found
    elif found is not None and found != chip:
        raise FlashError(f"{firmware} is an image for {found}, not {chip}: pick the right download or --chip")
    offset = CHIPS[chip][0]
    esptool = tool_path("esptool")
    image = str(firmware.resolve())
    return [
        [esptool, "--chip", chip, "--port", port, "erase-flash"],
        [esptool, "--chip", chip, "--port", port, "--baud", str(baud), "write-flash", f"0x{offset:x}", image],
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--firmware", required=True, type=Path, help="MicroPython .bin downloaded for this board")
    p.add_argument("--chip", choices=sorted(CHIPS), help="default: read from the image")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    p.add_argument(
        "--dry-run", action="store_true", help="print the esptool commands instead of running them"
    )


def run(args: argparse.Namespace) -> int:
    try:
        commands = plan(args.port, args.firmware, args.chip, args.baud)
    except (FlashError, ToolError) as e:
        print(f"mcagent flash: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for argv in commands:
            print(shell_line(argv))
        return 0
    for argv in commands:
        print(f"$ {shell_line(argv)}", flush=True)
        result = run_tool(argv, timeout_s=600, stream=True)
        if not result.ok:
            print(
                f"mcagent flash: {argv[-1] if argv[-1] == 'erase-flash' else 'write-flash'} failed "
                f"(exit {result.returncode}); is the board in download mode (hold BOOT, tap EN)?",
                file=sys.stderr,
            )
            return 1
    print(
        f"mcagent flash: done; next: mcagent deploy --port {args.port} --board NAME --config agentconfig.json"
    )
    return 0
