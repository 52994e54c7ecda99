"""`make demo`: the whole system on one laptop, in under a minute.

Starts southgate on a free loopback port with a throw-away data dir, creates an agent, and runs the real
`firmware/main.py` on the `unix` board under the MicroPython Unix port (board-sized heap, flash = a littlefs
image file). The schedule runs fast (`--speed`), the secret lifetime is short, so one run shows uploads,
deep-sleep wakes and a secret rotation. Then it prints what happened and checks that every value southgate
stored equals what the simulated sensors produced for that timestamp.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from southgate.assets import from_board
from southgate.clock import parse_iso
from southgate.testing import RunningSouthgate

from mcagent_tools.build import FIRMWARE, ROOT, compile_tree

BOARD_DIR = ROOT / "boards" / "unix"


def micropython() -> str:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else shutil.which("micropython") or "micropython"


def simulated_points(board: dict[str, Any]) -> dict[str, tuple[dict[str, Any], int]]:
    """dataPointId -> (point spec, sensor seed) for every simulated point of the board."""
    points = {}
    for sensor in board["sensors"]:
        if sensor["kind"] == "sim":
            for p in sensor["points"]:
                points[p["id"]] = (p, sensor.get("seed", 1))
    return points


def expected_value(point: dict[str, Any], seed: int, t_ms: int) -> Any:
    sys.path.insert(0, str(FIRMWARE))
    try:
        from sensors import sim  # the firmware's own simulator: a pure function of the timestamp
    finally:
        sys.path.remove(str(FIRMWARE))
    return sim.value_at(point, t_ms, seed)


def same(stored: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(stored, bool):
        return str(stored).lower() == str(expected).lower()
    try:
        return math.isclose(float(stored), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    except (TypeError, ValueError):
        return str(stored) == str(expected)


def console_screenshot(sg: RunningSouthgate, agent_id: str, out: Path) -> str | None:
    """The agent's page of southgate's console, charts drawn, as a PNG (the system's headless Chromium,
    logged in with the link southgate printed at start); the error text when that cannot be done here."""
    from southgate.console.shot import screenshot_agent

    try:
        screenshot_agent((sg.data_dir / "southgate.out").read_text(), agent_id, out)
    except (OSError, RuntimeError) as exc:
        return f"not taken: {exc}"
    return None


def run_demo(
    run_s: float, speed: float, secret_lifetime_s: int, keep: Path | None, console_shot: Path | None = None
) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mcagent-demo-")) if keep is None else keep
    work.mkdir(parents=True, exist_ok=True)
    board = json.loads((BOARD_DIR / "board.json").read_text())
    heap_kb = board.get("heap_kb", 256)
    mpy = work / "firmware-mpy"
    errors = compile_tree(FIRMWARE, mpy)
    if errors:
        print("\n".join(f"{e.source}: {e.message}" for e in errors), file=sys.stderr)
        return 1
    # Everything runs compiled, as on a board: a two-line launcher imports the compiled main.
    launcher = work / "launch.py"
    launcher.write_text("import main\nmain.main()\n")
    # As on Insights Hub, the asset the board maps onto is modelled first (no --auto-assets).
    with RunningSouthgate(work / "southgate", auto_assets=False, secret_lifetime_s=secret_lifetime_s) as sg:
        asset_id, variables = from_board(BOARD_DIR / "board.json")
        sg.create_asset("unix-node", variables, asset_id=asset_id)
        print(f"asset {asset_id} modelled: " + ", ".join(f"{a}.{v}:{t}" for a, v, t, _ in variables))
        config = sg.create_agent("demo-node")
        agent_id = config["content"]["clientId"]
        agentconfig = work / "agentconfig.json"
        agentconfig.write_text(json.dumps(config))
        agentconfig.chmod(0o600)
        print(f"southgate {sg.base_url}  agent {agent_id}  (secret lifetime {secret_lifetime_s} s)")
        print(f"firmware/main.py on the unix board: heap {heap_kb} KiB, schedule x{speed:g}, {run_s:g} s")
        cmd = [
            micropython(),
            "-X",
            f"heapsize={heap_kb}k",
            str(launcher),  # not firmware/main.py: its directory would put the .py sources first on the path
            "--flash",
            str(work / "flash.img"),
            "--board",
            str(BOARD_DIR / "board.json"),
            "--install",
            f"{agentconfig}:agentconfig.json",
            "--install",
            f"{sg.ca_der}:certs/southgate.der",
            "--speed",
            str(speed),
            "--run-s",
            str(run_s),
        ]
        env = {"MICROPYPATH": f"{mpy}:.frozen", "PATH": "/usr/bin:/bin"}
        # umask: the Unix port has no chmod, so the agent's secret files are made owner-only this way.
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=run_s + 60, umask=0o077)
        (work / "node.log").write_text(proc.stdout + proc.stderr)
        summary = None
        for line in proc.stdout.splitlines():
            if line.startswith("mcagent-summary "):
                summary = json.loads(line.split(" ", 1)[1])
        if proc.returncode != 0 or summary is None:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            print("demo: the firmware run failed", file=sys.stderr)
            return 1
        counters = sg.counters()
        stored = sg.timeseries(agent_id)
        events = sg.events(agent_id)
        diagnostics = sg.diagnostics(agent_id)
        shot_error = console_screenshot(sg, agent_id, console_shot) if console_shot else None
    points = simulated_points(board)
    mismatches = [
        r
        for r in stored
        if r["dataPointId"] in points
        and not same(r["value"], expected_value(*points[r["dataPointId"]], parse_iso(r["timestamp"])))
    ]
    last: dict[str, Any] = {}
    for r in stored:
        last[r["dataPointId"]] = (r["timestamp"], r["value"])
    values_sent = len(stored)
    print()
    print("=== mcagent demo report ===")
    print(f"readings taken      {summary['taken']}  (samples of {len(points)} data points)")
    print(f"readings sent       {summary['sent']}  ({values_sent} values stored by southgate)")
    print(f"readings dropped    {summary['dropped'] + summary.get('store_dropped', 0)}")
    print(f"uploads             {summary['uploads']}")
    print(f"deep-sleep wakes    {summary['wakes']}")
    print(f"secret rotations    {summary['rotations']}")
    print(f"TLS handshakes      {counters.get('tls_handshakes')}")
    print(f"bytes sent          {counters.get('bytes_in')}")
    print(f"events stored       {len(events)}   diagnostics {len(diagnostics)}")
    print("last values as southgate stored them:")
    for dp, (ts, value) in sorted(last.items()):
        print(f"  {dp:<22} {value:>10}  at {ts}")
    print(f"stored == simulated {'yes' if not mismatches else f'NO ({len(mismatches)} differ)'}")
    ok = summary["sent"] > 0 and not mismatches and summary["dropped"] == 0
    if keep is None and ok:
        shutil.rmtree(work, ignore_errors=True)  # a throw-away run leaves nothing behind
        print("query them yourself: run `make demo DEMO_ARGS='--keep demo-data'` (keeps the data), then")
        print("  .venv/bin/southgate timeseries --data demo-data/southgate --format table")
        print("or in the console: .venv/bin/southgate serve --data demo-data/southgate (open the link)")
    else:
        print("query them yourself:")
        data = shlex.quote(str(work / "southgate"))  # a --keep path may hold spaces: copy-paste must work
        print(f"  .venv/bin/southgate timeseries --data {data} --agent {agent_id} --format table")
        print(f"or in the console: .venv/bin/southgate serve --data {data}, open the link it prints")
    if console_shot:
        print(f"console screenshot  {shot_error or console_shot}")
        ok = ok and shot_error is None
    print(f"wall time           {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-s", type=float, default=25, help="how long the node runs (real seconds)")
    parser.add_argument("--speed", type=float, default=60, help="schedule speed-up of the unix board")
    parser.add_argument("--secret-lifetime-s", type=int, default=40, help="secret lifetime (s)")
    parser.add_argument("--keep", type=Path, help="keep all demo data in this directory")
    parser.add_argument(
        "--console-shot", type=Path, metavar="PNG", help="write a screenshot of the agent's console page"
    )
    args = parser.parse_args(argv)
    return run_demo(args.run_s, args.speed, args.secret_lifetime_s, args.keep, args.console_shot)


if __name__ == "__main__":
    raise SystemExit(main())
