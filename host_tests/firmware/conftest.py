"""Fixtures for firmware tests. Values must be JSON-friendly: they are handed to MicroPython too."""

from __future__ import annotations

import pytest


@pytest.fixture
def workdir(tmp_path) -> str:
    """A fresh empty directory, as a plain string path (what both interpreters can use)."""
    return str(tmp_path)


# Each firmware area keeps its host-side fixtures in its own module; they are gathered here.
from fixtures_core import *  # noqa: E402,F403
from fixtures_data import *  # noqa: E402,F403
from fixtures_http import *  # noqa: E402,F403
from fixtures_identity import *  # noqa: E402,F403
from fixtures_store import *  # noqa: E402,F403
