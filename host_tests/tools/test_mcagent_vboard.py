"""`mcagent vboard`: a MicroPython REPL on a pty that mpremote drives like a board."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from mcagent_helpers import wait_for
from mcagent_tools.testing import RunningVBoard


def _children_with(text: str) -> list[str]:
    """PIDs of processes whose command line mentions text (the micropython child names the board dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(proc.name)
    return found


def test_filesystem_is_rooted_in_dir_and_sigterm_stops_cleanly(vboard: RunningVBoard, tmp_path: Path) -> None:
    assert vboard.port.startswith("/dev/pts/")
    out = vboard.exec("import os, sys; open('/hello.txt', 'w').write('hi'); print(os.getcwd(), sys.path)")
    assert out.strip() == "/ ['', '.frozen', '/lib']"
    assert (vboard.dir / "hello.txt").read_text() == "hi"

    # mpremote's fs cp lands in DIR, and /lib is on sys.path as on a board.
    module = tmp_path / "greet.py"
    module.write_text("WORD = 'hello from /lib'\n")
    cp = vboard.mpremote("fs", "mkdir", ":/lib", "+", "fs", "cp", str(module), ":/lib/greet.py")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (vboard.dir / "lib" / "greet.py").exists()
    assert vboard.exec("import greet; print(greet.WORD)").strip() == "hello from /lib"

    # A second mpremote copy of the same file is skipped (SHA-256 match), as on a board.
    again = vboard.mpremote("fs", "cp", str(module), ":/lib/greet.py")
    assert "Up to date: /lib/greet.py" in again.stdout

    board_dir = str(vboard.dir.resolve())
    assert _children_with(board_dir), "the micropython process should be running"
    assert vboard.stop(signal.SIGTERM) == 0
    assert "vboard: stopped" in vboard.stderr()
    assert not _children_with(board_dir), "micropython outlived the vboard"


def test_sigint_stops_cleanly(vboard: RunningVBoard) -> None:
    assert vboard.exec("print(6 * 7)").strip() == "42"
    assert vboard.stop(signal.SIGINT) == 0
    assert "vboard: stopped" in vboard.stderr()
    assert not Path(vboard.port).exists() or not _children_with(str(vboard.dir.resolve()))


def test_ctrl_c_interrupts_running_code_and_soft_reset_works_without_resume(vboard: RunningVBoard) -> None:
    # Code started with --no-follow keeps running (like main.py on a board) ...
    proc = vboard.mpremote("exec", "--no-follow", "import time\nwhile True:\n    time.sleep_ms(20)")
    assert proc.returncode == 0
    time.sleep(0.3)
    # ... and the next mpremote session interrupts it with Ctrl-C, as on a board.
    started = time.monotonic()
    assert vboard.exec("marker = 1; print('back')").strip() == "back"
    assert time.monotonic() - started < 8
    assert "KeyboardInterrupt" in vboard.console()

    # Without `resume`, mpremote soft-resets the board first: a fresh interpreter, same files.
    plain = vboard.mpremote("exec", "print('marker' in globals())", resume=False)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.strip() == "False"
    assert "soft reboot" in vboard.console()


def test_board_reboots_when_micropython_exits(vboard_factory: Callable[..., RunningVBoard]) -> None:
    vb = vboard_factory(heapsize="100k")
    assert vb.exec("import gc; gc.collect(); print(gc.mem_free() < 100 * 1024)").strip() == "True"
    vb.mpremote("exec", "--no-follow", "import sys; sys.exit(3)")
    deadline = time.monotonic() + 10
    while "exited (status 3)" not in vb.console() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "micropython exited (status 3); rebooting" in vb.console()
    assert vb.exec("print('alive')").strip() == "alive"


def test_run_main_runs_main_py_at_power_up_and_after_reset(
    vboard_factory: Callable[..., RunningVBoard], tmp_path: Path
) -> None:
    board_dir = tmp_path / "withmain"
    board_dir.mkdir()
    # main.py counts the boots it saw, then runs "forever" like an agent.
    (board_dir / "main.py").write_text(
        "try:\n    n = int(open('/boots.txt').read())\nexcept OSError:\n    n = 0\n"
        "open('/boots.txt', 'w').write(str(n + 1))\n"
        "import time\nwhile True:\n    time.sleep_ms(20)\n"
    )
    vb = vboard_factory("withmain", run_main=True)
    boots = board_dir / "boots.txt"
    wait_for(lambda: boots.exists() and boots.read_text() == "1")
    # `mpremote reset` works (the vboard gives machine a reset()) and the board runs main.py again.
    reset = vb.mpremote("reset")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    wait_for(lambda: boots.read_text() == "2")
    assert "vboard: machine.reset(): rebooting" in vb.console()
    # The REPL still answers (Ctrl-C stops main.py), and the process knows it is a virtual board.
    assert vb.exec("import os; print(os.getenv('MCAGENT_VBOARD'))").strip() == "1"
    assert boots.read_text() == "2"


def test_a_command_right_after_a_reset_gets_an_answer(vboard: RunningVBoard) -> None:
    # mpremote's reset returns ~100 ms before the board resets. The next session's Ctrl-C either cancels
    # the pending reset (as on a board) or reaches the restarting board: either way it must get an answer
    # (mpremote waits forever on a pty that stays silent) and must not kill the starting process.
    for _ in range(3):
        assert vboard.mpremote("reset").returncode == 0
        out = vboard.mpremote("exec", "print('after reset')", timeout_s=20)
        assert out.returncode == 0 and out.stdout.strip() == "after reset", out.stdout + out.stderr
    assert "lib/python" not in vboard.console(), "a Ctrl-C killed a micropython process while it started"
