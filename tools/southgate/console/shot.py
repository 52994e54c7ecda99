"""A screenshot of a console page with the system's headless Chromium (`make demo DEMO_ARGS="--console-shot
FILE"`), and the Chromium settings the console's browser tests share.

No browser automation library is needed: Chromium's own `--screenshot` opens southgate's one-time login link,
whose page moves on to the agent's page, and `--virtual-time-budget` lets the charts load before the shot.
Each run gets a fresh profile directory and no network services of the browser's own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class BrowserUnavailable(RuntimeError):
    """No Chromium here (the message says how to get one)."""


def chromium_path() -> str | None:
    """SOUTHGATE_CHROMIUM, else `chromium` (Debian's package) or `chromium-browser` on PATH."""
    given = os.environ.get("SOUTHGATE_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def login_link(serve_output: str) -> str | None:
    """The one-time console login link in what `southgate serve` printed."""
    m = re.search(r"^southgate: console (\S+/console/login\?key=\S+)", serve_output, re.M)
    return m.group(1) if m else None


def screenshot(url: str, out: Path, size: tuple[int, int] = (1280, 2600), wait_ms: int = 8000) -> None:
    """A PNG of `url` as a window of `size` shows it, after `wait_ms` of (virtual) page time."""
    exe = chromium_path()
    if exe is None:
        raise BrowserUnavailable("no chromium found (apt-get install chromium, or set SOUTHGATE_CHROMIUM)")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="southgate-chromium-")
    try:
        cmd = [
            exe,
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile}",
            # southgate's certificate comes from its own development CA, which a fresh profile does not
            # know; this browser is pointed at nothing but the local southgate.
            "--ignore-certificate-errors",
            "--hide-scrollbars",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out}",
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"chromium did not write {out} (exit {proc.returncode}): {proc.stderr[-500:]}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot_agent(serve_output: str, agent_id: str, out: Path) -> None:
    """The console page of an agent, charts drawn, logged in with the server's unused one-time link."""
    link = login_link(serve_output)
    if link is None:
        raise RuntimeError("southgate printed no console login link")
    screenshot(f"{link}&next=/console/agents/{agent_id}", out)
