"""Errors all `mcagent` commands share: a serial port that does not exist, output closed early (| head)."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mcagent_helpers import deploy_args, run_cli
from mcagent_tools import cli
from mcagent_tools.runner import ToolError, check_port, port_of, port_problem, run, tool_path
from mcagent_tools.testing import RunningVBoard
from test_mcagent_flash import fake_image

MISSING = "/dev/ttyNOPE"


def run_cli_into_closed_pipe(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """`mcagent ARGS | head -0`, deterministically: the reading end is closed before the command starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mcagent_tools.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    finally:
        os.close(write_end)
    return proc


# a serial port that does not exist --------------------------------------------------------------------------
def test_port_problem_names_only_missing_device_paths(tmp_path: Path) -> None:
    problem = port_problem(MISSING)
    assert problem is not None and problem.startswith(f"serial port {MISSING} does not exist (")
    assert "in use" not in problem and "\n" not in problem
    assert port_problem(f"port:{MISSING}") == problem  # mpremote's spelling of a device path
    broken_link = tmp_path / "ttyUSB-unplugged"
    broken_link.symlink_to(tmp_path / "gone")  # what /dev/serial/by-id/... is after unplugging
    assert port_problem(str(broken_link)) is not None
    for fine in ("/dev/null", "COM3", "auto", "id:0123", "rfc2217://host:2217", "socket://h:1"):
        assert port_problem(fine) is None, fine
    with pytest.raises(ToolError, match="does not exist"):
        check_port(MISSING)
    check_port("/dev/null")


def test_port_of_finds_the_port_of_mpremote_and_esptool_commands() -> None:
    assert port_of(["mpremote", "connect", "/dev/ttyUSB0", "resume", "exec", "1"]) == "/dev/ttyUSB0"
    assert port_of(["/venv/bin/esptool", "--chip", "esp32", "--port", "COM3", "erase-flash"]) == "COM3"
    assert port_of(["esptool.exe", "-p", "/dev/ttyACM0", "chip-id"]) == "/dev/ttyACM0"
    assert port_of(["mpy-cross", "connect", "x"]) is None
    assert port_of(["mpremote", "connect"]) is None
    assert port_of([]) is None


def test_a_tool_is_not_run_for_a_missing_port() -> None:
    result = run([tool_path("mpremote"), "connect", MISSING, "resume", "exec", "print(1)"])
    assert not result.ok
    assert result.output == port_problem(MISSING)


def test_deploy_to_a_missing_port_says_it_does_not_exist(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path
) -> None:
    proc = run_cli(*deploy_args(MISSING, agent_files, boards_dir, firmware_snapshot, build_dir))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"serial port {MISSING} does not exist" in proc.stderr
    assert "in use" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# output closed early ----------------------------------------------------------------------------------------
EXPECTED_STATUS = 128 + signal.SIGPIPE


def test_flash_dry_run_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "fw.bin", 0)
    proc = run_cli_into_closed_pipe("flash", "--port", "/dev/ttyUSB0", "--firmware", str(image), "--dry-run")
    assert proc.returncode == EXPECTED_STATUS
    assert proc.stderr == ""


def test_status_into_a_closed_pipe_ends_quietly(vboard: RunningVBoard) -> None:
    for extra in ([], ["--json"]):
        proc = run_cli_into_closed_pipe("status", "--port", vboard.port, *extra)
        assert proc.returncode == EXPECTED_STATUS, proc.stderr
        assert proc.stderr == ""


def test_help_into_a_closed_pipe_ends_quietly() -> None:
    proc = run_cli_into_closed_pipe("--help")
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr


def test_status_piped_into_head_prints_its_first_line(vboard: RunningVBoard) -> None:
    mcagent = shlex.join([sys.executable, "-m", "mcagent_tools.cli", "status", "--port", vboard.port])
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {mcagent} | head -1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout == f"status of {vboard.port}:\n"
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr
    assert proc.returncode in (0, EXPECTED_STATUS)


class _ClosedStdout(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_main_turns_a_broken_pipe_into_an_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = fake_image(tmp_path / "fw.bin", 0)
    monkeypatch.setattr(sys, "stdout", _ClosedStdout())
    code = cli.main(["flash", "--port", "/dev/ttyUSB0", "--firmware", str(image), "--dry-run"])
    monkeypatch.undo()
    assert code == cli.EXIT_BROKEN_PIPE == EXPECTED_STATUS
    assert capsys.readouterr().err == ""


def test_vboard_refuses_what_it_cannot_use_before_it_starts(tmp_path: Path) -> None:
    """A heap size the interpreter would refuse (it rebooted forever), a log or port file in a missing
    directory, a --dir that is a file: one line each, exit status 2, no board started."""
    proc = run_cli("vboard", "--heapsize", "100KB")
    assert proc.returncode == 2 and "--heapsize wants a size like 256k" in proc.stderr
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = run_cli("vboard", "--dir", str(afile), "--log", str(tmp_path / "nodir" / "v.log"))
    assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr
    assert "--log" in proc.stderr and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
