"""Fixtures for firmware tests. Values must be JSON-friendly: they are handed to MicroPython too."""

from __future__ import annotations

import pytest


@pytest.fixture
def workdir(tmp_path) -> str:
    """A fresh empty directory, as a plain string path (what both interpreters can use)."""
    return str(tmp_path)
