"""Run the external tools (mpremote, esptool) and print their command lines so a user can paste them."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class ToolError(Exception):
    """An external tool is missing, failed or timed out; the message says which and why."""


def tool_path(name: str) -> str:
    """The tool beside this interpreter (the project's .venv), else the one on PATH.

    The name printed in command lines is the bare name when PATH finds that very file, so the printed
    commands are exactly what runs and still read naturally in an activated venv.
    """
    here = Path(sys.executable).parent / name
    candidate = str(here) if here.exists() else shutil.which(name)
    if not candidate:
        raise ToolError(f"{name} not found: run `make venv` (or pip install {name})")
    on_path = shutil.which(name)
    if on_path and os.path.realpath(on_path) == os.path.realpath(candidate):
        return name
    return candidate


def port_problem(port: str) -> str | None:
    """Why `port` cannot be a board's serial port, when that is plain before a tool tries to open it.

    Only a device path is checked (mpremote's "port:" prefix allowed): COM3, `auto`, `id:...` or URLs are
    left to the tool. mpremote reports a missing device as "failed to access ... (it may be in use by
    another program)", which sends people looking for a program that does not exist.
    """
    path = port.removeprefix("port:")
    if path.startswith("/") and not os.path.exists(path):
        return (
            f"serial port {path} does not exist "
            "(is the board plugged in and the name right? `mpremote devs` lists the serial ports)"
        )
    return None


def check_port(port: str) -> None:
    """Raise ToolError if `port` names a serial device that does not exist (see port_problem)."""
    problem = port_problem(port)
    if problem:
        raise ToolError(problem)


def port_of(argv: list[str]) -> str | None:
    """The serial port an mpremote (`connect PORT`) or esptool (`--port PORT`) command line talks to."""
    if not argv:
        return None
    tool = Path(argv[0]).name.lower().removesuffix(".exe").removesuffix(".py")
    flags = {"mpremote": ("connect",), "esptool": ("--port", "-p")}.get(tool, ())
    for i, arg in enumerate(argv[1:-1], start=1):
        if arg in flags:
            return argv[i + 1]
    return None


def shell_line(argv: list[str]) -> str:
    """argv -> one line of POSIX shell that runs exactly argv."""
    return shlex.join(argv)


def resolve(argv: list[str]) -> list[str]:
    """A printed command -> what to exec (a bare tool name is looked up like tool_path did)."""
    if argv and os.sep not in argv[0]:
        found = shutil.which(argv[0]) or str(Path(sys.executable).parent / argv[0])
        return [found, *argv[1:]]
    return argv


@dataclass
class Result:
    argv: list[str]
    returncode: int
    output: str  # stdout and stderr, interleaved

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run(argv: list[str], timeout_s: float = 120.0, stream: bool = False) -> Result:
    """Run argv, capturing output (or letting it through with stream=True, e.g. esptool's progress).

    Never raises for a failing tool: the caller decides (see Result.ok). A command for a serial port that
    does not exist is not run: its Result says so plainly (see port_problem).
    """
    port = port_of(argv)
    problem = port_problem(port) if port else None
    if problem:
        return Result(argv, -1, problem)
    try:
        proc = subprocess.run(
            resolve(argv),
            stdin=subprocess.DEVNULL,
            stdout=None if stream else subprocess.PIPE,
            stderr=None if stream else subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode(errors="replace")
        return Result(argv, -1, out + f"\n(timed out after {timeout_s:.0f} s: no answer from the device?)")
    except OSError as e:
        return Result(argv, -1, f"cannot run {argv[0]}: {e}")
    return Result(argv, proc.returncode, (proc.stdout or b"").decode(errors="replace"))
