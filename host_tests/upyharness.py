"""pytest plugin: run every firmware test under CPython *and* the MicroPython Unix port.

Test files under ``host_tests/firmware/`` are written for both interpreters (plain ``assert``, no pytest
import). Each test function is collected twice: ``test_x[py]`` runs in-process on CPython, ``test_x[upy]``
runs in its own ``micropython`` subprocess through ``upy_runner.py``. Fixture values the test asks for are
resolved by pytest on the host and handed to MicroPython as JSON keyword arguments, so a firmware test can
use host fixtures (a temp dir, a running southgate) as plain strings, numbers, lists and dicts.

Module-level switches a firmware test file may set (read with ``ast``, never imported for this):

- ``UPY_SKIP = "reason"`` (whole file) or ``{"test_name": "reason"}``: do not run under MicroPython.
- ``UPY_HEAPSIZE = "64k"``: run with ``micropython -X heapsize=...`` (str, or dict per test name).
- ``UPY_TIMEOUT = 120``: seconds before the subprocess is killed.
- ``UPY_MPY = True``: import the firmware from ``.mpy`` files compiled by ``mpy-cross`` (as on a board).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
HOST_TESTS = ROOT / "host_tests"
# MCAGENT_FIRMWARE_TESTS points the harness at another folder (used by its own self-test).
FIRMWARE_TESTS = Path(os.environ.get("MCAGENT_FIRMWARE_TESTS", HOST_TESTS / "firmware")).resolve()
FAKES = HOST_TESTS / "fakes"
RUNNER = HOST_TESTS / "upy_runner.py"
DEFAULT_TIMEOUT = 120


def tool(name: str) -> str:
    """Path of a console script installed beside this interpreter (the project's .venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run `make venv` first")
    return found


def is_firmware_test(path: Path) -> bool:
    try:
        path.resolve().relative_to(FIRMWARE_TESTS)
    except ValueError:
        return False
    return path.name.startswith("test_") and path.suffix == ".py"


@cache
def module_switches(path: Path) -> dict[str, Any]:
    """Literal module-level UPY_* assignments of a firmware test file."""
    tree = ast.parse(path.read_text(), str(path))
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("UPY_"):
                found[name] = ast.literal_eval(node.value)
    return found


def per_test(value: Any, test_name: str) -> Any:
    return value.get(test_name) if isinstance(value, dict) else value


@cache
def compiled_firmware(out: Path) -> Path:
    """Compile firmware/ to .mpy under out (once per test session and worker)."""
    from mcagent_tools.build import compile_tree

    errors = compile_tree(FIRMWARE, out)
    if errors:
        raise RuntimeError("mpy-cross failed: " + "; ".join(f"{e.source}: {e.message}" for e in errors))
    return out


def micropython_env(firmware_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(
        [str(firmware_path), str(FIRMWARE_TESTS), str(FAKES), str(HOST_TESTS), ".frozen"]
    )
    return env


def run_upy(item: pytest.Function, kwargs: dict[str, Any]) -> None:
    path = Path(str(item.fspath))
    switches = module_switches(path)
    name = item.originalname
    argv = [tool("micropython")]
    heap = per_test(switches.get("UPY_HEAPSIZE"), name)
    if heap:
        argv += ["-X", f"heapsize={heap}"]
    firmware_path = FIRMWARE
    if switches.get("UPY_MPY"):
        tmp = item.config._tmp_path_factory.getbasetemp() / "mpy"  # type: ignore[attr-defined]
        firmware_path = compiled_firmware(tmp)
    argsfile = item.config._tmp_path_factory.mktemp("upyargs") / "kwargs.json"  # type: ignore[attr-defined]
    argsfile.write_text(json.dumps(kwargs, default=str))
    argv += [str(RUNNER), path.stem, name, str(argsfile)]
    timeout = per_test(switches.get("UPY_TIMEOUT"), name) or DEFAULT_TIMEOUT
    try:
        env = micropython_env(firmware_path)
        # umask: the Unix port has no chmod, so whoever starts it keeps the agent's secret files owner-only
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, umask=0o077
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"micropython timed out after {timeout}s\n{exc.stdout or ''}{exc.stderr or ''}", False)
    out = proc.stdout + proc.stderr
    if "UPY-SKIP:" in proc.stdout:
        pytest.skip(proc.stdout.split("UPY-SKIP:", 1)[1].strip())
    if proc.returncode != 0 or "UPY-PASS" not in proc.stdout:
        pytest.fail(f"MicroPython run failed (exit {proc.returncode}):\n{out}", pytrace=False)
    sys.stdout.write(out)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if is_firmware_test(Path(str(metafunc.definition.fspath))):
        metafunc.fixturenames.append("_interpreter")
        metafunc.parametrize("_interpreter", ["py", "upy"], ids=["py", "upy"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and is_firmware_test(Path(str(item.fspath))):
            if item.callspec.params.get("_interpreter") == "upy":
                reason = per_test(module_switches(Path(str(item.fspath))).get("UPY_SKIP"), item.originalname)
                if reason:
                    item.add_marker(pytest.mark.skip(reason=f"not on MicroPython: {reason}"))
                item.add_marker(pytest.mark.upy)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "upy: a firmware test run in the MicroPython Unix port")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    callspec = getattr(pyfuncitem, "callspec", None)
    interpreter = callspec.params.get("_interpreter") if callspec else None
    if interpreter is None:
        return None
    wanted = inspect.signature(pyfuncitem.obj).parameters
    kwargs = {n: pyfuncitem.funcargs[n] for n in wanted}
    if interpreter == "upy":
        run_upy(pyfuncitem, kwargs)
        return True
    try:
        pyfuncitem.obj(**kwargs)
    except Exception as exc:
        if type(exc).__name__ == "Skip":  # checks.Skip: same meaning under both interpreters
            pytest.skip(str(exc.args[0] if exc.args else ""))
        raise
    return True
