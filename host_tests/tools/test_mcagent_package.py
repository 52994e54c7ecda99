"""package.json (mpremote mip install) and the boards' freeze manifests list the same firmware files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcagent_helpers import run_cli_here
from mcagent_tools.build import FIRMWARE, HOST_ONLY, ROOT
from mcagent_tools.layout import SCRIPTS
from mcagent_tools.package import PACKAGE_JSON, library_sources, render

MANIFESTS = sorted((ROOT / "boards").glob("*/manifest.py"))


def frozen_files(manifest: Path) -> set[str]:
    """Firmware-relative paths a manifest freezes (run with stand-ins for MicroPython's manifest API).

    A local include() is followed, its paths relative to the included file (as MicroPython's own
    manifestfile does); the port's manifests ($(PORT_DIR)/...) are not ours and are skipped."""
    found: set[str] = set()

    def base(base_path: str) -> Path:
        return (manifest.parent / base_path).resolve()

    def include(path: str, **kwargs: object) -> None:
        if not path.startswith("$("):
            found.update(frozen_files((manifest.parent / path).resolve()))

    def package(
        name: str, files: list[str] | None = None, base_path: str = ".", opt: int | None = None
    ) -> None:
        root = base(base_path)
        paths = [root / name / f for f in files] if files else sorted((root / name).rglob("*.py"))
        found.update(p.resolve().relative_to(FIRMWARE.resolve()).as_posix() for p in paths)

    def module(path: str, base_path: str = ".", opt: int | None = None) -> None:
        found.add((base(base_path) / path).resolve().relative_to(FIRMWARE.resolve()).as_posix())

    def ignore(*args: object, **kwargs: object) -> None:
        return None

    code = compile(manifest.read_text(), str(manifest), "exec")
    exec(code, {"package": package, "module": module, "include": include, "require": ignore,
                "freeze": ignore, "metadata": ignore, "options": type("O", (), {})()})  # fmt: skip
    return found


def test_package_json_is_up_to_date() -> None:
    assert PACKAGE_JSON.exists(), "package.json is missing: run `mcagent package-json`"
    assert PACKAGE_JSON.read_text() == render(), "package.json is out of date: run `mcagent package-json`"
    assert run_cli_here("package-json", "--check").returncode == 0


def test_package_json_lists_every_library_file_with_a_url_that_exists() -> None:
    doc = json.loads(PACKAGE_JSON.read_text())
    assert doc["deps"] == []  # by design: no micropython-lib packages (see README, design choices)
    targets = [target for target, _ in doc["urls"]]
    assert targets == [p.as_posix() for p in library_sources()]
    for target, url in doc["urls"]:
        assert (ROOT / url).is_file(), url
        assert url == f"firmware/{target}"
    assert not {t for t in targets if "/" not in t} & set(SCRIPTS)  # main.py is the board's, not a library
    assert not set(targets) & HOST_ONLY  # CPython's code: a board never imports it


@pytest.mark.skipif(not MANIFESTS, reason="no boards/*/manifest.py yet")
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.parent.name)
def test_freeze_manifest_freezes_the_package_files(manifest: Path) -> None:
    library = {p.as_posix() for p in library_sources()}
    frozen = frozen_files(manifest) - HOST_ONLY  # frozen as part of its package: flash, no heap
    assert frozen - set(SCRIPTS) == library, (
        f"{manifest.relative_to(ROOT)} freezes other files than package.json lists: "
        f"missing {sorted(library - frozen)}, extra {sorted(frozen - library - set(SCRIPTS))}"
    )
