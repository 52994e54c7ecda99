"""Provisioning many boards: `mcagent deploy --config-dir DIR --port P1 --port P2 ...`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mcagent_helpers import agentconfig, assert_no_secrets, run_cli, run_cli_here
from mcagent_tools.testing import RunningVBoard

IDS = ["a1" * 16, "b2" * 16, "c3" * 16]


def _config_dir(tmp_path: Path) -> Path:
    configs = tmp_path / "configs"
    configs.mkdir()
    for name, client_id in zip(("line1-a.json", "line1-b.json", "line1-c.json"), IDS, strict=True):
        (configs / name).write_text(json.dumps(agentconfig(client_id)))
    return configs


def _line_board(boards: Path) -> str:
    """The unix board without mappings onto its asset: one board.json that many boards can share."""
    doc = json.loads((boards / "unix" / "board.json").read_text())
    for sensor in doc.get("sensors", []):
        for point in sensor.get("points", []):
            point.pop("property", None)
    (boards / "unix_line").mkdir(exist_ok=True)
    (boards / "unix_line" / "board.json").write_text(json.dumps({**doc, "board": "unix_line"}))
    return "unix_line"


def _args(
    configs: Path,
    ports: list[str],
    agent: dict[str, Path],
    boards: Path,
    fw: Path,
    build: Path,
    board: str | None = None,
) -> list[str]:
    board = board or _line_board(boards)
    args = ["deploy", "--board", board, "--config-dir", str(configs), "--settings", str(agent["settings"])]
    args += ["--ca", str(agent["ca"]), "--boards-dir", str(boards), "--firmware-dir", str(fw)]
    args += ["--build-dir", str(build)]
    for port in ports:
        args += ["--port", port]
    return args


def test_one_failing_board_does_not_stop_the_rest(
    vboard_factory: Callable[..., RunningVBoard],
    agent_files: dict[str, Path],
    boards_dir: Path,
    firmware_snapshot: Path,
    build_dir: Path,
    tmp_path: Path,
) -> None:
    first, third = vboard_factory("first"), vboard_factory("third")
    dead = "/dev/pts/no-such-board"
    configs = _config_dir(tmp_path)
    report = tmp_path / "report.json"
    ports = [first.port, dead, third.port]
    proc = run_cli(
        *_args(configs, ports, agent_files, boards_dir, firmware_snapshot, build_dir), "--report", str(report)
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_no_secrets(proc.stdout, proc.stderr)

    summary = proc.stdout[proc.stdout.index("summary:") :].splitlines()
    assert summary[1] == f"  {first.port} <- agent {IDS[0]} (line1-a.json): ok"
    assert summary[2].startswith(f"  {dead} <- agent {IDS[1]} (line1-b.json): FAILED: ")
    assert summary[3] == f"  {third.port} <- agent {IDS[2]} (line1-c.json): ok"
    assert summary[4] == "2 of 3 boards deployed"
    assert f"{dead}: FAILED" in proc.stderr

    # Each board got its own agent.
    assert json.loads((first.dir / "agentconfig.json").read_text())["content"]["clientId"] == IDS[0]
    assert json.loads((third.dir / "agentconfig.json").read_text())["content"]["clientId"] == IDS[2]
    rows = json.loads(report.read_text())
    assert [(r["port"], r["agent_id"], r["ok"]) for r in rows] == [
        (first.port, IDS[0], True),
        (dead, IDS[1], False),
        (third.port, IDS[2], True),
    ]
    assert rows[1]["error"]


def test_configs_and_ports_must_pair_up(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    configs = _config_dir(tmp_path)
    proc = run_cli_here(
        *_args(configs, ["/dev/a", "/dev/b"], agent_files, boards_dir, firmware_snapshot, build_dir)
    )
    assert proc.returncode == 2
    assert "has 3 agentconfig files but 2 ports were given: each board needs its own agent" in proc.stderr

    (configs / "line1-c.json").write_text(json.dumps(agentconfig(IDS[0])))
    proc = run_cli_here(
        *_args(configs, ["/dev/a", "/dev/b", "/dev/c"], agent_files, boards_dir, firmware_snapshot, build_dir)
    )
    assert proc.returncode == 2 and f"the same agent is in more than one file: {IDS[0]}" in proc.stderr

    one = [
        "deploy",
        "--board",
        "unix",
        "--config",
        str(agent_files["config"]),
        "--port",
        "/dev/a",
        "--port",
        "/dev/b",
    ]
    proc = run_cli_here(*one, "--boards-dir", str(boards_dir), "--dry-run")
    assert proc.returncode == 2 and "one --config is one agent" in proc.stderr


def test_dry_run_for_many_boards_says_which_board_gets_which_agent(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    configs = _config_dir(tmp_path)
    ports = ["/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2"]
    proc = run_cli_here(
        *_args(configs, ports, agent_files, boards_dir, firmware_snapshot, build_dir), "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr
    headers = [line for line in proc.stdout.splitlines() if line.startswith("#")]
    assert headers == [
        f"# {port} <- agent {client_id} ({configs / name})"
        for port, client_id, name in zip(
            ports, IDS, ("line1-a.json", "line1-b.json", "line1-c.json"), strict=True
        )
    ]
    assert len(proc.stdout.splitlines()) == 3 * 4
    assert_no_secrets(proc.stdout, proc.stderr)


def test_many_boards_cannot_all_feed_one_asset(
    agent_files: dict[str, Path], boards_dir: Path, firmware_snapshot: Path, build_dir: Path, tmp_path: Path
) -> None:
    """An asset property takes one agent's data point: every board after the first would have its mappings
    refused and its readings dropped by the service. Refused before any board is touched."""
    configs = _config_dir(tmp_path)
    ports = ["/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB2"]
    args = _args(configs, ports, agent_files, boards_dir, firmware_snapshot, build_dir, board="unix")
    proc = run_cli_here(*args, "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    named = f"refusing to deploy: {(boards_dir / 'unix' / 'board.json').resolve()} maps its data points"
    assert named in proc.stderr, proc.stderr
    assert "onto asset 5e1f0a3b7c2d4e6f8a9b0c1d2e3f4a5b, and an asset property" in proc.stderr
    assert "3 boards cannot all feed it" in proc.stderr and "its own dsc.entityId" in proc.stderr
