"""docs/quickstart.md (and the README's commands), replayed in order in a fresh clone, checked for what a user
sees.

The clone is made with `git clone` of this repository; its `.venv` is this checkout's (building one is what
`make venv` does, which CI runs anyway). southgate serves on a free port instead of 8443. The real-board
commands run with `--dry-run` (no board here). Each command must appear verbatim in the page, so the page
and this test cannot drift apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcagent_tools.build import ROOT

DOC = ROOT / "docs" / "quickstart.md"
SERVE = ".venv/bin/southgate serve --data ./sg-data --port 8443"
CREATE = ".venv/bin/southgate agent create --data ./sg-data --name pump-1 --out agentconfig.json"
ASSET = ".venv/bin/southgate asset create --data ./sg-data --board boards/unix/board.json"
SETTINGS = "echo '{}' > settings.json"
VBOARD = ".venv/bin/mcagent vboard --dir ./vboard --port-file vboard.port --log vboard.log"
DEPLOY = (
    '.venv/bin/mcagent deploy --port "$(cat vboard.port)" --board unix --config agentconfig.json '
    "--settings settings.json --ca sg-data/ca.pem"
)
STATUS = '.venv/bin/mcagent status --port "$(cat vboard.port)"'
READ = ".venv/bin/southgate timeseries --data ./sg-data --agent pump-1 --format table"
STOP = '.venv/bin/mpremote connect "$(cat vboard.port)" resume fs touch :STOP + reset'
REAL_SETTINGS = (
    """echo '{"wifi": {"ssid": "factory-floor", "password": "your-wifi-password"}}' > settings.json"""
)
REAL_DEPLOY = (
    ".venv/bin/mcagent deploy --port /dev/ttyUSB0 --board esp32c3 --config agentconfig.json "
    "--settings settings.json"
)
FAULT = (
    ".venv/bin/southgate fault add --data ./sg-data --path /api/mindconnect/v3/exchange "
    "--status 503 --count 2"
)
README = ROOT / "README.md"
SECRETS = ("agentconfig.json", "settings.json", "sg-data", "vboard", "ca.pem", "admin-token")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs git and a git checkout to clone")
    here = tmp_path / "mcagent"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(here)], check=True)
    (here / ".venv").symlink_to(ROOT / ".venv")
    yield here


def sh(cwd: Path, cmd: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )


def background(cwd: Path, cmd: str, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the process writes it until the test ends
    return subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)  # Ctrl-C, as the page says
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_the_quickstart_works_as_written(clone: Path, tmp_path: Path) -> None:
    page = DOC.read_text()
    for cmd in (
        SERVE,
        CREATE,
        ASSET,
        SETTINGS,
        VBOARD,
        DEPLOY,
        STATUS,
        READ,
        STOP,
        REAL_SETTINGS,
        REAL_DEPLOY,
    ):
        assert cmd in page, f"docs/quickstart.md no longer shows: {cmd}"
    readme = README.read_text()
    for cmd in (SERVE, CREATE, ASSET, READ, FAULT, REAL_SETTINGS, REAL_DEPLOY):
        assert cmd in readme, f"README.md no longer shows: {cmd}"
    port = free_port()
    serve = background(clone, SERVE.replace("8443", str(port)), tmp_path / "serve.log")
    vboard = None
    try:
        wait_for("southgate", lambda: "serving https://" in (tmp_path / "serve.log").read_text())
        assert "sg-data/ca.pem" in (tmp_path / "serve.log").read_text()

        created = sh(clone, CREATE)
        assert created.returncode == 0 and "pump-1" in created.stderr, created.stderr
        assert (clone / "agentconfig.json").stat().st_mode & 0o077 == 0, "the onboarding key is owner-only"
        modelled = sh(clone, ASSET)
        assert modelled.returncode == 0 and "5e1f0a3b7c2d4e6f8a9b0c1d2e3f4a5b" in modelled.stdout, (
            modelled.stderr
        )
        assert sh(clone, SETTINGS).returncode == 0

        vboard = background(clone, VBOARD, tmp_path / "vboard.out")
        wait_for("the virtual board", lambda: (clone / "vboard.port").exists())

        deployed = sh(clone, DEPLOY)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "all verified" in deployed.stdout, deployed.stdout

        def readings() -> int:
            got = sh(clone, READ, 30)
            assert got.returncode == 0, got.stderr
            return len(got.stdout.splitlines()) - 1  # the header line

        wait_for("readings in southgate", lambda: readings() >= 4, 90)
        status = sh(clone, STATUS, 60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "board reset: the node runs again" in status.stderr, status.stderr
        before = readings()
        wait_for(
            "readings after status (it stopped the node, then reset the board)", lambda: readings() > before
        )

        fault = sh(clone, FAULT)  # the README's fault queue: the node's next uploads meet two 503s
        assert fault.returncode == 0, fault.stderr

        stopped = sh(clone, STOP, 60)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        log = clone / "vboard.log"
        wait_for("the node to stay at the REPL", lambda: b"STOP file" in log.read_bytes(), 60)
        after = readings()
        time.sleep(3)
        assert readings() == after, "the node kept running after STOP"

        assert sh(clone, REAL_SETTINGS).returncode == 0
        dry = sh(clone, REAL_DEPLOY + " --dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "your-wifi-password" not in dry.stdout + dry.stderr

        porcelain = sh(clone, "git status --porcelain --untracked-files=all").stdout
        assert porcelain == "", f"the quickstart left files git would add:\n{porcelain}"
        ignored = sh(clone, "git status --porcelain --ignored").stdout
        for name in SECRETS[:4]:
            assert name in ignored, (name, ignored)
    finally:
        if vboard is not None:
            stop(vboard)
        stop(serve)


BOARDS_DOC = ROOT / "docs" / "boards.md"
UNIX_BOARD = [  # docs/boards.md, "The unix board": one command over three lines
    "make compile",
    "printf 'import main\\nmain.main()\\n' > build/launch.py",
    "umask 077",
    "MICROPYPATH=build/mpy:.frozen .venv/bin/micropython -X heapsize=384k build/launch.py --flash "
    "build/node/flash.img --board boards/unix/board.json --install agentconfig.json --install "
    "sg-data/ca.der:certs/southgate.der --speed 60 --run-s 30",
]


def test_the_unix_board_command_works_as_written(clone: Path, tmp_path: Path) -> None:
    """Relative paths (MICROPYPATH=build/mpy, the image in a new directory) hold after the node changes into
    its flash; the compiled firmware runs (the launcher, not firmware/main.py with its sources)."""
    page = " ".join(line.strip().rstrip("\\").strip() for line in BOARDS_DOC.read_text().splitlines())
    for cmd in UNIX_BOARD:
        assert " ".join(cmd.split()) in " ".join(page.split()), f"docs/boards.md no longer shows: {cmd}"
    port = free_port()
    serve = background(clone, SERVE.replace("8443", str(port)), tmp_path / "serve.log")
    try:
        wait_for("southgate", lambda: "serving https://" in (tmp_path / "serve.log").read_text())
        assert sh(clone, CREATE).returncode == 0 and sh(clone, ASSET).returncode == 0
        # The same, shorter; `make compile` as what it runs: make in a clone sharing this .venv would
        # reinstall the tools from the clone when its dependency files differ from this checkout's.
        steps = [".venv/bin/python -m mcagent_tools.build --src firmware --out build/mpy"] + UNIX_BOARD[1:]
        script = " && ".join(steps).replace("--run-s 30", "--cycles 3")
        run = sh(clone, script, timeout_s=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        summary = [line for line in run.stdout.splitlines() if line.startswith("mcagent-summary ")]
        assert summary and '"sent": 3' in summary[0] and '"errors": 0' in summary[0], run.stdout[-2000:]
        assert (clone / "build" / "node" / "flash.img").is_file()
    finally:
        stop(serve)
