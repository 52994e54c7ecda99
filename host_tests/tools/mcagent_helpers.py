"""Helpers shared by the `mcagent` tool tests (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Recognisable secrets: no test output may contain them.
IAT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.IATSIGNATUREmustNeverBePrinted0123456789"
WIFI_PASSWORD = "wifi-password-never-printed-42"


def agentconfig(client_id: str, iat: str = IAT) -> dict[str, object]:
    return {
        "content": {
            "baseUrl": "https://southgate.example.test",
            "iat": iat,
            "clientCredentialProfile": ["SHARED_SECRET"],
            "clientId": client_id,
            "tenant": "mcagenttest",
        },
        "expiration": "2036-01-01T00:00:00.000Z",
    }


def run_cli(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """The real `mcagent` command line, in a subprocess (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "mcagent_tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert IAT not in text and IAT[-24:] not in text, "the onboarding token was printed"
        assert WIFI_PASSWORD not in text, "the Wi-Fi password was printed"


def deploy_args(
    port: str, agent: dict[str, Path], boards: Path, firmware: Path, build: Path, *extra: str
) -> list[str]:
    return [
        "deploy",
        "--port",
        port,
        "--board",
        "unix",
        "--config",
        str(agent["config"]),
        "--settings",
        str(agent["settings"]),
        "--ca",
        str(agent["ca"]),
        "--boards-dir",
        str(boards),
        "--firmware-dir",
        str(firmware),
        "--build-dir",
        str(build),
        *extra,
    ]


def run_cli_here(*args: str) -> subprocess.CompletedProcess[str]:
    """`mcagent` in this process (faster; for commands that don't need their own process)."""
    from mcagent_tools.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["mcagent", *args], code, out.getvalue(), err.getvalue())


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
