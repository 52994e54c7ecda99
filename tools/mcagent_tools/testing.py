"""`RunningVBoard`: start the real `mcagent vboard` CLI for a test and talk to the board with mpremote.

with RunningVBoard(tmp_path / "board") as vb:
    subprocess.run(["mcagent", "deploy", "--port", vb.port, ...])
    vb.start_agent()                          # main.py, as layout.VBOARD_START says
    print(vb.exec("import os; print(os.listdir('/'))"))
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from . import layout
from .runner import resolve, tool_path


class VBoardError(RuntimeError):
    """The virtual board did not start, or a command on it failed."""


class RunningVBoard:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        heapsize: str | None = None,
        run_main: bool = False,
        extra_args: tuple[str, ...] = (),
        startup_timeout_s: float = 15.0,
    ) -> None:
        self.dir = Path(directory)
        self.log_path = self.dir.parent / (self.dir.name + ".console.log")
        self.stderr_path = self.dir.parent / (self.dir.name + ".vboard.err")
        self.heapsize = heapsize
        self.run_main = run_main
        self.extra_args = extra_args
        self.startup_timeout_s = startup_timeout_s
        self.port = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RunningVBoard:
        cmd = [
            sys.executable,
            "-m",
            "mcagent_tools.cli",
            "vboard",
            "--dir",
            str(self.dir),
            "--log",
            str(self.log_path),
        ]
        if self.heapsize:
            cmd += ["--heapsize", self.heapsize]
        cmd.append("--run-main" if self.run_main else "--no-run-main")
        cmd += list(self.extra_args)
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + self.startup_timeout_s
        while not line.endswith(b"\n"):
            if not sel.select(max(0.0, deadline - time.monotonic())):
                self.stop()
                raise VBoardError("mcagent vboard did not print its port:\n" + self.stderr())
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.stop()
                raise VBoardError("mcagent vboard exited:\n" + self.stderr())
            line += chunk
        sel.close()
        self.port = line.decode().strip()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the board with sig (SIGTERM; a user's Ctrl-C is SIGINT); returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> RunningVBoard:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def console(self) -> str:
        """Everything the board printed so far (the REPL traffic included)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # talking to the board -------------------------------------------------------------------------------
    def mpremote(
        self, *args: str, timeout_s: float = 60.0, resume: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [tool_path("mpremote"), "connect", self.port, *(["resume"] if resume else []), *args]
        return subprocess.run(resolve(cmd), capture_output=True, text=True, timeout=timeout_s, check=False)

    def exec(self, code: str, timeout_s: float = 60.0) -> str:
        """Run code on the board; its output. VBoardError if it raised."""
        proc = self.mpremote("exec", code, timeout_s=timeout_s)
        if proc.returncode != 0:
            raise VBoardError(f"exec failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def start_agent(self, code: str = layout.VBOARD_START) -> None:
        """Start the agent and return at once (it keeps running; the next mpremote command interrupts it)."""
        proc = self.mpremote("exec", "--no-follow", code)
        if proc.returncode != 0:
            raise VBoardError(f"could not start the agent:\n{proc.stdout}{proc.stderr}")
