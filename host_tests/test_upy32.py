"""The 32-bit MicroPython Unix port (mcagent_tools.upy32): the ESP32's word size, and the firmware frozen.

Checks what the other tests and benchmarks rely on: 32-bit, TLS, SHA-256, littlefs, -X heapsize; that the
frozen variant really runs the firmware from frozen bytecode (and is current with firmware/); that freezing
saves the heap it is meant to; and that every board's manifest resolves and freezes every firmware file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from mcagent_tools.build import FIRMWARE, ROOT, compile_tree, firmware_sources

BOARDS = sorted(p.parent for p in (ROOT / "boards").glob("*/manifest.py"))


@pytest.fixture(scope="session")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cwd and HOME for runs that must find no module on the filesystem ('' and ~/.micropython/lib)."""
    return tmp_path_factory.mktemp("upy32-empty")


def run(
    binary: Path, code: str, cwd: Path, micropypath: str | None = None, heapsize: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    env["HOME"] = str(cwd)
    if micropypath is not None:
        env["MICROPYPATH"] = micropypath
    args = [str(binary), *(["-X", f"heapsize={heapsize}"] if heapsize else []), "-c", code]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def import_failed(proc: subprocess.CompletedProcess[str]) -> bool:
    """The MicroPython Unix port prints an uncaught exception's traceback to stdout."""
    return proc.returncode != 0 and "ImportError" in proc.stdout + proc.stderr


def firmware_modules() -> set[str]:
    """Module paths as a frozen build names them: 'mcagent/store', 'main' (whatever firmware/ holds now)."""
    return {p.relative_to(FIRMWARE).with_suffix("").as_posix() for p in firmware_sources()}


def test_plain_build_is_32_bit(upy32: Path, empty_dir: Path) -> None:
    out = output(run(upy32, "import struct, sys; print(struct.calcsize('P'), sys.maxsize)", empty_dir))
    assert out == f"4 {2**31 - 1}"


LFS_ROUND_TRIP = """
import os
class RAM:
    def __init__(self, n):
        self.data = bytearray(n * 512)
    def readblocks(self, block, buf, off=0):
        a = block * 512 + off
        buf[:] = self.data[a : a + len(buf)]
    def writeblocks(self, block, buf, off=0):
        a = block * 512 + off
        self.data[a : a + len(buf)] = buf
    def ioctl(self, op, arg):
        return {4: len(self.data) // 512, 5: 512, 6: 0}.get(op)
bdev = RAM(64)
os.VfsLfs2.mkfs(bdev)
fs = os.VfsLfs2(bdev)
with fs.open("f.txt", "w") as f:
    f.write("littlefs")
print(fs.open("f.txt", "r").read())
"""


def test_plain_build_has_tls_sha256_and_littlefs(upy32: Path, empty_dir: Path) -> None:
    code = "import tls, hashlib, binascii\n"
    code += "print(hasattr(tls, 'SSLContext'), hasattr(tls, 'PROTOCOL_TLS_CLIENT'))\n"
    code += "print(binascii.hexlify(hashlib.sha256(b'abc').digest()).decode())"
    assert output(run(upy32, code, empty_dir)).split() == ["True", "True", hashlib.sha256(b"abc").hexdigest()]
    assert output(run(upy32, LFS_ROUND_TRIP, empty_dir)) == "littlefs"


def test_heapsize_option_limits_the_heap(upy32: Path, empty_dir: Path) -> None:
    code = "import gc; gc.collect(); print(gc.mem_free() + gc.mem_alloc())"
    total = int(output(run(upy32, code, empty_dir, heapsize="64k")))
    assert 48 * 1024 < total <= 64 * 1024


def test_frozen_build_imports_the_firmware_without_a_path(
    upy32: Path, upy32_frozen: Path, empty_dir: Path
) -> None:
    code = "import mcagent, mcagent.compat, sensors, main; print(mcagent.compat.MICROPYTHON)"
    assert output(run(upy32_frozen, code, empty_dir)) == "True"
    # The same run on the plain build finds nothing: the modules above came from the binary.
    assert import_failed(run(upy32, "import mcagent", empty_dir))


def test_frozen_modules_are_found_through_the_frozen_path_entry(upy32_frozen: Path, empty_dir: Path) -> None:
    # MICROPYPATH replaces the default sys.path (".frozen:~/.micropython/lib:..."), so a run that sets it
    # sees the frozen firmware only if it lists ".frozen".
    assert import_failed(run(upy32_frozen, "import mcagent", empty_dir, micropypath=str(empty_dir)))
    code = "import mcagent; print('ok')"
    assert output(run(upy32_frozen, code, empty_dir, micropypath=f".frozen:{empty_dir}")) == "ok"


def test_frozen_build_holds_exactly_the_current_firmware(upy32_frozen: Path, empty_dir: Path) -> None:
    listed = set(output(run(upy32_frozen, "help('modules')", empty_dir)).split())
    expected = firmware_modules()
    tops = {m.split("/")[0] for m in expected}
    assert expected <= listed, f"not frozen: {sorted(expected - listed)}"
    stale = {m for m in listed if m.split("/")[0] in tops} - expected
    assert not stale, f"frozen but no longer in firmware/: {sorted(stale)}"


HEAP_OF_STORE = """
import gc
import mcagent
gc.collect()
before = gc.mem_free()
import mcagent.store
gc.collect()
print(before - gc.mem_free())
"""


def test_frozen_store_costs_much_less_heap_than_mpy(
    upy32: Path, upy32_frozen: Path, empty_dir: Path, tmp_path: Path
) -> None:
    errors = compile_tree(FIRMWARE, tmp_path / "mpy")
    assert not errors, errors
    as_mpy = int(output(run(upy32, HEAP_OF_STORE, empty_dir, str(tmp_path / "mpy"), heapsize="100k")))
    frozen = int(output(run(upy32_frozen, HEAP_OF_STORE, empty_dir, heapsize="100k")))
    assert 0 < frozen * 3 < as_mpy, (frozen, as_mpy)


def load_manifestfile(src: Path) -> ModuleType:
    """MicroPython's own tools/manifestfile.py, from the tree the port is built from."""
    spec = importlib.util.spec_from_file_location("manifestfile", src / "tools" / "manifestfile.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.name)
def test_manifest_resolves_and_freezes_every_firmware_file(
    board: Path, upy32_src: Path, tmp_path: Path
) -> None:
    manifestfile = load_manifestfile(upy32_src)
    if json.loads((board / "board.json").read_text()).get("chip") == "unix":
        port_dir = upy32_src / "ports" / "unix"  # its variants/manifest.py is in the trimmed tree
    else:
        # The ESP32 port is not in the trimmed tree: stand in an empty boards/manifest.py for it.
        port_dir = tmp_path / "port"
        (port_dir / "boards").mkdir(parents=True)
        (port_dir / "boards" / "manifest.py").write_text("")
    path_vars = {
        "MPY_DIR": str(upy32_src),
        "MPY_LIB_DIR": str(upy32_src / "lib" / "micropython-lib"),
        "PORT_DIR": str(port_dir),
        "BOARD_DIR": str(board),
    }
    manifest = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, path_vars)
    manifest.execute(str(board / "manifest.py"))
    frozen = {Path(f.full_path).resolve(): f.target_path for f in manifest.files()}
    from_firmware = {p: t for p, t in frozen.items() if p.is_relative_to(FIRMWARE)}
    expected = {p.resolve(): p.relative_to(FIRMWARE).as_posix() for p in firmware_sources()}
    assert from_firmware == expected


@pytest.fixture
def scratch_upy32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """mcagent_tools.upy32 building into tmp_path (so the shared build and its lock are not touched)."""
    from mcagent_tools import upy32

    monkeypatch.setattr(upy32, "BUILD_DIR", tmp_path / "upy32")
    monkeypatch.setattr(upy32, "SRC_DIR", tmp_path / "upy32" / "src")
    monkeypatch.delenv("MICROPY_SRC", raising=False)
    monkeypatch.delenv("CI", raising=False)
    return upy32


def test_without_source_the_reason_gives_the_git_commands(
    scratch_upy32: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(scratch_upy32, "TARBALL", tmp_path / "missing.tar.gz")
    with pytest.raises(scratch_upy32.Upy32Unavailable) as e:
        scratch_upy32.ensure()
    assert all(cmd in e.value.reason for cmd in scratch_upy32.GIT_COMMANDS)
    assert scratch_upy32.main(["--optional"]) == 0  # `make test` goes on; the fixtures skip
    assert scratch_upy32.main([]) == 1  # `make upy32` asked for it
    monkeypatch.setenv("CI", "true")
    assert scratch_upy32.main(["--optional"]) == 1
    assert "git clone --depth 1 -b v1.28.0" in capsys.readouterr().err


def test_without_32_bit_gcc_the_reason_says_install_gcc_multilib(
    upy32_src: Path, scratch_upy32: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPY_SRC", str(upy32_src))
    monkeypatch.setenv("CC", "false")  # a "compiler" that builds nothing
    with pytest.raises(scratch_upy32.Upy32Unavailable, match="gcc-multilib"):
        scratch_upy32.ensure()
