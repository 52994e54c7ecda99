"""Fixtures for every host test: the 32-bit MicroPython Unix port (mcagent_tools.upy32).

Session-scoped, so each pytest-xdist worker asks once; `make test` has usually built it already, and the
build is locked, so workers that do build wait for one another instead of compiling twice. Without its
source or a 32-bit gcc the tests that use it are skipped, except with CI=true, where that is a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mcagent_tools import upy32 as _upy32


def _get(what: Callable[[], Path]) -> Path:
    try:
        return what()
    except _upy32.Upy32Unavailable as e:
        if _upy32.in_ci():
            pytest.fail(f"32-bit MicroPython port required with CI=true: {e.reason}", pytrace=False)
        pytest.skip(f"32-bit MicroPython port unavailable: {e.reason}")
    except _upy32.Upy32Error as e:  # the build itself broke: never hidden as a skip
        pytest.fail(e.reason, pytrace=False)


@pytest.fixture(scope="session")
def upy32_src() -> Path:
    """The MicroPython 1.28.0 source tree the port is built from (no compiler needed)."""
    return _get(_upy32.source)


@pytest.fixture(scope="session")
def upy32() -> Path:
    """The plain 32-bit Unix port binary (the standard variant's frozen modules, no firmware)."""
    return _get(_upy32.ensure)


@pytest.fixture(scope="session")
def upy32_frozen() -> Path:
    """The 32-bit Unix port with the firmware frozen in by boards/unix/manifest.py."""
    return _get(lambda: _upy32.ensure(frozen=True))


HEAP_PHASE = "MCAGENT_HEAP_PHASE"  # make test: "skip" the heap bounds in the parallel run, "only" them after


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs the heap bounds (marker heap) alone, after the rest: under CPU contention a wake's
    heap layout varies by a step. An environment variable, not -m, so a user's own -m still applies."""
    import os

    phase = os.environ.get(HEAP_PHASE, "")
    if phase not in ("skip", "only"):
        return
    keep = [i for i in items if (i.get_closest_marker("heap") is not None) == (phase == "only")]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
