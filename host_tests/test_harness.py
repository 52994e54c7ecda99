"""The test harness itself: firmware files must compile with mpy-cross, and a firmware test that only works
on CPython must fail its [upy] run. These are what keeps code that can never run on a board out of main."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mcagent_tools.build import FIRMWARE, compile_file, firmware_sources

HOST_TESTS = Path(__file__).parent


@pytest.mark.parametrize("source", firmware_sources(), ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_firmware_file_compiles_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    error = compile_file(source, tmp_path / "out.mpy")
    assert error is None, error.message if error else ""


def test_mpy_cross_rejects_cpython_only_syntax(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    error = compile_file(bad, tmp_path / "bad.mpy")
    assert error is not None and "SyntaxError" in error.message


def test_cpython_only_firmware_test_fails_its_upy_run(tmp_path: Path) -> None:
    tests = tmp_path / "firmware"
    tests.mkdir()
    (tests / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import typing  # exists on CPython, not on MicroPython

            def test_something():
                assert typing is not None
            """
        )
    )
    env = dict(os.environ)
    env["MCAGENT_FIRMWARE_TESTS"] = str(tests)
    env["PYTHONPATH"] = os.pathsep.join(str(HOST_TESTS / p) for p in ("", "fakes"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "upyharness",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tests),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "PASSED test_sample.py::test_something[py]" in out.replace(str(tests) + "/", "").replace(
        "firmware/", ""
    ), out
    assert "test_something[upy]" in out and "1 failed, 1 passed" in out, out
    assert "no module named 'typing'" in out, out
