"""A 32-bit MicroPython Unix port built from source, plain and with the firmware frozen in.

Why: the `micropython` wheel from PyPI is 64-bit only and cannot freeze modules. A 32-bit build has the
ESP32's word size and GC block size, so heap figures measured on it are the board's; the frozen variant shows
what freezing saves. Nothing here needs a network: the source is the vendored tarball (or MICROPY_SRC).

    python -m mcagent_tools.upy32 [--frozen] [--optional]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
MANIFEST = ROOT / "boards" / "unix" / "manifest.py"
BUILD_DIR = ROOT / "build" / "upy32"
SRC_DIR = BUILD_DIR / "src"
# The vendored source sits beside the repo (see /work/shared/vendor/README.md); it unpacks to TARBALL_TOP/.
TARBALL = ROOT.parent / "shared" / "vendor" / "micropython-1.28.0-unix-src.tar.gz"
TARBALL_TOP = "micropython-1.28.0"
PLAIN_NAME = "micropython32"
FROZEN_NAME = "micropython32-frozen"
# FFI and btree would need 32-bit libffi / berkeley-db (not in gcc-multilib); the firmware uses neither.
MAKE_FLAGS = ("MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0")
JOBS = 2
GIT_COMMANDS = (
    "git clone --depth 1 -b v1.28.0 https://github.com/micropython/micropython",
    "git -C micropython submodule update --init --depth 1 lib/mbedtls lib/micropython-lib",
)
LOG_TAIL_LINES = 40


class Upy32Error(Exception):
    """The 32-bit port could not be provided; `reason` says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Upy32Unavailable(Upy32Error):
    """This machine cannot build it (no source, no 32-bit compiler): callers may skip, not fail."""


class Upy32BuildFailed(Upy32Error):
    """Source and compiler are there but the build broke: a real error, never skipped."""


def plain_path() -> Path:
    return BUILD_DIR / PLAIN_NAME


def frozen_path() -> Path:
    return BUILD_DIR / FROZEN_NAME


def log_path(frozen: bool = False) -> Path:
    """Where the build's output goes (the terminal only gets its tail, on failure)."""
    return BUILD_DIR / f"{FROZEN_NAME if frozen else PLAIN_NAME}.log"


def _no_source_reason() -> str:
    cmds = "\n  ".join(GIT_COMMANDS)
    return (
        f"no MicroPython 1.28.0 source: set MICROPY_SRC to a source tree, or put the tarball at {TARBALL}; "
        f"with network access get the source with\n  {cmds}\nand set MICROPY_SRC=$PWD/micropython"
    )


def _check_tree(src: Path) -> None:
    """The parts of the tree the build needs, so a half checkout fails with advice, not a make error."""
    if not (src / "ports" / "unix" / "Makefile").is_file() or not (src / "mpy-cross").is_dir():
        raise Upy32Unavailable(
            f"{src} is not a MicroPython source tree (no ports/unix/Makefile). " + _no_source_reason()
        )
    for sub in ("lib/micropython-lib/README.md", "lib/mbedtls/library"):
        if not (src / sub).exists():
            raise Upy32Unavailable(
                f"{src} lacks {sub}: run `git -C {src} submodule update --init --depth 1 "
                "lib/mbedtls lib/micropython-lib`"
            )


def _file_id(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _unpack(tarball: Path) -> Path:
    """Unpack the tarball once into build/upy32/src/ (a stamp names the tarball it came from)."""
    tree = SRC_DIR / TARBALL_TOP
    stamp = SRC_DIR / ".unpacked"
    want = _file_id(tarball)
    if stamp.is_file() and stamp.read_text() == want and tree.is_dir():
        return tree
    shutil.rmtree(SRC_DIR, ignore_errors=True)
    SRC_DIR.mkdir(parents=True)
    try:
        with tarfile.open(tarball) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(SRC_DIR, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: no extraction filters; the tarball is our vendored file.
                tar.extractall(SRC_DIR)
    except (OSError, tarfile.TarError) as e:
        raise Upy32Unavailable(f"cannot unpack {tarball}: {e}. " + _no_source_reason()) from e
    if not tree.is_dir():
        raise Upy32Unavailable(f"{tarball} did not unpack to {TARBALL_TOP}/")
    stamp.write_text(want)
    return tree


def source_dir() -> tuple[Path, str]:
    """The MicroPython tree to build from and an id of it (a changed id means: rebuild from scratch)."""
    env = os.environ.get("MICROPY_SRC")
    if env:
        src = Path(env).expanduser().resolve()
        _check_tree(src)
        return src, f"MICROPY_SRC={src}"
    if TARBALL.is_file():
        src = _unpack(TARBALL)
        _check_tree(src)
        return src, _file_id(TARBALL)
    raise Upy32Unavailable(_no_source_reason())


def _cc() -> str:
    return os.environ.get("CC", "gcc")


def check_compiler() -> None:
    """Compile and link a trivial C program with -m32: the Unix port's Makefile assumes this works."""
    if shutil.which("make") is None:
        raise Upy32Unavailable("`make` not found: install make (Debian/Ubuntu: apt-get install make)")
    cc = _cc()
    if shutil.which(cc.split()[0]) is None:
        raise Upy32Unavailable(f"C compiler `{cc}` not found: install gcc and gcc-multilib")
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "t.c"
        c.write_text('#include <stdio.h>\n#include <math.h>\nint main(void) { return puts("") < 0; }\n')
        proc = subprocess.run(
            [*cc.split(), "-m32", "-o", str(Path(tmp) / "t"), str(c), "-lm", "-lpthread"],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        raise Upy32Unavailable(
            f"`{cc} -m32` cannot build a 32-bit program ({first[0] if first else 'no output'}): "
            "install gcc-multilib (Debian/Ubuntu: sudo apt-get install gcc-multilib)"
        )


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time across processes (pytest-xdist workers all call ensure() at start)."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _firmware_inputs() -> list[list[object]]:
    """What the frozen variant is made of. make only looks at mtimes and misses a renamed or deleted file."""
    files = [MANIFEST, *sorted(p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts)]
    out: list[list[object]] = []
    for p in files:
        st = p.stat()
        out.append([str(p.relative_to(ROOT)), st.st_size, st.st_mtime_ns])
    return out


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _fresh_dir(path: Path, key: str) -> None:
    """Empty path unless it was made for this key (which is kept in path/.key)."""
    marker = path / ".key"
    try:
        if marker.read_text() == key:
            return
    except OSError:
        pass
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    marker.write_text(key)


def _run(cmd: list[str], log: Path) -> None:
    # Run from `make test`, the outer make's MAKEFLAGS would pass its variables and jobserver down.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        raise Upy32BuildFailed(
            f"`{' '.join(cmd[:3])} ...` failed (exit {proc.returncode}); last lines of {log}:\n{_tail(log)}"
        )


def _copy_atomic(src: Path, dst: Path) -> None:
    """Replace dst in one step, so a process running the old binary is never handed a half-written file."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _build(frozen: bool, src: Path, src_id: str) -> Path:
    name = FROZEN_NAME if frozen else PLAIN_NAME
    out = BUILD_DIR / name
    build = BUILD_DIR / ("build-frozen" if frozen else "build-plain")
    mpy_cross_build = BUILD_DIR / "build-mpy-cross"
    config = {"src": src_id, "cc": _cc(), "flags": list(MAKE_FLAGS), "frozen": frozen}
    inputs = _firmware_inputs() if frozen else []
    stamp = BUILD_DIR / f"{name}.stamp"
    want = json.dumps({"config": config, "inputs": inputs}, sort_keys=True)
    try:
        old = stamp.read_text()
        have = json.loads(old)
    except (OSError, ValueError):
        old, have = "", {}
    # The unpacked tarball changes only through _unpack (which changes src_id), so an equal stamp means
    # up to date; a MICROPY_SRC tree may have been edited, so there make (quick if nothing changed) runs.
    if out.is_file() and old == want and not src_id.startswith("MICROPY_SRC="):
        return out
    check_compiler()
    # Another source tree, compiler or flags: no object of the old build may survive (tar keeps old mtimes).
    _fresh_dir(mpy_cross_build, json.dumps({"src": src_id, "cc": _cc()}))
    _fresh_dir(build, json.dumps(config, sort_keys=True))
    if frozen and have.get("inputs") != inputs:
        # A firmware file renamed, deleted or replaced by an older one: makemanifest.py's mtime check would
        # keep the old frozen content, so regenerate it (recompiling ~30 small files takes under a second).
        shutil.rmtree(build / "frozen_mpy", ignore_errors=True)
        (build / "frozen_content.c").unlink(missing_ok=True)
    stamp.unlink(missing_ok=True)
    started = time.monotonic()
    log = log_path(frozen)
    log.write_text(f"# {name} from {src}" + (f", frozen manifest {MANIFEST}" if frozen else "") + "\n")
    mpy_cross = mpy_cross_build / "mpy-cross"
    python = f"PYTHON={sys.executable}"
    # mpy-cross from the same tree (the .mpy format must match), built out of tree like the port.
    _run(["make", "-C", str(src / "mpy-cross"), f"-j{JOBS}", f"BUILD={mpy_cross_build}", python], log)
    cmd = [
        "make",
        "-C",
        str(src / "ports" / "unix"),
        f"-j{JOBS}",
        *MAKE_FLAGS,
        f"BUILD={build}",
        f"PROG={name}",
        f"MICROPY_MPYCROSS={mpy_cross}",
        python,
    ]
    if frozen:
        cmd.append(f"FROZEN_MANIFEST={MANIFEST}")
    _run(cmd, log)
    _copy_atomic(build / name, out)
    with open(log, "a") as f:
        f.write(f"# built in {time.monotonic() - started:.0f} s\n")
    stamp.write_text(want)
    return out


def ensure(frozen: bool = False) -> Path:
    """Path of the plain (or frozen) 32-bit binary, built first if missing or out of date.

    Raises Upy32Unavailable when this machine cannot build it, Upy32BuildFailed when the build broke.
    """
    with _locked():
        src, src_id = source_dir()
        return _build(frozen, src, src_id)


def source() -> Path:
    """The MicroPython source tree (unpacked first if need be), for tools that only read it."""
    with _locked():
        return source_dir()[0]


def in_ci() -> bool:
    """CI=true: the 32-bit port is required, so being unable to build it is an error, not a skip."""
    return os.environ.get("CI", "").lower() == "true"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frozen", action="store_true", help="also build the firmware-frozen variant")
    parser.add_argument(
        "--optional",
        action="store_true",
        help="no source or no 32-bit gcc: print why and exit 0 (ignored when CI=true)",
    )
    args = parser.parse_args(argv)
    try:
        print(ensure())
        if args.frozen:
            print(ensure(frozen=True))
    except Upy32Unavailable as e:
        if args.optional and not in_ci():
            print(f"upy32: skipped: {e.reason}")
            return 0
        print(f"upy32: {e.reason}", file=sys.stderr)
        return 1
    except Upy32Error as e:
        print(f"upy32: {e.reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
