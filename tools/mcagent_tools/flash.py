"""Erase a board and write a MicroPython firmware image with esptool (you download the .bin; we never do).

    mcagent flash --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.24.1.bin
    mcagent flash --port /dev/ttyACM0 --firmware ESP32_GENERIC_S3-v1.24.1.bin --chip esp32s3 --dry-run

The chip is read from the image header when --chip is not given; a --chip that disagrees with the image is
refused (writing an ESP32-S3 image to an ESP32 leaves a board that does not boot). Images from
micropython.org/download begin with the bootloader, so they are written at the chip's bootloader offset:
0x1000 on the ESP32 and ESP32-S2, 0x0 on the S3, C3 and C6. Chip ids and offsets are esptool's own.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .runner import ToolError, check_port, shell_line, tool_path
from .runner import run as run_tool

if TYPE_CHECKING:
    from esptool.loader import ESPLoader

#: The chips this command writes MicroPython to (esptool's names; all have ESP-IDF images).
CHIPS = ("esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6")
#: An ESP-IDF image's common header (magic, segments, flash mode, size/frequency, entry point) comes first,
#: then the extended header that holds the chip id.
COMMON_HEADER_LEN = 8
DEFAULT_BAUD = 460800


class FlashError(Exception):
    pass


def chip_defs() -> dict[str, type[ESPLoader]]:
    """esptool's chip classes by name (imported on first use: esptool takes a tenth of a second to load)."""
    from esptool.targets import CHIP_DEFS

    return CHIP_DEFS


def flash_offset(chip: str) -> int:
    """Where a MicroPython image (bootloader first) goes on `chip`: esptool's bootloader offset."""
    return int(chip_defs()[chip].BOOTLOADER_FLASH_OFFSET)


def image_chip(data: bytes) -> str | None:
    """The chip (esptool's name) an ESP-IDF app or bootloader image was built for, None if esptool has no
    chip with the id in its extended header."""
    from esptool.bin_image import ESP32FirmwareImage
    from esptool.loader import ESPLoader

    ext_format = ESP32FirmwareImage.EXTENDED_HEADER_STRUCT_FMT
    if len(data) < COMMON_HEADER_LEN + struct.calcsize(ext_format) or data[0] != ESPLoader.ESP_IMAGE_MAGIC:
        raise FlashError(
            f"not an ESP firmware image (no 0x{ESPLoader.ESP_IMAGE_MAGIC:02X} magic byte): "
            "download a MicroPython .bin for ESP32"
        )
    fields = struct.unpack_from(ext_format, data, COMMON_HEADER_LEN)
    chip_id, append_digest = fields[4], fields[-1]
    if append_digest not in (0, 1):  # esptool refuses such an image too (an ESP8266 image has no such field)
        raise FlashError("not an ESP32-family firmware image (its extended header is invalid)")
    for name, rom in chip_defs().items():
        if rom.IMAGE_CHIP_ID == chip_id:  # None for the ESP8266
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
                f"{firmware}: cannot tell the chip from the image; give --chip {'|'.join(CHIPS)}"
            )
        if found not in CHIPS:
            raise FlashError(
                f"{firmware} is an image for {found}: mcagent flash writes only {', '.join(CHIPS)}"
            )
        chip = found
    elif found is not None and found != chip:
        raise FlashError(f"{firmware} is an image for {found}, not {chip}: pick the right download or --chip")
    offset = flash_offset(chip)
    esptool = tool_path("esptool")
    image = str(firmware.resolve())
    return [
        [esptool, "--chip", chip, "--port", port, "erase-flash"],
        [esptool, "--chip", chip, "--port", port, "--baud", str(baud), "write-flash", f"0x{offset:x}", image],
    ]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--firmware", required=True, type=Path, help="MicroPython .bin downloaded for this board")
    p.add_argument("--chip", choices=CHIPS, help="the board's chip (default: read from the image)")
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
    try:
        check_port(args.port)
    except ToolError as e:
        print(f"mcagent flash: {e}", file=sys.stderr)
        return 2
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
