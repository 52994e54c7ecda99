"""A virtual board: the MicroPython Unix port's REPL on a pseudo-terminal, its filesystem in a directory.

    mcagent vboard --dir ./vboard        # prints the pty path, e.g. /dev/pts/7
    mpremote connect /dev/pts/7 resume fs ls :

How it works: `micropython` runs on a pty of its own (made its controlling terminal, so a Ctrl-C byte
interrupts running code as on a board); a relay copies bytes between that pty and a second one whose path
we print, which is what mpremote opens. The second pty stays open here, so it exists between mpremote
sessions, and output nobody reads is dropped after a while instead of stalling the board (like a UART).

Filesystem: at start the REPL replaces the Unix port's root mount ("/" = the host's root) with
`os.VfsPosix(DIR)`, so `/main.py` on the board is DIR/main.py and mpremote's `fs cp` lands in DIR.
It is a convenience, not a sandbox (`..` can leave DIR).

Board life: when micropython exits (Ctrl-D at the REPL, sys.exit(), a crash, machine.reset() - which the
vboard provides, so `mpremote reset` works) the board "reboots": a new process starts on the same pty.
A Ctrl-D in the raw REPL (mpremote's soft reset, used when `resume` is not given) prints "soft reboot" and
re-enters the raw REPL, as a board does, so plain `mpremote connect PTY ...` works too. As on a board, the
agent (/main.py) starts at power-up and after every reset, not after a soft reset (layout.VBOARD_START);
`--no-run-main` gives only the REPL. Outside the raw REPL, line feeds go out as CR LF, as from a board's UART.
The micropython process sees MCAGENT_VBOARD=1 in its environment.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

from . import layout

CTRL_A, CTRL_B, CTRL_C, CTRL_D = b"\x01", b"\x02", b"\x03", b"\x04"
RAW_BANNER = b"raw REPL; CTRL-B to exit"
PROMPT = b">>> "
#: What the board prints once it is set up (before main.py and the REPL); input waits for it.
BOOT_LINE = b"vboard: booted"
#: Exit status of micropython when machine.reset() was called (the board then restarts like after a reset).
RESET_EXIT = 86
#: Buffer this much output for a slow reader; beyond it (or after STALL_S without progress) drop it.
OUT_CAP = 64 * 1024
STALL_S = 1.0
#: A process exit this soon after a Ctrl-D on an empty raw REPL line counts as mpremote's soft reset.
SOFT_RESET_WINDOW_S = 2.0


def micropython_path() -> str:
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    import shutil

    found = shutil.which("micropython")
    if not found:
        raise SystemExit("micropython (the Unix port) not found: run `make venv`")
    return found


def setup_code(root: Path, mounts: list[tuple[Path, str]], sys_path: list[str], run_main: bool) -> str:
    """The code run before the REPL: the board's filesystem, its sys.path, and optionally main.py."""
    lines = [
        "import os, sys",
        "os.umount('/')",
        f"os.mount(os.VfsPosix({str(root)!r}), '/')",
    ]
    for host, point in mounts:
        lines.append(f"os.mount(os.VfsPosix({str(host)!r}), {point!r})")
    lines += [
        "os.chdir('/')",
        f"sys.path[:] = {['', '.frozen', '/lib', *sys_path]!r}",
        # The Unix port's machine module has no reset(): stand in for it so that `mpremote reset` (and
        # deploy's last step) restarts the board as on hardware. Everything else is the real module.
        "import machine as _machine",
        "class _Machine:",
        "    def __getattr__(self, name):",
        "        return getattr(_machine, name)",
        "    def reset(self):",
        f"        raise SystemExit({RESET_EXIT})",
        "sys.modules['machine'] = _Machine()",
        "del os, sys, _Machine",
        # The relay holds the host's bytes until this line: a Ctrl-C must not hit the process while it
        # is still starting (it would kill it) or setting the board up.
        f"print({BOOT_LINE.decode() + ' (/ = ' + str(root) + ')'!r})",
    ]
    if run_main:
        # As a board does after boot: start the agent if main.py is there; its exceptions end in the REPL.
        lines += [
            "try:",
            "    open('main.py').close()",
            "except OSError:",
            "    pass",
            "else:",
            "    " + layout.VBOARD_START,
        ]
    return "\n".join(lines) + "\n"


def cooked(data: bytes) -> bytes:
    """Output as a board's UART sends it outside the raw REPL: every line feed as CR LF (the Unix port
    prints bare LFs, which staircase in `mpremote repl`). The raw REPL's bytes stay as they are."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _set_ctty() -> None:  # runs in the child between fork and exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _make_raw(fd: int, isig: bool) -> None:
    tty.setraw(fd)
    if isig:
        attrs = termios.tcgetattr(fd)
        attrs[3] |= termios.ISIG | termios.NOFLSH  # Ctrl-C -> SIGINT while code runs; keep queued input
        termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _nonblock(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class VirtualBoard:
    def __init__(
        self,
        root: Path,
        *,
        heapsize: str | None = None,
        mounts: list[tuple[Path, str]] | None = None,
        sys_path: list[str] | None = None,
        run_main: bool = False,
        log: Path | None = None,
        micropython: str | None = None,
    ) -> None:
        self.root = root.resolve()
        self.heapsize = heapsize
        self.mounts = mounts or []
        self.sys_path = sys_path or []
        self.run_main = run_main
        self.micropython = micropython or micropython_path()
        self.log = open(log, "ab") if log else None
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.dev_fd = -1
        self.dev_hup = False
        self.dev_ready = False
        # The pty mpremote opens: we keep its slave open so the path lives between sessions.
        self.host_fd, self.host_slave = pty.openpty()
        _make_raw(self.host_slave, isig=False)
        _nonblock(self.host_fd)
        self.port = os.ttyname(self.host_slave)
        self.to_host = bytearray()
        self.to_dev = bytearray()
        self.host_stalled_since: float | None = None
        self.raw_repl = False
        self.at_raw_prompt = False  # the raw REPL printed its ">" and the host has sent nothing since
        self.soft_reset_at = 0.0
        self.raw_request_at = 0.0  # when the host last asked for the raw REPL (Ctrl-A)
        self.raw_banner_at = 0.0  # when the board last answered with the raw REPL banner
        self.pending_ctrl_a = False
        self.dev_tail = b""
        self.restarts: list[float] = []

    # child process ---------------------------------------------------------------------------------------
    def start_child(self, raw_repl: bool = False) -> None:
        """Start micropython; raw_repl: go straight to the raw REPL (a tool is waiting), skip main.py."""
        master, slave = pty.openpty()
        _make_raw(slave, isig=True)
        argv = [self.micropython]
        if self.heapsize:
            argv += ["-X", f"heapsize={self.heapsize}"]
        code = setup_code(self.root, self.mounts, self.sys_path, self.run_main and not raw_repl)
        argv += ["-i", "-c", code]
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        env["MCAGENT_VBOARD"] = "1"  # lets main.py tell a virtual board from the Unix stand-in
        self.child = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.root,
            env=env,
            close_fds=True,
            preexec_fn=_set_ctty,  # the relay is single-threaded; the child needs the pty as its ctty
            umask=0o077,  # the Unix port has no chmod: this keeps the agent's secret files owner-only
        )
        os.close(slave)
        _nonblock(master)
        self.dev_fd = master
        self.dev_hup = False
        self.dev_ready = False
        self.to_dev.clear()
        self.dev_tail = b""
        self.raw_repl = False
        self.pending_ctrl_a = raw_repl

    def stop_child(self) -> int | None:
        child = self.child
        if child is None:
            return None
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(2)
        self._close_dev()
        self.child = None
        return child.returncode

    def _close_dev(self) -> None:
        if self.dev_fd >= 0:
            os.close(self.dev_fd)
            self.dev_fd = -1

    def _reboot(self, status: int) -> None:
        """The micropython process ended: start a new one, as a board reboots."""
        self._drain_dev()
        self._close_dev()
        self.child = None
        now = time.monotonic()
        soft = now - self.soft_reset_at < SOFT_RESET_WINDOW_S
        self.soft_reset_at = 0.0  # one request, one reboot
        # A tool asked for the raw REPL just before the exit (e.g. right after `mpremote reset`): the old
        # process swallowed the request; ask the new one (and don't run main.py: someone is at the REPL).
        unanswered = (
            self.raw_request_at > self.raw_banner_at and now - self.raw_request_at < SOFT_RESET_WINDOW_S
        )
        self.restarts = [t for t in self.restarts if now - t < 5] + [now]
        if len(self.restarts) > 5:
            time.sleep(1.0)  # a crash loop: don't spin
        if soft:
            self._say(b"MPY: soft reboot\r\n")
        elif status == RESET_EXIT:
            self._say(b"\r\nvboard: machine.reset(): rebooting\r\n")
        else:
            self._say(b"\r\nvboard: micropython exited (status %d); rebooting\r\n" % status)
        self.start_child(raw_repl=soft or unanswered)

    def _say(self, text: bytes) -> None:
        """The board's own words (not micropython's): to the terminal and the log."""
        if self.log:
            self.log.write(text)
            self.log.flush()
        self.to_host += text

    # relay -----------------------------------------------------------------------------------------------
    def _from_dev(self, data: bytes) -> None:
        if self.log:
            self.log.write(data)
            self.log.flush()
        tail = self.dev_tail + data
        if not self.dev_ready and BOOT_LINE in tail:
            self.dev_ready = True
        if RAW_BANNER in tail:
            self.raw_repl = True
            self.raw_banner_at = time.monotonic()
        self.at_raw_prompt = self.raw_repl and tail.endswith((b"\r\n>", b"\x04>"))
        if self.pending_ctrl_a and PROMPT in tail:
            self.pending_ctrl_a = False
            self.to_dev += b"\r" + CTRL_A  # the new process reached its REPL: back into the raw REPL
        self.dev_tail = tail[-64:]
        if not self.raw_repl:
            data = cooked(data)
        self.to_host += data

    def _child_catches_sigint(self) -> bool:
        """True while micropython runs code (its SIGINT handler is installed only then; idle = SIG_DFL)."""
        if self.child is None:
            return False
        try:
            with open(f"/proc/{self.child.pid}/status") as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
        except (OSError, ValueError):
            pass
        return False

    def _tty_signals(self) -> bool:
        try:
            return bool(termios.tcgetattr(self.dev_fd)[3] & termios.ISIG)
        except termios.error:
            return True

    def _from_host(self, data: bytes) -> None:
        if (
            CTRL_C in data
            and self.dev_ready
            and self.child is not None
            and not self._tty_signals()
            and self._child_catches_sigint()
        ):
            # Code started through the raw-paste REPL runs with the terminal still raw, so a Ctrl-C byte
            # would wait in the input queue; a board's UART handler interrupts it: do the same.
            data = data.replace(CTRL_C, b"")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, signal.SIGINT)
        if CTRL_A in data:
            self.raw_request_at = time.monotonic()
        if CTRL_B in data:
            self.raw_repl = False
        if self.at_raw_prompt and data.startswith(CTRL_D):
            self.soft_reset_at = time.monotonic()  # Ctrl-D on an empty raw REPL line: mpremote's soft reset
        self.at_raw_prompt = False
        self.to_dev += data

    def _drain_dev(self) -> None:
        while self.dev_fd >= 0:
            try:
                data = os.read(self.dev_fd, 4096)
            except OSError:
                return
            if not data:
                return
            self._from_dev(data)

    def _write_host(self) -> None:
        try:
            n = os.write(self.host_fd, self.to_host)
        except BlockingIOError:
            n = 0
        if n:
            del self.to_host[:n]
            self.host_stalled_since = None
        elif self.host_stalled_since is None:
            self.host_stalled_since = time.monotonic()
        elif time.monotonic() - self.host_stalled_since > STALL_S:
            self.to_host.clear()  # nobody is reading: drop, as a UART would

    def step(self, timeout: float = 0.1) -> None:
        rlist, wlist = [], []
        if self.dev_fd >= 0 and not self.dev_hup and len(self.to_host) < OUT_CAP:
            rlist.append(self.dev_fd)
        if len(self.to_dev) < OUT_CAP:
            rlist.append(self.host_fd)
        if self.to_host:
            wlist.append(self.host_fd)
        if self.to_dev and self.dev_fd >= 0 and self.dev_ready:
            wlist.append(self.dev_fd)
        try:
            readable, writable, _ = select.select(rlist, wlist, [], timeout)
        except InterruptedError:
            return
        if self.dev_fd in readable:
            try:
                data = os.read(self.dev_fd, 4096)
            except BlockingIOError:
                data = None
            except OSError as e:  # EIO: the process closed its terminal (exiting)
                if e.errno != errno.EIO:
                    raise
                self.dev_hup = True
                data = b""
            if data:
                self._from_dev(data)
        if self.host_fd in readable:
            with contextlib.suppress(BlockingIOError):
                data = os.read(self.host_fd, 4096)
                if data:
                    self._from_host(data)
        if self.host_fd in writable or (self.to_host and len(self.to_host) >= OUT_CAP):
            self._write_host()
        if self.dev_fd in writable and self.to_dev and self.dev_ready:
            with contextlib.suppress(BlockingIOError):
                n = os.write(self.dev_fd, self.to_dev)
                del self.to_dev[:n]
        if self.child is not None and self.child.poll() is not None and not self.stopping:
            self._reboot(self.child.returncode)

    def serve(self) -> None:
        self.start_child()
        while not self.stopping:
            self.step()

    def close(self) -> None:
        self.stopping = True
        self.stop_child()
        for fd in (self.host_fd, self.host_slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.log:
            self.log.close()


def _mount_arg(text: str) -> tuple[Path, str]:
    host, sep, point = text.rpartition(":")
    if not sep or not host or not point.startswith("/") or point == "/":
        raise argparse.ArgumentTypeError(f"--mount wants HOSTDIR:/mountpoint, got {text!r}")
    if not Path(host).is_dir():
        raise argparse.ArgumentTypeError(f"--mount: {host} is not a directory")
    return Path(host).resolve(), point


def _heapsize_arg(text: str) -> str:
    """`-X heapsize=` as the Unix port takes it: a number of bytes, or with k or m."""
    if not re.fullmatch(r"[1-9][0-9]*[kKmM]?", text):
        raise argparse.ArgumentTypeError(f"--heapsize wants a size like 256k or 2m, got {text!r}")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir", type=Path, default=Path("vboard"), help="the board's filesystem (default ./vboard)"
    )
    p.add_argument(
        "--heapsize",
        type=_heapsize_arg,
        help="GC heap, e.g. 256k (this 64-bit port's objects take about twice a 32-bit board's room; "
        "default: the Unix port's 2 MB)",
    )
    p.add_argument(
        "--run-main",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run /main.py at power-up and after each reset, as a board does (default; --no-run-main: "
        "only the REPL)",
    )
    p.add_argument(
        "--mount",
        type=_mount_arg,
        action="append",
        default=[],
        metavar="HOSTDIR:/POINT",
        help="also mount a host directory on the board (e.g. fakes of board modules)",
    )
    p.add_argument("--sys-path", action="append", default=[], metavar="DIR", help="append to sys.path")
    p.add_argument("--log", type=Path, help="append everything the board prints to this file")
    p.add_argument("--port-file", type=Path, help="also write the pty path into this file")


def run(args: argparse.Namespace) -> int:
    problems = []
    if args.dir.exists() and not args.dir.is_dir():
        problems.append(f"--dir {args.dir} is a file, not a directory")
    for name, path in (("--log", args.log), ("--port-file", args.port_file)):
        if path is not None and not path.resolve().parent.is_dir():
            problems.append(f"{name} {path}: the directory {path.parent} does not exist")
    if problems:
        print("\n".join("vboard: " + p for p in problems), file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    board = VirtualBoard(
        args.dir,
        heapsize=args.heapsize,
        mounts=args.mount,
        sys_path=args.sys_path,
        run_main=args.run_main,
        log=args.log,
    )

    def stop(signum: int, frame: object) -> None:
        board.stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        board.start_child()
        print(board.port, flush=True)
        if args.port_file:
            tmp = args.port_file.with_name(args.port_file.name + ".tmp")
            tmp.write_text(board.port + "\n")
            tmp.replace(args.port_file)
        print(
            f"vboard: MicroPython REPL on {board.port}, filesystem {board.root}\n"
            f"vboard: try `mpremote connect {board.port} resume repl`; stop with Ctrl-C or SIGTERM",
            file=sys.stderr,
            flush=True,
        )
        while not board.stopping:
            board.step()
    finally:
        board.close()
        if args.port_file:
            with contextlib.suppress(OSError):
                args.port_file.unlink()
    print("vboard: stopped", file=sys.stderr, flush=True)
    return 0
