"""`mcagent deploy` against a virtual board: layout, skipping unchanged files, dry-run exactness, refusals."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from mcagent_helpers import IAT, assert_no_secrets, deploy_args, run_cli, run_cli_here, wait_for
from mcagent_tools import layout
from mcagent_tools.build import HOST_ONLY
from mcagent_tools.deploy import cleanup_code, probe_code
from mcagent_tools.mpytarget import cross_version
from mcagent_tools.runner import tool_path
from mcagent_tools.testing import RunningVBoard


def _counts(stdout: str) -> tuple[int, int, int, int]:
    m = re.search(r"(\d+) files: (\d+) copied, (\d+) unchanged, (\d+) stale removed; all verified", stdout)
    assert m, stdout
    total, copied, unchanged, removed = (int(x) for x in m.groups())
    return total, copied, unchanged, removed


def _expected_device_files(firmware: Path) -> set[str]:
    files = {
        "agentconfig.json",
        "board.json",
        "settings.json",
        "node.json",
        "certs/digicert-global-root-g2.der",
        "certs/ca.der",
    }
    for src in firmware.rglob("*.py"):
        rel = src.relative_to(firmware)
        if rel.as_posix() in HOST_ONLY:  # CPython's: never copied to a board
            continue
        if rel.as_posix() == "main.py":  # compiled to /lib/mcnode.mpy; /main.py is a two-line stub
            files |= {"main.py", f"lib/{layout.RUNTIME_MODULE}.mpy"}
        elif rel.as_posix() in layout.SCRIPTS:
            files.add(rel.as_posix())
        else:
            files.add("lib/" + rel.with_suffix(".mpy").as_posix())
    return files


def test_deploy_installs_the_layout_then_copies_nothing_unchanged(
    vboard: RunningVBoard,
    agent_files: dict[str, Path],
    boards_dir: Path,
    firmware_snapshot: Path,
    build_dir: Path,
) -> None:
    args = deploy_args(vboard.port, agent_files, boards_dir, firmware_snapshot, build_dir)
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_no_secrets(first.stdout, first.stderr)
    total, copied, unchanged, removed = _counts(first.stdout)
    assert (copied, unchanged, removed) == (total, 0, 0)
    assert "agent 0123456789abcdef0123456789abcdef" in first.stdout
    assert "reset: the virtual board restarted" in first.stdout
    wait_for(lambda: "vboard: machine.reset(): rebooting" in vboard.console())
    assert "micropython exited" not in vboard.console()  # machine.reset(), not a crash

    # The on-device layout (docs/deploy.md), byte for byte where the file is copied as it is.
    on_board = {p.relative_to(vboard.dir).as_posix() for p in vboard.dir.rglob("*") if p.is_file()}
    assert on_board == _expected_device_files(firmware_snapshot)
    assert total == len(on_board)
    assert (vboard.dir / "agentconfig.json").read_bytes() == agent_files["config"].read_bytes()
    assert (vboard.dir / "settings.json").read_bytes() == agent_files["settings"].read_bytes()
    assert (vboard.dir / "board.json").read_bytes() == (boards_dir / "unix" / "board.json").read_bytes()
    if (firmware_snapshot / "main.py").exists():
        assert (vboard.dir / "main.py").read_text() == "import mcnode\nmcnode.main()\n"
    root = x509.load_der_x509_certificate((vboard.dir / "certs" / "digicert-global-root-g2.der").read_bytes())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "DigiCert Global Root G2"
    local_ca = x509.load_pem_x509_certificate(agent_files["ca"].read_bytes())
    assert x509.load_der_x509_certificate((vboard.dir / "certs" / "ca.der").read_bytes()) == local_ca

    # The compiled package and runtime import on the board (as .mpy, from /lib).
    out = vboard.exec("import mcagent, mcnode; print(mcagent.__file__, mcnode.__file__)")
    assert out.strip() == "/lib/mcagent/__init__.mpy /lib/mcnode.mpy"

    # Second deploy: nothing changed, nothing copied.
    second = run_cli(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _counts(second.stdout) == (total, 0, total, 0)

    # A changed settings file is copied with the node.json compiled from it (nothing else); a stale module
    # (which would shadow the .mpy) is removed.
    settings = json.loads(agent_files["settings"].read_text())
    settings["ntp_host"] = "pool.ntp.org"
    agent_files["settings"].write_text(json.dumps(settings))
    (vboard.dir / "lib" / "mcagent" / "old_module.py").write_text("raise ImportError\n")
    (vboard.dir / "lib" / "mcagent" / "__init__.py").write_text("VERSION = 'stale source'\n")
    # Things on the board that would keep the agent from running are pointed out.
    (vboard.dir / "STOP").write_text("")
    (vboard.dir / "mcagent").mkdir()
    third = run_cli(*args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "note: /STOP is on the board" in third.stdout
    assert "WARNING: the directory /mcagent on the board shadows the package /lib/mcagent" in third.stdout
    assert _counts(third.stdout) == (total, 2, total - 2, 2)
    assert not (vboard.dir / "lib" / "mcagent" / "old_module.py").exists()
    assert not (vboard.dir / "lib" / "mcagent" / "__init__.py").exists()
    assert json.loads((vboard.dir / "settings.json").read_text())["ntp_host"] == "pool.ntp.org"
    assert_no_secrets(second.stdout, second.stderr, third.stdout, third.stderr)


def test_dry_run_prints_exactly_the_commands_deploy_runs(
    vboard: RunningVBoard,
    agent_files: dict[str, Path],
    boards_dir: Path,
    firmware_snapshot: Path,
    build_dir: Path,
) -> None:
    args = deploy_args(vboard.port, agent_files, boards_dir, firmware_snapshot, build_dir)
    dry = run_cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert_no_secrets(dry.stdout, dry.stderr)
    lines = dry.stdout.splitlines()
    assert len(lines) == 3, dry.stdout
    assert not any(vboard.dir.iterdir()), "a dry run must not touch the board"
    # what it would copy and the board's heap budget, beside (not among) the commands
    assert "bytes of .mpy bytecode" in dry.stderr and "384 KB of GC heap (heap_kb)" in dry.stderr, dry.stderr

    mp = tool_path("mpremote")
    port = vboard.port
    config = str(agent_files["config"].resolve())
    settings = str(agent_files["settings"].resolve())
    board = str((boards_dir / "unix" / "board.json").resolve())
    fw = build_dir.resolve() / "fw"
    assert shlex.split(lines[0]) == [mp, "connect", port, "resume", "exec", probe_code(cross_version())]
    assert shlex.split(lines[2]) == [mp, "connect", port, "resume", "reset"]

    install = shlex.split(lines[1])
    steps = [s for s in " ".join(shlex.quote(a) for a in install).split(" + ")]
    device = sorted(_expected_device_files(firmware_snapshot))
    mpys = sorted(p.relative_to(fw / "lib") for p in (fw / "lib").rglob("*.mpy"))
    owned: dict[str, list[str]] = {}
    for m in mpys:
        if m.parent != Path("."):  # /lib itself is shared with the user's libraries: never cleaned
            owned.setdefault(f"/lib/{m.parent.as_posix()}", []).append(m.name)
    owned["/certs"] = ["ca.der", "digicert-global-root-g2.der"]
    expected = [
        [mp, "connect", port, "resume", "exec", 'import os;os.chdir("/")'],
        ["fs", "cp", "-r", str(fw / "lib"), ":"],
        *([["fs", "cp", str(fw / "main.py"), ":/main.py"]] if (fw / "main.py").exists() else []),
        ["fs", "cp", board, ":/board.json"],
        ["fs", "cp", config, ":/agentconfig.json"],
        ["fs", "cp", settings, ":/settings.json"],
        ["fs", "cp", str(build_dir.resolve() / "node.json"), ":/node.json"],
        ["fs", "cp", "-r", str(build_dir.resolve() / "certs"), ":"],
        ["exec", cleanup_code(sorted((d, tuple(sorted(n))) for d, n in owned.items()))],
        ["fs", "sha256sum", *[":/" + d for d in device]],
    ]
    assert [shlex.split(s) for s in steps] == expected

    # The printed lines work when pasted into a shell (here against the virtual board) ...
    for line in lines[:2]:
        pasted = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120)
        assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert (vboard.dir / "agentconfig.json").exists()
    # ... and a real deploy runs the very same commands (-v shows them), finding everything in place.
    real = run_cli(*args, "-v")
    assert real.returncode == 0, real.stdout + real.stderr
    ran = [line[2:] for line in real.stdout.splitlines() if line.startswith("$ ")]
    assert ran == lines
    total, copied, unchanged, _ = _counts(real.stdout)
    assert (copied, unchanged) == (0, total)
    assert_no_secrets(real.stdout, real.stderr)


def test_dry_run_touches_no_board(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path
) -> None:
    args = deploy_args("/dev/no-such-board", agent_files, boards_dir, firmware_snapshot, build_dir)
    dry = run_cli_here(*args, "--dry-run", "--no-reset")
    assert dry.returncode == 0, dry.stderr
    assert len(dry.stdout.splitlines()) == 2
    assert "/dev/no-such-board" in dry.stdout


def test_probe_guard_refuses_a_board_with_another_mpy_version(vboard: RunningVBoard) -> None:
    # The pasted probe line fails on a board that can't load our .mpy files (faked: we expect v5 here).
    major, sub = cross_version()
    proc = vboard.mpremote("exec", probe_code((major - 1, sub)))
    assert proc.returncode != 0
    assert f"needs MicroPython >= 1.23 loading .mpy v{major - 1}" in proc.stdout + proc.stderr
    ok = vboard.mpremote("exec", probe_code((major, sub)))
    assert ok.returncode == 0 and "MCAGENT-PROBE" in ok.stdout
    info = json.loads(ok.stdout.split("MCAGENT-PROBE ", 1)[1].splitlines()[0])
    assert info["fs_size"] >= info["fs_free"] > 0 and info["fs_block"] > 0  # deploy checks the store's room


def test_refuses_a_board_json_for_another_chip(
    vboard: RunningVBoard,
    agent_files: dict[str, Path],
    boards_dir: Path,
    firmware_snapshot: Path,
    build_dir: Path,
) -> None:
    args = deploy_args(vboard.port, agent_files, boards_dir, firmware_snapshot, build_dir)
    args[args.index("unix")] = "esp32_test"
    proc = run_cli(*args)
    assert proc.returncode == 1
    assert "refusing to deploy: board.json is for an esp32 but the device is 'linux'" in proc.stderr
    assert not (vboard.dir / "agentconfig.json").exists()


def test_bad_inputs_are_refused_with_the_file_named_and_no_secret(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"content": {"iat": IAT, "baseUrl": "https://x"}}))
    args = deploy_args("/dev/null", agent_files, boards_dir, firmware_snapshot, build_dir)
    args[args.index(str(agent_files["config"]))] = str(broken)
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2
    assert f"{broken} has 2 problems" in proc.stderr and '"content.clientId" is missing' in proc.stderr
    assert_no_secrets(proc.stdout, proc.stderr)

    bad_settings = tmp_path / "settings.json"
    bad_settings.write_text('{"wifi": {"password": "' + "x" * 8 + '"')
    args = deploy_args(
        "/dev/null", {**agent_files, "settings": bad_settings}, boards_dir, firmware_snapshot, build_dir
    )
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2 and "settings is not valid JSON (line 1 column" in proc.stderr
    assert "xxxxxxxx" not in proc.stderr

    proc = run_cli_here(*args, "--dry-run", "--report", str(tmp_path / "nodir" / "r.json"))
    assert proc.returncode == 2 and "--report" in proc.stderr and "does not exist" in proc.stderr

    bad_settings.write_bytes('{"wifi": {"ssid": "Caf\u00e9", "password": "xxxxxxxx"}}'.encode("latin-1"))
    proc = run_cli_here(*args, "--dry-run")  # saved by an editor in Latin-1: named, not a traceback
    assert proc.returncode == 2 and "settings is not UTF-8 text" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "xxxxxxxx" not in proc.stderr

    args = deploy_args("/dev/null", agent_files, boards_dir, firmware_snapshot, build_dir)
    args[args.index("unix")] = "no-such-board"
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2 and "no board 'no-such-board'" in proc.stderr and "unix" in proc.stderr


def test_settings_that_name_other_ca_files_get_a_warning(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    settings = tmp_path / "settings-other-ca.json"
    settings.write_text(json.dumps({"ca": ["ca.der"]}))
    args = deploy_args(
        "/dev/null", {**agent_files, "settings": settings}, boards_dir, firmware_snapshot, build_dir
    )
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 0
    assert 'warning: settings.json "ca" names ca.der, which deploy does not install' in proc.stderr


def test_dry_run_refuses_what_the_board_would_refuse_at_boot(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    """The firmware's own checks run on the host: each bad file is refused with its field named."""
    settings = tmp_path / "settings-unknown.json"
    settings.write_text(json.dumps({"wifi": {"ssid": "x"}, "colour": "blue"}))
    args = deploy_args(
        "/dev/null", {**agent_files, "settings": settings}, boards_dir, firmware_snapshot, build_dir
    )
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2 and "colour" in proc.stderr, proc.stderr

    c3 = json.loads((layout_root() / "boards" / "esp32c3" / "board.json").read_text())
    c3["sensors"] = [
        {"kind": "adc", "name": "battery", "pin": 7, "points": [{"channel": "voltage", "id": "DP-V"}]}
    ]
    own = tmp_path / "elsewhere" / "my-c3.json"  # a user's own board, outside the clone
    own.parent.mkdir()
    own.write_text(json.dumps(c3))
    args = deploy_args("/dev/null", agent_files, boards_dir, firmware_snapshot, build_dir)
    args[args.index("unix")] = str(own)
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2 and "pin" in proc.stderr and "7" in proc.stderr, proc.stderr

    rsa = json.loads(agent_files["config"].read_text())
    rsa["content"]["clientCredentialProfile"] = ["RSA_3072"]
    config = tmp_path / "rsa.json"
    config.write_text(json.dumps(rsa))
    args = deploy_args(
        "/dev/null", {**agent_files, "config": config}, boards_dir, firmware_snapshot, build_dir
    )
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2 and "SHARED_SECRET" in proc.stderr, proc.stderr
    assert_no_secrets(proc.stdout, proc.stderr)


def test_a_board_definition_outside_the_clone_deploys(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    own = tmp_path / "mine" / "board.json"
    own.parent.mkdir()
    own.write_text((boards_dir / "unix" / "board.json").read_text())
    args = deploy_args("/dev/null", agent_files, boards_dir, firmware_snapshot, build_dir)
    args[args.index("unix")] = str(own.parent)  # a directory holding board.json works too
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert str(own.resolve()) in proc.stdout


def layout_root() -> Path:
    from mcagent_tools.build import ROOT

    return ROOT


def test_mpy_files_leave_line_numbers_out_unless_asked(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path
) -> None:
    """-O3 by default (the line-number tables are ~2 KB of a wake's heap); --line-numbers keeps them."""
    args = deploy_args("/dev/no-such-board", agent_files, boards_dir, firmware_snapshot, build_dir)
    sizes = []
    for extra in ((), ("--line-numbers",)):
        dry = run_cli_here(*args, "--dry-run", "--no-reset", *extra)
        assert dry.returncode == 0, dry.stderr
        stamp = json.loads(next(build_dir.rglob(".build-stamp")).read_text())
        assert stamp["flags"] == (["-O0"] if extra else []) and stamp["opt"] == "-O3"
        sizes.append(sum(p.stat().st_size for p in build_dir.rglob("*.mpy")))
    assert sizes[0] < sizes[1] - 2000, sizes
