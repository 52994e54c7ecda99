"""Pieces of `mcagent` that need no board: .mpy matching, CA certificates, layout, plan helpers."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
from pathlib import Path, PurePosixPath
from unittest import mock

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from mcagent_tools import layout
from mcagent_tools.build import mpy_cross_path
from mcagent_tools.certs import DIGICERT_G2_SHA256, CertError, der_certs, insights_hub_root, write_der_dir
from mcagent_tools.deploy import (
    Bundle,
    chip_mismatch,
    cleanup_code,
    parse_hashes,
    settings_ca_warnings,
    store_room_problem,
)
from mcagent_tools.mpytarget import (
    IncompatibleDevice,
    MpyTarget,
    check_compatible,
    cross_flags,
    cross_version,
    uses_native_code,
)
from mcagent_tools.vboard import micropython_path

ESP32_MPY = 6 | 3 << 8 | 10 << 10  # what an ESP32 running MicroPython 1.24 reports: v6.3, xtensawin


def test_decode_sys_implementation_mpy() -> None:
    assert MpyTarget.from_sys_mpy(2822) == MpyTarget(6, 3, "x64")  # this host's Unix port
    assert MpyTarget.from_sys_mpy(ESP32_MPY) == MpyTarget(6, 3, "xtensawin")
    assert MpyTarget.from_sys_mpy(6) == MpyTarget(6, 0, None)
    assert str(MpyTarget(6, 3, "xtensawin")) == ".mpy v6.3 (xtensawin)"


def test_mpy_cross_version_matches_the_unix_port() -> None:
    out = subprocess.run([micropython_path(), "-c", "import sys; print(sys.implementation._mpy)"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert cross_version()[0] == MpyTarget.from_sys_mpy(int(out)).version


def test_compatibility_rules() -> None:
    assert check_compatible(ESP32_MPY, (1, 24, 1), (6, 3)).arch == "xtensawin"
    assert (
        check_compatible(6 | 1 << 8, (1, 23, 0), (6, 3)).version == 6
    )  # sub-versions differ: bytecode loads
    with pytest.raises(
        IncompatibleDevice, match=r"loads \.mpy v5, but mpy-cross here emits \.mpy v6\.3: flash a newer"
    ):
        check_compatible(5 | 10 << 10, (1, 19, 1), (6, 3))
    with pytest.raises(IncompatibleDevice, match=r"install an mpy-cross as new as the board's"):
        check_compatible(7, (2, 0, 0), (6, 3))
    with pytest.raises(IncompatibleDevice, match=r"MicroPython 1\.20\.0; mcagent needs >= 1\.23"):
        check_compatible(6 | 1 << 8, (1, 20, 0), (6, 3))
    with pytest.raises(IncompatibleDevice, match=r"does not report sys\.implementation\._mpy"):
        check_compatible(None, (1, 11, 0), (6, 3))


def test_arch_flag_only_with_native_code(tmp_path: Path) -> None:
    target = MpyTarget.from_sys_mpy(ESP32_MPY)
    assert cross_flags(target, native=True) == ("-march=xtensawin",)
    assert cross_flags(target, native=False) == ()
    assert cross_flags(MpyTarget(6, 3, None)) == ()
    plain, native = tmp_path / "a.py", tmp_path / "b.py"
    plain.write_text("x = 1\n")
    native.write_text("import micropython\n@micropython.native\ndef f():\n    return 1\n")
    assert not uses_native_code([plain]) and uses_native_code([plain, native])
    # Bytecode-only .mpy files are identical whatever -march says: one build serves every board.
    outs = []
    for flags in ((), ("-march=xtensawin",)):
        out = tmp_path / f"a{len(flags)}.mpy"
        subprocess.run([mpy_cross_path(), *flags, "-s", "a.py", "-o", str(out), str(plain)], check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_insights_hub_root_comes_from_the_host_store_and_is_pinned() -> None:
    root = insights_hub_root()
    assert root.sha256 == DIGICERT_G2_SHA256
    assert root.name == layout.INSIGHTS_HUB_ROOT_DER
    assert "DigiCert Global Root G2" in root.subject
    # A host without it: a clear message that says what to do.
    paths = ssl.get_default_verify_paths()._replace(cafile="")
    with (
        mock.patch("ssl.get_default_verify_paths", return_value=paths),
        mock.patch("mcagent_tools.certs.certifi_bundle", return_value=None),
    ):
        with pytest.raises(CertError, match="DigiCert Global Root G2 .* install ca-certificates"):
            insights_hub_root(search=("/nonexistent.pem",))


def _der(ca: trustme.CA) -> bytes:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(Encoding.DER)


def test_ca_files_become_one_der_file_per_certificate(tmp_path: Path) -> None:
    a, b = trustme.CA(), trustme.CA()
    single = tmp_path / "southgate ca.pem"
    a.cert_pem.write_to_path(str(single))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(a.cert_pem.bytes() + b.cert_pem.bytes())
    der = tmp_path / "ca.der"
    der.write_bytes(_der(b))
    certs = der_certs([single, bundle, der], insights_hub=False)
    # a is in single and bundle, b in bundle and der: each certificate once, named after its first file.
    assert [c.name for c in certs] == ["southgate-ca.der", "bundle-2.der"]
    assert certs[0].der == _der(a)
    out = tmp_path / "certs"
    out.mkdir()
    (out / "old.der").write_bytes(b"stale")
    paths = write_der_dir(certs, out)
    assert sorted(p.name for p in out.iterdir()) == ["bundle-2.der", "southgate-ca.der"]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == [c.sha256 for c in certs]
    with pytest.raises(CertError, match="not a PEM or DER X.509 certificate"):
        der_certs([tmp_path / "bundle.pem", _junk(tmp_path)], insights_hub=False)


def _junk(tmp_path: Path) -> Path:
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03junk")
    return junk


def test_device_paths() -> None:
    assert layout.device_path_for_source(PurePosixPath("mcagent/http.py")) == PurePosixPath(
        "/lib/mcagent/http.mpy"
    )
    assert layout.device_path_for_source(PurePosixPath("sensors/sim.py")) == PurePosixPath(
        "/lib/sensors/sim.mpy"
    )
    assert layout.device_path_for_source(PurePosixPath("main.py")) == PurePosixPath("/lib/mcnode.mpy")
    assert layout.device_path_for_source(PurePosixPath("boot.py")) == PurePosixPath("/boot.py")
    assert layout.MAIN_STUB == "import mcnode\nmcnode.main()\n"
    assert layout.device_path_for_source(PurePosixPath("util.py")) == PurePosixPath("/lib/util.mpy")


def test_cleanup_code_runs_on_micropython(tmp_path: Path) -> None:
    pkg = tmp_path / "lib" / "mcagent"
    pkg.mkdir(parents=True)
    for name in ("a.mpy", "b.mpy", "a.py", "stale.mpy"):
        (pkg / name).write_text("")
    (pkg / "sub").mkdir()  # directories are left alone
    code = cleanup_code([(str(pkg), ("a.mpy", "b.mpy"))])
    out = subprocess.run([micropython_path(), "-c", code], capture_output=True, text=True, check=True).stdout
    assert sorted(p.name for p in pkg.iterdir()) == ["a.mpy", "b.mpy", "sub"]
    assert sorted(out.split("\n")[:-1]) == [f"removed {pkg}/a.py", f"removed {pkg}/stale.mpy"]


def test_parse_hashes_from_mpremote_output() -> None:
    h1, h2 = "a" * 64, "b" * 64
    out = f"cp x :y\nsha256sum :/main.py\n{h1}\nsha256sum :/lib/mcagent/x.mpy\n{h2}\nsha256sum :/gone\n"
    assert parse_hashes(out) == {"/main.py": h1, "/lib/mcagent/x.mpy": h2}


def test_chip_mismatch() -> None:
    assert chip_mismatch("esp32", "esp32", "Generic ESP32 module with ESP32") is None
    assert chip_mismatch("esp32s3", "esp32", "Generic ESP32S3 module with ESP32S3") is None
    assert chip_mismatch("esp32c3", "esp32", "ESP32C3 module with ESP32C3") is None
    assert "wrong --board" in (chip_mismatch("esp32", "esp32", "Generic ESP32S3 module with ESP32S3") or "")
    assert "wrong --board" in (chip_mismatch("esp32s3", "linux", "linux [GCC 14.2.1] version") or "")
    assert chip_mismatch("unix", "linux", "linux") is None
    assert chip_mismatch(None, "rp2", "Raspberry Pi Pico") is None


def test_settings_ca_warnings() -> None:
    certs = der_certs([], insights_hub=True)
    assert settings_ca_warnings(None, certs) == []
    assert settings_ca_warnings({"ca": ["certs/digicert-global-root-g2.der"]}, certs) == []
    assert settings_ca_warnings({"ca": "/certs/digicert-global-root-g2.der"}, certs) == []
    assert settings_ca_warnings({}, certs) == []  # no "ca": the agent trusts every installed certificate
    assert "names ca.der" in settings_ca_warnings({"ca": ["ca.der"]}, certs)[0]


def test_deploy_refuses_a_store_the_boards_filesystem_cannot_hold(tmp_path: Path) -> None:
    """The store shrinks a capacity the filesystem cannot hold when it opens, so the buffer would quietly be
    smaller than board.json says. Deploy checks it against what the board reports
    (statvfs), each copied file in whole blocks, each directory and the superblock two, 40 blocks kept for
    the node's own files."""
    node_json = tmp_path / "node.json"
    node_json.write_text('{"store": {"capacity_bytes": 1048576}}')
    lib = tmp_path / "a.mpy"
    lib.write_bytes(b"x" * 5000)  # two 4 KiB blocks
    board = tmp_path / "board.json"
    board.write_text("{}")  # one block; node.json one, agentconfig.json one
    bundle = Bundle(
        tmp_path, tmp_path, [], tmp_path, [], board, None, node_json, lib_files=[(lib, "/lib/a.mpy")]
    )
    used = (2 + 1 + 1 + 1 + 2 + 2 + 40) * 4096  # files; the superblock; /lib; the node's own
    assert store_room_problem(bundle, 1048576 + used, 4096) is None
    problem = store_room_problem(bundle, 1048576 + used - 4096, 4096)
    assert problem == (
        "the store's capacity (1024 KiB, store.capacity_kb in board.json) does not fit this board's"
        " filesystem of 1216 KiB beside the 36 KiB deploy copies and 160 KiB for the node's own files: set"
        " store.capacity_kb to at most 1020"
    )
    assert store_room_problem(bundle, None, 4096) is None  # an older probe, or a port without statvfs
    node_json.write_text("{}")
    assert store_room_problem(bundle, 4096, 4096) is None  # nothing to check against


def test_read_takes_times_alike_on_every_python() -> None:
    """mcagent read's --from/--to: any digits of a second's fraction and +hhmm zones, as on Python 3.11, on
    3.10 too (its fromisoformat is strict); a date is its midnight UTC; no zone is refused."""
    from datetime import datetime, timezone

    from mcagent_tools.read import _when

    utc = timezone.utc
    assert _when("--from", "2026-12-01T00:00:00.5Z") == datetime(2026, 12, 1, 0, 0, 0, 500000, utc)
    assert _when("--from", "2026-12-01T00:00:00.123456789Z") == datetime(2026, 12, 1, 0, 0, 0, 123456, utc)
    assert _when("--from", "2026-12-01T01:00:00+0100") == datetime(2026, 12, 1, tzinfo=utc)
    assert _when("--to", "2026-12-01") == datetime(2026, 12, 1, tzinfo=utc)
    assert _when("--to", None) is None
    for bad in ("2026-12-01T00:00:00", "yesterday", "2026-13-01T00:00:00Z"):
        with pytest.raises(ValueError, match="not an ISO 8601 time with a zone"):
            _when("--from", bad)
