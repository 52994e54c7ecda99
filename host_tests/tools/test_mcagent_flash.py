"""`mcagent flash --dry-run`: the esptool commands for each chip (no board is ever flashed in tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcagent_helpers import run_cli_here
from mcagent_tools.flash import CHIPS, FlashError, flash_offset, image_chip
from mcagent_tools.runner import tool_path


def fake_image_bytes(chip_id: int) -> bytes:
    """The first bytes of an ESP app image: magic 0xE9, segments, mode, size, entry, extended header."""
    header = bytes([0xE9, 3, 2, 0x20]) + (0x40080000).to_bytes(4, "little")
    extended = bytes([0xEE, 0, 0, 0]) + chip_id.to_bytes(2, "little") + bytes(10)
    return header + extended + bytes(1000)


def fake_image(path: Path, chip_id: int) -> Path:
    path.write_bytes(fake_image_bytes(chip_id))
    return path


@pytest.mark.parametrize(
    ("chip", "chip_id", "offset"),
    [
        ("esp32", 0, "0x1000"),
        ("esp32s2", 2, "0x1000"),
        ("esp32s3", 9, "0x0"),
        ("esp32c3", 5, "0x0"),
        ("esp32c6", 13, "0x0"),
    ],
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


@pytest.mark.parametrize(
    ("image_chip", "image_id", "board_chip"),
    [
        ("esp32s2", 2, "esp32c6"),
        ("esp32c6", 13, "esp32s2"),
        ("esp32s2", 2, "esp32"),
        ("esp32c6", 13, "esp32c3"),
    ],
)
def test_refuses_an_s2_or_c6_image_for_another_chip(
    tmp_path: Path, image_chip: str, image_id: int, board_chip: str
) -> None:
    image = fake_image(tmp_path / "fw.bin", image_id)
    proc = run_cli_here(
        "flash", "--port", "/dev/ttyACM0", "--firmware", str(image), "--chip", board_chip, "--dry-run"
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"is an image for {image_chip}, not {board_chip}: pick the right download" in proc.stderr


def test_an_image_for_a_chip_mcagent_does_not_flash_is_named(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "h2.bin", 16)  # ESP32-H2: esptool knows it, MicroPython has no image
    proc = run_cli_here("flash", "--port", "/dev/ttyUSB0", "--firmware", str(image), "--dry-run")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "is an image for esp32h2: mcagent flash writes only esp32, esp32s2" in proc.stderr


def test_unknown_chip_in_image_needs_chip_option(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "new.bin", 0x7F00)
    proc = run_cli_here("flash", "--port", "/dev/ttyUSB0", "--firmware", str(image), "--dry-run")
    assert proc.returncode == 2
    assert "give --chip esp32|esp32s2|esp32s3|esp32c3|esp32c6" in proc.stderr


def test_chip_ids_and_offsets_agree_with_esp_idf() -> None:
    # The ids of ESP-IDF's esp_chip_id_t, independent of esptool's tables that flash.py reads them from.
    ids = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12, "esp32c6": 13, "esp32h2": 16}
    for chip, chip_id in ids.items():
        assert image_chip(fake_image_bytes(chip_id)) == chip
    assert {chip: flash_offset(chip) for chip in CHIPS} == {
        "esp32": 0x1000,
        "esp32s2": 0x1000,
        "esp32s3": 0,
        "esp32c3": 0,
        "esp32c6": 0,
    }


def test_an_esp8266_image_is_not_taken_for_an_esp32_one() -> None:
    data = bytearray(fake_image_bytes(0))
    data[23] = 0x40  # an ESP8266 image has segment data where ESP32 images have the extended header
    with pytest.raises(FlashError, match="not an ESP32-family firmware image"):
        image_chip(bytes(data))


def test_a_port_that_does_not_exist_is_refused_before_esptool_runs(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "fw.bin", 0)
    proc = run_cli_here("flash", "--port", "/dev/ttyNOPE", "--firmware", str(image))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("mcagent flash: serial port /dev/ttyNOPE does not exist (")
    assert proc.stderr.count("\n") == 1, proc.stderr
