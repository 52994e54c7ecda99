"""`mcagent flash --dry-run`: the esptool commands for each chip (no board is ever flashed in tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcagent_helpers import run_cli_here
from mcagent_tools.runner import tool_path


def fake_image(path: Path, chip_id: int) -> Path:
    """The first bytes of an ESP app image: magic 0xE9, segments, mode, size, entry, extended header."""
    header = bytes([0xE9, 3, 2, 0x20]) + (0x40080000).to_bytes(4, "little")
    extended = bytes([0xEE, 0, 0, 0]) + chip_id.to_bytes(2, "little") + bytes(10)
    path.write_bytes(header + extended + bytes(1000))
    return path


@pytest.mark.parametrize(
    ("chip", "chip_id", "offset"), [("esp32", 0, "0x1000"), ("esp32s3", 9, "0x0"), ("esp32c3", 5, "0x0")]
)
def test_dry_run_prints_erase_then_write_at_the_chip_offset(
    tmp_path: Path, chip: str, chip_id: int, offset: str
) -> None:
    image = fake_image(tmp_path / f"{chip} firmware.bin", chip_id)
    esptool = tool_path("esptool")
    for extra in ([], ["--chip", chip]):  # the chip comes from the image, or agrees with --chip
        proc = run_cli_here("flash", "--port", "/dev/ttyUSB0", "--firmware", str(image), "--dry-run", *extra)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == (
            f"{esptool} --chip {chip} --port /dev/ttyUSB0 erase-flash\n"
            f"{esptool} --chip {chip} --port /dev/ttyUSB0 --baud 460800 write-flash {offset} "
            f"'{image.resolve()}'\n"
        )


def test_baud_option(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "fw.bin", 0)
    proc = run_cli_here("flash", "--port", "COM3", "--firmware", str(image), "--baud", "115200", "--dry-run")
    assert "--port COM3 --baud 115200 write-flash 0x1000" in proc.stdout


def test_refuses_an_image_for_another_chip(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "s3.bin", 9)
    proc = run_cli_here(
        "flash", "--port", "/dev/ttyACM0", "--firmware", str(image), "--chip", "esp32", "--dry-run"
    )
    assert proc.returncode == 2
    assert "is an image for esp32s3, not esp32" in proc.stderr
    assert proc.stdout == ""


def test_refuses_what_is_not_a_firmware_image(tmp_path: Path) -> None:
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    proc = run_cli_here("flash", "--port", "/dev/ttyUSB0", "--firmware", str(not_image), "--dry-run")
    assert proc.returncode == 2 and "not an ESP firmware image" in proc.stderr
    missing = run_cli_here(
        "flash", "--port", "/dev/ttyUSB0", "--firmware", str(tmp_path / "nope.bin"), "--dry-run"
    )
    assert missing.returncode == 2 and "cannot read the firmware image" in missing.stderr


def test_unknown_chip_in_image_needs_chip_option(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "c6.bin", 13)
    proc = run_cli_here("flash", "--port", "/dev/ttyUSB0", "--firmware", str(image), "--dry-run")
    assert proc.returncode == 2 and "give --chip" in proc.stderr
