"""Drive southgate's console in a real headless Chromium for the tests: Debian's `chromium` through
Playwright from PyPI (a development dependency).

Playwright's own browser downloads are never used: `executable_path` points at the system's Chromium (see
southgate.console.shot.chromium_path). The browser gets a fresh profile directory, no network services of
its own, and talks only to the local southgate.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from southgate.console.shot import CHROMIUM_ARGS, BrowserUnavailable, chromium_path

__all__ = ["BrowserUnavailable", "browser", "log_in", "wait_for_charts"]


@contextmanager
def browser(viewport: tuple[int, int] = (1280, 900)) -> Iterator[Any]:
    """A Playwright BrowserContext of a headless Chromium with a fresh profile; closed on exit."""
    exe = chromium_path()
    if exe is None:
        raise BrowserUnavailable("no chromium found (apt-get install chromium, or set SOUTHGATE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable(
            f"playwright is not installed (pip install -r requirements-dev.txt): {exc}"
        ) from None
    profile = tempfile.mkdtemp(prefix="southgate-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=exe,
                headless=True,
                args=CHROMIUM_ARGS,
                # southgate's certificate comes from its own development CA, which this fresh profile
                # does not know; the browser talks to nothing but that local server.
                ignore_https_errors=True,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def log_in(page: Any, base_url: str, admin_token: str) -> None:
    """Log in through the form as a person does (the token typed into the password field)."""
    page.goto(f"{base_url}/console/login")
    page.fill("#token", admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/console/")


def wait_for_charts(page: Any, loads: int = 1, timeout_ms: float = 30000) -> None:
    """Until the agent page has drawn all its charts `loads` times (console.js counts them).

    Polled from here: Playwright's wait_for_function evaluates its predicate with eval(), which the
    console's Content-Security-Policy rightly forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while int(page.evaluate("() => Number(document.body.dataset.chartLoads || 0)")) < loads:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the charts were not drawn {loads} time(s) within {timeout_ms / 1000:g} s")
        page.wait_for_timeout(50)
