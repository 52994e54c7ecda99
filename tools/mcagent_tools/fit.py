"""`make fit` / `python -m mcagent_tools.fit`: does a wake fit the heap a stock board offers?

Runs the real firmware (compiled to .mpy, as `mcagent deploy` installs it) on the unix board under the
32-bit MicroPython Unix port (the ESP32's word and GC block size; `make upy32`), against southgate over
verified TLS, and finds by binary search the smallest `-X heapsize` with which

- a **first wake** succeeds: onboard, DSC, mappings, token, upload of what it sampled;
- a **later wake** succeeds: token refresh (the cached token is dropped), upload of a 1,000-reading backlog;
- a later wake uploads larger backlogs (`--backlogs 10000,100000`; the heap must stay flat).

It also reports what importing each module of a later wake costs. Heap is deterministic for the same
binary and inputs, so these are figures, not samples. Today a first wake needs 136 KB and a later wake
128 KB (targets: 80 and 64 KB), so no per-board budget is enforced yet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcagent_tools.bench import smallest_steady
from mcagent_tools.build import FIRMWARE, ROOT, compile_tree
from mcagent_tools.firmware import node_json

BOARDS = ROOT / "boards"
UPY = Path(__file__).parent / "upy"
LAUNCHER = "import main\nmain.main()\n"
T0_MS = 1790000000000  # backlog readings: T0_MS + i s
STEP_KB = 4  # binary search resolution
WAKE_MODULES = [
    "mcagent",
    "mcagent.compat",
    "mcagent.clock",
    "mcagent.state",
    "runtime",
    "runtime.hw",
    "runtime.node",
    "main",
    "sensors",
    "sensors.sim",
    "mcagent.identity",
    "mcagent.store",
    "mcagent.http",
    "mcagent.exchange",
    "mcagent.uploader",
]


@dataclass
class Wake:
    """One run of firmware/main.py (one cycle) on the unix board at a given heap."""

    ok: bool
    sent: int
    output: str


@dataclass
class Workbench:
    """Compiled firmware, a southgate, the unix board's files; runs wakes at chosen heap sizes."""

    upy: Path
    work: Path
    sg: Any  # southgate.testing.RunningSouthgate
    board_json: Path = BOARDS / "unix" / "board.json"
    frozen: bool = False  # upy is a build with the firmware frozen in (no .mpy on the path)
    mpy: Path = field(init=False)
    launcher: Path = field(init=False)
    node: Path = field(init=False)
    blocks: int = field(init=False)
    agents: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.mpy = self.work / "mpy"
        errors = compile_tree(FIRMWARE, self.mpy)
        if errors:
            raise SystemExit("\n".join(f"{e.source}: {e.message}" for e in errors))
        self.launcher = self.work / "launch.py"
        self.launcher.write_text(LAUNCHER)
        self.node = self.work / "node.json"
        doc = node_json(self.board_json)
        self.node.write_text(json.dumps(doc))
        self.blocks = int(doc["flash_blocks"])

    def micropython(self, heap_kb: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.upy), "-X", f"heapsize={heap_kb}k", *args],
            capture_output=True,
            text=True,
            env={"MICROPYPATH": ".frozen" if self.frozen else f"{self.mpy}:.frozen"},
            timeout=timeout,
            umask=0o077,
            check=False,
        )

    def wake(self, image: Path, heap_kb: int, install: list[str]) -> Wake:
        """One cycle of the real node, files as deploy installs them (node.json precompiled)."""
        args = [
            str(self.launcher),
            "--flash",
            str(image),
            "--board",
            str(self.board_json),
            "--install",
            f"{self.node}:node.json",
            "--cycles",
            "1",
        ]
        for item in install:
            args += ["--install", item]
        proc = self.micropython(heap_kb, *args)
        summary = None
        for line in proc.stdout.splitlines():
            if line.startswith("mcagent-summary "):
                summary = json.loads(line.split(" ", 1)[1])
        out = proc.stdout[-3000:] + proc.stderr[-3000:]
        if proc.returncode != 0 or summary is None:
            return Wake(False, 0, out)
        # Every upload of the wake must succeed the first time: a retry (the unix board's final upload)
        # is a wake that failed on a board.
        failed = any(") failed: " in line or "unexpected error" in line for line in proc.stdout.splitlines())
        return Wake(not failed, int(summary.get("sent", 0)), out)

    def first_wake(self, heap_kb: int, keep: Path | None = None) -> Wake:
        """A new agent, a blank flash: onboard, DSC, mappings, token, upload."""
        self.agents += 1
        config = self.sg.create_agent(f"fit-{heap_kb}-{self.agents}")
        agentconfig = self.work / "agentconfig.json"
        agentconfig.write_text(json.dumps(config))
        image = keep or self.work / "first.img"
        image.unlink(missing_ok=True)
        w = self.wake(
            image, heap_kb, [f"{agentconfig}:agentconfig.json", f"{self.sg.ca_der}:certs/southgate.der"]
        )
        w.ok = w.ok and w.sent >= 1
        return w

    def fill(self, image: Path, n: int) -> None:
        """n readings into the store on the image, and the cached token dropped (earlier wakes, offline)."""
        self.flash_store(image, {"mode": "fill", "n": n, "t0_ms": T0_MS, "drop_token": True})

    def later_wake(self, base: Path, heap_kb: int) -> Wake:
        """From a copy of base (a flash after its first wake, with a backlog): token, upload of it all."""
        image = self.work / "later.img"
        shutil.copy(base, image)
        w = self.wake(image, heap_kb, [])
        w.ok = w.ok and self.pending(image) == 0
        return w

    def pending(self, image: Path) -> int:
        """Records still in the agent's store on the image."""
        return int(self.flash_store(image, {"mode": "status"})["pending"])

    def flash_store(self, image: Path, args: dict[str, Any]) -> dict[str, Any]:
        args_file = self.work / "flash-store.json"
        args_file.write_text(json.dumps({"image": str(image), "blocks": self.blocks, **args}))
        proc = self.micropython(4096, str(UPY / "flash_store.py"), str(args_file))
        try:
            return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise RuntimeError(f"flash_store.py {args['mode']} failed:\n{proc.stdout}{proc.stderr}") from None


def import_costs(upy: Path, mpy: Path, modules: list[str]) -> list[tuple[str, int]]:
    """Heap each module costs to import (in this order, so shared dependencies count once)."""
    with tempfile.TemporaryDirectory() as tmp:
        names = Path(tmp) / "modules.txt"
        names.write_text("\n".join(modules))
        proc = subprocess.run(
            [str(upy), "-X", "heapsize=1m", str(UPY / "import_cost.py"), str(names)],
            capture_output=True,
            text=True,
            env={"MICROPYPATH": f"{mpy}:.frozen"},
            timeout=60,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    rows = []
    for line in proc.stdout.splitlines():
        name, cost = line.split()
        rows.append((name, int(cost)))
    return rows


def main(argv: list[str] | None = None) -> int:
    from southgate.testing import RunningSouthgate

    from mcagent_tools import upy32

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backlogs", default="", help="also: later wakes with these backlogs (e.g. 100,10000)"
    )
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    args = parser.parse_args(argv)
    upy = upy32.ensure()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mcagent-fit-"))
    work.mkdir(parents=True, exist_ok=True)
    with RunningSouthgate(work / "southgate") as sg:
        bench = Workbench(upy, work, sg)
        first = smallest_steady(lambda kb: bench.first_wake(kb).ok, 32, 256, STEP_KB)
        base = work / "base.img"
        if not bench.first_wake(256, base).ok:
            raise SystemExit("a first wake fails even in 256 KB")
        rows = [("first wake", first)]
        for n in [1000] + [int(x) for x in args.backlogs.split(",") if x]:
            image = work / f"backlog-{n}.img"
            shutil.copy(base, image)
            bench.fill(image, n)
            need = smallest_steady(lambda kb, i=image: bench.later_wake(i, kb).ok, 32, 256, STEP_KB)
            rows.append((f"later wake, {n:,} readings", need))
        costs = import_costs(upy, bench.mpy, WAKE_MODULES)
    print(f"32-bit MicroPython, firmware as .mpy, smallest -X heapsize ({STEP_KB} KB steps):")
    for what, kb in rows:
        print(f"  {what:<32} {kb if kb else '> 256'} KB")
    print("import cost of the modules a later wake loads (in this order):")
    for name, cost in costs:
        print(f"  {name:<24} {cost / 1024:5.1f} KB")
    print(f"  {'total':<24} {sum(c for _, c in costs) / 1024:5.1f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
