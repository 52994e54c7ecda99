"""Fixtures for the host tool `mcagent` (CPython only): virtual boards, agent files, snapshots of the tree."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcagent_helpers import WIFI_PASSWORD, agentconfig
from mcagent_tools.build import FIRMWARE, ROOT
from mcagent_tools.testing import RunningVBoard


@pytest.fixture
def vboard_factory(tmp_path: Path) -> Iterator[Callable[..., RunningVBoard]]:
    boards: list[RunningVBoard] = []

    def make(name: str = "board", heapsize: str | None = None, run_main: bool = False) -> RunningVBoard:
        vb = RunningVBoard(tmp_path / name, heapsize=heapsize, run_main=run_main)
        boards.append(vb)
        return vb.start()

    yield make
    for vb in boards:
        vb.stop()


@pytest.fixture
def vboard(vboard_factory: Callable[..., RunningVBoard]) -> RunningVBoard:
    return vboard_factory()


@pytest.fixture(scope="session")
def firmware_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of firmware/ taken once per session, so teammates' edits don't change files between deploys."""
    dest = tmp_path_factory.mktemp("snapshot") / "firmware"
    shutil.copytree(FIRMWARE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build directory per test session (worker): the firmware is compiled once, then reused."""
    return tmp_path_factory.mktemp("build")


@pytest.fixture
def boards_dir(tmp_path: Path) -> Path:
    """boards/ with a copy of the unix board (or a minimal one while boards/unix is not there)."""
    dest = tmp_path / "boards"
    src = ROOT / "boards" / "unix"
    if (src / "board.json").exists():
        shutil.copytree(src, dest / "unix")
    else:
        (dest / "unix").mkdir(parents=True)
        (dest / "unix" / "board.json").write_text(json.dumps({"board": "unix", "chip": "unix"}))
    (dest / "esp32_test").mkdir()
    esp32 = json.loads((ROOT / "boards" / "esp32_generic" / "board.json").read_text())
    (dest / "esp32_test" / "board.json").write_text(json.dumps({**esp32, "board": "esp32_test"}))
    return dest


@pytest.fixture
def agent_files(tmp_path: Path) -> dict[str, Path]:
    """agentconfig.json (with a recognisable IAT), settings.json (with a Wi-Fi password), a local CA."""
    import trustme

    files = tmp_path / "agent"
    files.mkdir()
    config = files / "agentconfig.json"
    config.write_text(json.dumps(agentconfig("0123456789abcdef0123456789abcdef")))
    settings = files / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "wifi": {"ssid": "factory-floor", "password": WIFI_PASSWORD},
                "ca": ["certs/digicert-global-root-g2.der", "certs/ca.der"],
                "state_dir": "state",
            }
        )
    )
    ca = files / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    return {"config": config, "settings": settings, "ca": ca}
