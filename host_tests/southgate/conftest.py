"""Fixtures for southgate's own tests: one real `southgate serve` per test module (fast), fresh agents."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sgclient import Agent, Client  # noqa: E402
from southgate.testing import RunningSouthgate  # noqa: E402


@pytest.fixture(scope="module")
def sg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSouthgate]:
    with RunningSouthgate(tmp_path_factory.mktemp("southgate") / "data") as server:
        yield server


@pytest.fixture
def fresh_settings(sg: RunningSouthgate) -> Iterator[RunningSouthgate]:
    """Restore settings and clear faults after a test that changes them on the shared server."""
    before = sg.settings()
    yield sg
    sg.clear_faults()
    sg.settings(**before)


@pytest.fixture
def agent(sg: RunningSouthgate) -> Agent:
    """Onboarded, with a token, DSC stored and every data point mapped."""
    return Agent(sg).ready()


@pytest.fixture
def http(sg: RunningSouthgate) -> Iterator[Client]:
    c = Client(sg.base_url, sg.ca_pem)
    yield c
    c.close()
