"""`make fit` / `python -m mcagent_tools.fit`: does a wake fit the heap a stock board offers?

Runs the real firmware (compiled to .mpy, as `mcagent deploy` installs it) on the unix board under the
32-bit MicroPython Unix port (the ESP32's word and GC block size; `make upy32`), against southgate over
verified TLS, and finds the smallest `-X heapsize` (4 KB steps, confirmed by the steps above it: a
fragmented heap is not quite monotonic) with which

- a **first wake** succeeds: onboard, DSC, mappings, token, upload of what it sampled;
- a **later wake** succeeds: a wake from deep sleep (`--wake`) that samples, refreshes the token (the cached
  one is dropped) and uploads a 1,000-reading backlog, then sleeps again; on a board whose schedule has
  `upload_wake` (all of ours), two runs in that heap: the wake that samples and leaves the upload to the
  next boot, and that boot, the upload wake (the unix board keeps RTC memory between the two in a file);
- a **sampling wake** succeeds: a wake from deep sleep that samples and records, no upload due (most of a
  deep-sleeping node's wakes);
- a **power-on wake** succeeds: the same node started by a power cut: it samples, queues the health event
  and uploads the backlog (token refresh);
- (`--backlogs 10000,100000`) later wakes with bigger backlogs succeed in that same heap plus one step;
- (unix board, unless `--library 0`) the library API: Agent onboard, configure, token, record 20,000
  readings, flush. It also prints how many names (qstrs) that run made and where MicroPython's next
  qstr pool would be allocated: one name too many costs a whole pool.

Each board in boards/ (or `--board NAME`) runs as its unix stand-in: the same data points, DSC, schedule and
store, its sensors simulated, on a 4 MiB littlefs flash image. Every upload of a wake must succeed the first
time, and every sample it takes must be recorded. A board whose figure is above the `heap_kb` its
board.json declares fails the run (exit status 1). It also reports what importing each module of a later
wake costs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcagent_tools.bench import smallest_steady
from mcagent_tools.build import FIRMWARE, ROOT, compile_tree
from mcagent_tools.firmware import node_json

BOARDS = ROOT / "boards"
UPY = Path(__file__).parent / "upy"
LAUNCHER = "import main\nmain.main()\n"
RTC_MEMORY = ".rtc-memory"  # the unix board's RTC memory between runs, beside the image (runtime.unixrtc)
UPLOAD_ASKED = "left to a wake of its own"  # the wake's line when it leaves its upload to the next boot
T0_MS = 1790000000000  # backlog readings: T0_MS + i s
STEP_KB = 4  # binary search resolution
QSTR_ENTRY_BYTES = 7  # a qstr pool entry on this 32-bit build: pointer, 2-byte hash, length
# The line micropython.qstr_info() prints: pools, names, their text's bytes, all bytes (pools and text).
QSTR_INFO = re.compile(r"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")
FIT_BLOCKS = 1024  # the stand-in's flash: 4 MiB of littlefs, room for a 100,000-reading backlog
FIT_CAPACITY_KB = 3584
WAKE_MODULES = [  # in the order a later wake's upload wake loads what it holds at its flush, the peak
    "mcagent",
    "mcagent.compat",
    "main",
    "runtime",
    "runtime.hw",
    "runtime.upwake",
    "mcagent.clock",
    "mcagent.cjson",
    "mcagent.state",
    "runtime.flashimage",
    "mcagent.store",
    "mcagent.identity",
    "mcagent.http",
    "mcagent.exchange",
    "mcagent.kind_sample",
    "mcagent.uploader",
]


def short_link(target: Path) -> Path:
    """A short symlink to target, /tmp/mcN (the first free N; a stale link is taken over).

    Importing a module interns its file's path (a qstr, kept for the run): on a board that is
    /lib/mcagent/http.mpy, and a build directory as long as a pytest temporary one would add ~40 bytes per
    module, ~1.5 KB to every figure. The board's path is 4 characters; this one is 8."""
    tmp = Path(tempfile.gettempdir())
    for n in range(10000):
        link = tmp / f"mc{n}"
        try:
            if link.is_symlink() and not link.exists():  # left by a run that was killed
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
        except OSError:  # taken, or another user's (a sticky /tmp)
            continue
        return link
    return target


def drop_link(link: Path, target: Path) -> None:
    """Remove a short_link if it still points at target (another run may have taken the name since)."""
    try:
        if link.is_symlink() and Path(os.readlink(link)) == target:
            link.unlink()
    except OSError:
        pass


def names_note(n: int) -> str:
    """What n names (qstrs made at run time) cost in pools. MicroPython's pools double from 20 entries on
    every port (20, 40, ... 640): a run that crosses a pool's end allocates the next one whole."""
    full, size = 0, 20
    while full + size < n:
        full, size = full + size, size * 2
    return (
        f"the library API's run makes {n} names; name {full + size + 1:,} would allocate the next qstr"
        f" pool: {size * 2} entries, {size * 2 * QSTR_ENTRY_BYTES:,} bytes in one block"
    )


def lost(summary: dict[str, Any]) -> bool:
    """True when the run lost a sample or hit an unexpected error, even one whose log line itself ran out of
    memory: every sample taken is recorded or held for the clock, none is dropped (a MemoryError in record()
    counts one), and no error is counted since the last health event."""
    accounted = summary["recorded"] + summary["pending_clock"]
    return bool(summary["taken"] != accounted or summary["dropped"] or summary.get("errors"))


@dataclass
class Wake:
    """One run of firmware/main.py (one cycle) on the unix board at a given heap."""

    ok: bool
    sent: int
    output: str
    taken: int = 0  # samples the node counted as taken, ever (the run's summary)
    stdout: str = ""  # the whole of it (mcagent_tools.phases reads its probes there)


@dataclass
class Workbench:
    """Compiled firmware, a southgate, the unix board's files; runs wakes at chosen heap sizes."""

    upy: Path
    work: Path
    sg: Any  # southgate.testing.RunningSouthgate
    board_json: Path = BOARDS / "unix" / "board.json"
    frozen: bool = False  # upy is a build with the firmware frozen in (no .mpy on the path)
    firmware: Path = FIRMWARE  # the tree compiled (mcagent_tools.phases passes a probed copy)
    mpy: Path = field(init=False)
    launcher: Path = field(init=False)
    blocks: int = field(init=False)
    agents: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        errors = compile_tree(self.firmware, self.work / "mpy")
        if errors:
            raise SystemExit("\n".join(f"{e.source}: {e.message}" for e in errors))
        self.launcher = self.work / "launch.py"
        self.launcher.write_text(LAUNCHER)
        self.blocks = int(node_json(self.board_json)["flash_blocks"])  # each agent's own files: own_asset
        self.library_names: int | None = None  # names (qstrs) the last library run made, if it got that far
        self.mpy = short_link(self.work / "mpy")  # as short as a board's /lib (see short_link)

    def close(self) -> None:
        """Remove the short link to the compiled firmware (the files stay in work/mpy)."""
        drop_link(self.mpy, self.work / "mpy")

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def wake(
        self, image: Path, heap_kb: int, install: list[str], board: Path | None = None, deep: bool = False
    ) -> Wake:
        """One cycle of the real node with the files already on the image plus `board` (board.json, whose
        flash.blocks sizes a new image) and those in `install`: powered on, or (deep) a wake from deep
        sleep that ends when the node sleeps again."""
        args = [str(self.launcher), "--flash", str(image), *(["--wake"] if deep else ["--cycles", "1"])]
        if board is not None:
            args += ["--board", str(board)]
        for item in install:
            args += ["--install", item]
        proc = self.micropython(heap_kb, *args)
        summary = None
        for line in proc.stdout.splitlines():
            if line.startswith("mcagent-summary "):
                summary = json.loads(line.split(" ", 1)[1])
        out = proc.stdout[-3000:] + proc.stderr[-3000:]
        if proc.returncode != 0 or summary is None:
            return Wake(False, 0, out, stdout=proc.stdout)
        # Every upload of the wake must succeed the first time: a retry (the unix board's final upload)
        # is a wake that failed on a board.
        failed = any(") failed: " in line or "unexpected error" in line for line in proc.stdout.splitlines())
        ok = not failed and not lost(summary)
        return Wake(ok, int(summary["sent"]), out, int(summary["taken"]), proc.stdout)

    def own_asset(self, tag: str) -> tuple[Path, Path]:
        """board.json and node.json as deploy makes them, for an agent of its own asset: an asset property
        takes one agent's data point, so each agent the bench makes maps onto a new asset (the same length
        of id: the same heap)."""
        doc = json.loads(self.board_json.read_text())
        doc["dsc"] = dict(doc.get("dsc") or {}, entityId=uuid.uuid4().hex)
        board = self.work / f"{tag}-board.json"
        board.write_text(json.dumps(doc, ensure_ascii=False))
        node = self.work / f"{tag}-node.json"
        node.write_text(json.dumps(node_json(board)))
        return board, node

    def first_wake(self, heap_kb: int, keep: Path | None = None) -> Wake:
        """A new agent, a blank flash: onboard, DSC, mappings, token, upload; board.json and node.json
        installed as deploy installs them (a later wake of the image finds them there)."""
        self.agents += 1
        config = self.sg.create_agent(f"fit-{self.work.name}-{heap_kb}-{self.agents}")
        agentconfig = self.work / "agentconfig.json"
        agentconfig.write_text(json.dumps(config))
        board, node = self.own_asset("first")
        image = keep or self.work / "first.img"
        image.unlink(missing_ok=True)
        installs = [
            f"{node}:node.json",
            f"{agentconfig}:agentconfig.json",
            f"{self.sg.ca_der}:certs/southgate.der",
        ]
        w = self.wake(image, heap_kb, installs, board)
        w.ok = w.ok and w.sent >= 1
        return w

    def fill(self, image: Path, n: int) -> None:
        """n readings into the store on the image, the cached token dropped and the schedule as those
        earlier wakes (offline) left it: a sample due, and the upload."""
        self.flash_store(image, {"mode": "fill", "n": n, "t0_ms": T0_MS, "drop_token": True, "due": "upload"})

    def later_wake(self, base: Path, heap_kb: int) -> Wake:
        """From a copy of base (a flash after its first wake, with a backlog): a wake from deep sleep that
        samples, fetches a token and uploads it all; on a board with schedule.upload_wake, two boots (the
        wake that samples and asks, the upload wake), each in heap_kb."""
        return self._upload_wake(base, heap_kb, deep=True)

    def power_on_wake(self, base: Path, heap_kb: int) -> Wake:
        """The same from power-on (after a cut): the sample, the health event, the token, the upload."""
        return self._upload_wake(base, heap_kb, deep=False)

    def _upload_wake(self, base: Path, heap_kb: int, deep: bool) -> Wake:
        image = self.fresh_copy(base, "later.img")
        before = self.counts(image)
        w = self.wake(image, heap_kb, [], deep=deep)
        if deep and w.ok and UPLOAD_ASKED in w.stdout:
            # The board uploads in a wake of its own (schedule.upload_wake): the next boot, from the 1 ms
            # deep sleep the wake that asked ended with. Both must fit the heap.
            after = self.wake(image, heap_kb, [], deep=True)
            after.output = w.output + after.output
            w = after
        w.ok = w.ok and self.pending(image) == 0 and w.sent > before["sent"] and w.taken > before["taken"]
        return w

    def sampling_wake(self, base: Path, heap_kb: int) -> Wake:
        """From a copy of base: a wake from deep sleep with a sample due and no upload (an upload a moment
        ago), which records its sample and sleeps again."""
        image = self.fresh_copy(base, "sampling.img")
        self.flash_store(image, {"mode": "fill", "n": 0, "t0_ms": T0_MS, "due": "sample"})
        before = self.counts(image)
        w = self.wake(image, heap_kb, [], deep=True)
        w.ok = w.ok and w.sent == before["sent"] and w.taken == before["taken"] + 1
        return w

    def fresh_copy(self, base: Path, name: str) -> Path:
        """A copy of the image base, its RTC memory (the unix board's file beside it) empty."""
        image = self.work / name
        shutil.copy(base, image)
        Path(f"{image}{RTC_MEMORY}").unlink(missing_ok=True)
        return image

    def counts(self, image: Path) -> dict[str, int]:
        """The node's counters on the image: readings "sent", samples "taken"; records still "pending"."""
        return {k: int(v) for k, v in self.flash_store(image, {"mode": "status"}).items()}

    def pending(self, image: Path) -> int:
        """Records still in the agent's store on the image."""
        return self.counts(image)["pending"]

    def flash_store(self, image: Path, args: dict[str, Any]) -> dict[str, Any]:
        args_file = self.work / "flash-store.json"
        args_file.write_text(json.dumps({"image": str(image), "blocks": self.blocks, **args}))
        proc = self.micropython(4096, str(UPY / "flash_store.py"), str(args_file))
        try:
            return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise RuntimeError(f"flash_store.py {args['mode']} failed:\n{proc.stdout}{proc.stderr}") from None

    def library(self, heap_kb: int, n: int) -> bool:
        """The library API on a blank flash: onboard, configure, token, record n readings, flush."""
        self.agents += 1
        config = self.work / "library-agentconfig.json"
        config.write_text(json.dumps(self.sg.create_agent(f"lib-{self.work.name}-{heap_kb}-{self.agents}")))
        image = self.work / "library.img"
        image.unlink(missing_ok=True)
        doc = json.loads(self.own_asset("library")[1].read_text())
        args_file = self.work / "library.json"
        args_file.write_text(
            json.dumps(
                {
                    "image": str(image),
                    "blocks": self.blocks,
                    "config": str(config),
                    "ca": str(self.sg.ca_der),
                    "dsc": doc["dsc"],
                    "n": n,
                    "t0_ms": T0_MS,
                    "capacity_bytes": FIT_CAPACITY_KB * 1024,
                }
            )
        )
        proc = self.micropython(heap_kb, str(UPY / "library_api.py"), str(args_file))
        for line in proc.stdout.splitlines():
            names = QSTR_INFO.match(line)
            if names:
                self.library_names = int(names.group(2))
            if line.startswith("mcagent-library "):
                summary = json.loads(line.split(" ", 1)[1])
                return (
                    proc.returncode == 0
                    and summary.get("error") is None
                    and summary.get("readings_sent") == n
                )
        return False


def standin(board_json: Path, out: Path) -> Path:
    """A board's definition as the unix board runs it: the same data points (types and units from its
    drivers), DSC, schedule and store; its sensors simulated; a 4 MiB flash. Written to out."""
    from mcagent_tools.firmware import module

    sensors = module("sensors")
    doc = json.loads(board_json.read_text())
    fit = {k: v for k, v in doc.items() if k not in ("chip", "pins", "i2c", "wifi", "ntp", "sim", "flash")}
    fit["chip"] = "unix"
    fit["heap_kb"] = doc.get("heap_kb", 256)
    fit["sensors"] = []
    for i, s in enumerate(doc.get("sensors", [])):
        channels = sensors.module(s["kind"]).CHANNELS
        points = []
        for p in s.get("points", []):
            q = dict(p)
            if channels:
                q["channel"] = channel = p.get("channel") or next(iter(channels))
                typ, unit = channels[channel]
                q.setdefault("type", typ)
                if unit:
                    q.setdefault("unit", unit)
            q.setdefault("base", 10.0)
            q.setdefault("amplitude", 1.0)
            points.append(q)
        fit["sensors"].append(
            {"kind": "sim", "name": s.get("name", s["kind"]), "seed": i + 1, "points": points}
        )
    fit["store"] = dict(doc.get("store", {}), capacity_kb=FIT_CAPACITY_KB)
    fit["flash"] = {"blocks": FIT_BLOCKS}
    out.write_text(json.dumps(fit, ensure_ascii=False))
    return out


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


@dataclass
class BoardFit:
    name: str
    budget_kb: int
    rows: list[tuple[str, int | None]]
    library_names: int | None = None

    @property
    def fits(self) -> bool:
        return all(kb is not None and kb <= self.budget_kb for _, kb in self.rows)


def fit_board(upy: Path, work: Path, sg: Any, name: str, backlogs: list[int], library: int) -> BoardFit:
    board_work = work / name
    board_work.mkdir(parents=True, exist_ok=True)
    board_json = standin(BOARDS / name / "board.json", board_work / "board.json")
    budget = int(json.loads(board_json.read_text())["heap_kb"])
    with Workbench(upy, board_work, sg, board_json=board_json) as bench:
        rows = _fit_rows(bench, board_work, name, backlogs, library)
        return BoardFit(name, budget, rows, bench.library_names if library else None)


def _fit_rows(
    bench: Workbench, board_work: Path, name: str, backlogs: list[int], library: int
) -> list[tuple[str, int | None]]:
    rows: list[tuple[str, int | None]] = []
    rows.append(("first wake", smallest_steady(lambda kb: bench.first_wake(kb).ok, 32, 256, STEP_KB)))
    base = board_work / "base.img"
    if not bench.first_wake(256, base).ok:
        raise SystemExit(f"{name}: a first wake fails even in 256 KB")
    image = board_work / "backlog-1000.img"
    shutil.copy(base, image)
    bench.fill(image, 1000)
    later = smallest_steady(lambda kb: bench.later_wake(image, kb).ok, 32, 256, STEP_KB)
    rows.append(("later wake, 1,000 readings", later))
    rows.append(
        ("sampling wake", smallest_steady(lambda kb: bench.sampling_wake(image, kb).ok, 32, 256, STEP_KB))
    )
    rows.append(
        (
            "power-on wake, 1,000 readings",
            smallest_steady(lambda kb: bench.power_on_wake(image, kb).ok, 32, 256, STEP_KB),
        )
    )
    for n in backlogs:
        image = board_work / f"backlog-{n}.img"
        shutil.copy(base, image)
        bench.fill(image, n)
        at = (later or 256) + STEP_KB
        rows.append((f"later wake, {n:,} readings", at if bench.later_wake(image, at).ok else None))
    if library:
        rows.append(
            (
                f"library API, {library:,} readings",
                smallest_steady(lambda kb: bench.library(kb, library), 32, 256, STEP_KB, above=2),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from southgate.testing import RunningSouthgate

    from mcagent_tools import upy32

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--board", action="append", help="a board in boards/ (repeatable; default: all)")
    parser.add_argument(
        "--backlogs", default="", help="also: later wakes with these backlogs in the 1,000 figure + 4 KB"
    )
    parser.add_argument(
        "--library", type=int, default=20000, help="readings for the library API row (unix board; 0: skip)"
    )
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    args = parser.parse_args(argv)
    names = args.board or sorted(p.parent.name for p in BOARDS.glob("*/board.json"))
    for name in names:
        if not (BOARDS / name / "board.json").is_file():
            raise SystemExit(f"no board {name!r} in {BOARDS}")
    backlogs = [int(x) for x in args.backlogs.split(",") if x]
    try:
        upy = upy32.ensure()
    except upy32.Upy32Error as e:  # no source and no network: its message says how to get one
        print(f"mcagent fit: {e}", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="mcagent-fit-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    with RunningSouthgate(work / "southgate") as sg:
        for name in names:
            results.append(fit_board(upy, work, sg, name, backlogs, args.library if name == "unix" else 0))
        compiled = work / names[0] / "mpy"
        link = short_link(compiled)  # each module's cost includes its path, as long as a board's
        try:
            costs = import_costs(upy, link, WAKE_MODULES)
        finally:
            drop_link(link, compiled)
    print(f"32-bit MicroPython, firmware as .mpy, smallest -X heapsize ({STEP_KB} KB steps):")
    for r in results:
        verdict = "fits" if r.fits else "DOES NOT FIT"
        print(f"{r.name} (budget: heap_kb {r.budget_kb} KB): {verdict}")
        for what, kb in r.rows:
            print(f"  {what:<36} {str(kb) + ' KB' if kb else 'fails'}")
        if r.library_names is not None:
            print(f"  ({names_note(r.library_names)})")
    print("import cost of what a later wake's upload wake holds at its flush (in the order it loads it):")
    for name, cost in costs:
        print(f"  {name:<24} {cost / 1024:5.1f} KB")
    print(f"  {'total':<24} {sum(c for _, c in costs) / 1024:5.1f} KB")
    return 0 if all(r.fits for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
