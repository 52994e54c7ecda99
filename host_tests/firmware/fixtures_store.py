"""Host fixtures for the store firmware tests (owned by that area)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def full_sweep() -> bool:
    """True when MCAGENT_FULL_SWEEP=1: power-cut tests cut at every op instead of a spread sample."""
    return os.environ.get("MCAGENT_FULL_SWEEP", "") not in ("", "0")


@pytest.fixture
def store_datapoints() -> list[list[str]]:
    """One data point of every DSC type, as (id, type) pairs."""
    return [
        ["DP-Temperature", "DOUBLE"],
        ["DP-Count", "INT"],
        ["DP-Total", "LONG"],
        ["DP-Open", "BOOLEAN"],
        ["DP-Status", "STRING"],
        ["DP-Log", "BIG_STRING"],
        ["DP-Seen", "TIMESTAMP"],
    ]
