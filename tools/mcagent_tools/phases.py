"""`python -m mcagent_tools.phases`: what a later wake holds, phase by phase (the table behind `make fit`).

`make fit` says how small a heap a wake needs; this says where the heap goes. It copies the firmware, puts a
probe before each point below (a collection, then `gc.mem_alloc()`, the qstr pools and the loaded modules),
compiles the copy to `.mpy` as deploy does, and runs on the unix board (32-bit MicroPython, `make upy32`,
against southgate over verified TLS) a first wake, then a later wake from deep sleep: a wake that samples
and leaves the upload of the 1,000-reading backlog to the next boot (the board's schedule.upload_wake),
and that boot, the upload wake (token, flush, the schedule after it, sleep), whose points are the table.
The probe's own few names are counted with the rest.

A point whose anchor text no longer appears once in its file stops the tool (host_tests check that they
do): when code moves, move the anchor with it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mcagent_tools.build import FIRMWARE
from mcagent_tools.fit import QSTR_INFO

PROBE_MODULE = """import gc, micropython, sys
def p(tag):
    gc.collect()
    micropython.qstr_info()
    print("mcagent-phase|%s|%d|%s" % (tag, gc.mem_alloc(), " ".join(sorted(sys.modules))))
"""

# (file under firmware/, the line the probe goes before (its first characters, indentation included), tag)
POINTS = [
    ("main.py", "    compat.pack_heap()\n    if argv is None:", "main.main entered"),
    ("runtime/upwake.py", "    got = compat.call_cold", "upload wake starts"),
    ("runtime/upsetup.py", '    budget = b["upload_budget_ms"]', "node.json read"),
    ("runtime/upsetup.py", "        agent.store  # noqa", "agent made"),
    ("runtime/upwake.py", "        if agent is None:", "store open"),
    ("runtime/upwake.py", "            hw.guard(budget + 60000)", "token fetched"),
    ("mcagent/uploader.py", "            if status == 200:", "flush: an answer"),
    ("mcagent/uploader.py", "        p = store.pending_known()", "flush done"),
    ("runtime/upwake.py", "            release = getattr(agent", "flush returned"),
    ("main.py", "    from runtime.node import Node", "agent's path released"),
    ("main.py", "    while True:\n        ms = node.step(up or None)", "node booted"),
    (
        "runtime/cycle.py",
        '    compat.load("runtime.schedule").after_upload(node, ok, err, why)',
        "schedule after upload",
    ),
    ("runtime/cycle.py", '    node.log("deep sleep %d ms" % ms)', "going to sleep"),
]


@dataclass
class Row:
    tag: str
    held: int  # bytes in use after a collection
    pools: int
    names: int
    name_bytes: int  # the pools and the names' text
    loaded: list[str]
    released: list[str]


def probed_copy(dest: Path, source: Path = FIRMWARE) -> Path:
    """The firmware with a probe before each point; ValueError names an anchor that is not there once."""
    shutil.copytree(source, dest)
    (dest / "_phase.py").write_text(PROBE_MODULE)
    for name, anchor, tag in POINTS:
        path = dest / name
        text = path.read_text()
        line = "\n" + anchor  # whole lines only: a probe never splits one
        if text.count(line) != 1:
            raise ValueError(f"{name}: the anchor of {tag!r} starts {text.count(line)} lines: {anchor!r}")
        indent = anchor[: len(anchor) - len(anchor.lstrip(" "))]
        probe = f"\n{indent}import _phase; _phase.p({tag!r}); _phase = None"
        path.write_text(text.replace(line, probe + line))
    return dest


def rows(output: str) -> list[Row]:
    """The probes' lines of a run's output, as rows."""
    out: list[Row] = []
    q: tuple[int, ...] = (0, 0, 0, 0)
    seen: set[str] | None = None
    for line in output.splitlines():
        m = QSTR_INFO.match(line)
        if m:
            q = tuple(int(g) for g in m.groups())
            continue
        if not line.startswith("mcagent-phase|"):
            continue
        _, tag, held_text, names = line.split("|", 3)
        held = int(held_text)
        mods = set(names.split()) - {"_phase"}
        loaded = sorted(mods - seen) if seen is not None else []
        released = sorted(seen - mods) if seen is not None else []
        out.append(Row(tag, held, q[0], q[1], q[3], loaded, released))
        seen = mods
    return out


def main(argv: list[str] | None = None) -> int:
    from southgate.testing import RunningSouthgate

    from mcagent_tools import fit, upy32

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--board", default="unix", help="a board in boards/, run as its unix stand-in")
    parser.add_argument("--heap", type=int, default=128, help="-X heapsize of the later wake, in KB")
    parser.add_argument("--modules", action="store_true", help="also list the modules each phase loads")
    args = parser.parse_args(argv)
    try:
        upy = upy32.ensure()
    except upy32.Upy32Error as e:
        print(f"mcagent phases: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mcagent-phases-") as tmp:
        work = Path(tmp)
        firmware = probed_copy(work / "firmware")
        with RunningSouthgate(work / "southgate") as sg:
            board = fit.standin(fit.BOARDS / args.board / "board.json", work / "board.json")
            with fit.Workbench(upy, work, sg, board_json=board, firmware=firmware) as bench:
                base = work / "base.img"
                if not bench.first_wake(256, base).ok:
                    raise SystemExit("the first wake failed in 256 KB")
                bench.fill(base, 1000)
                w = bench.later_wake(base, args.heap)  # judged as make fit judges a later wake
    table = rows(w.stdout)
    if not w.ok or not table:
        print(w.output, file=sys.stderr)
    print(f"{args.board}: the upload wake of a later wake (token, upload 1,000), -X heapsize={args.heap}k,")
    print(f"held after a collection (the run {'succeeded' if w.ok else 'FAILED'}):")
    print(f"  {'point':<22} {'held':>9} {'names':>6} {'pools':>5} {'names, pools':>13}")
    for r in table:
        print(
            f"  {r.tag:<22} {r.held / 1024:6.1f} KB {r.names:6d} {r.pools:5d} {r.name_bytes / 1024:10.1f} KB"
        )
        if args.modules and (r.loaded or r.released):
            print(f"      + {' '.join(r.loaded) or '-'}   - {' '.join(r.released) or '-'}")
    return 0 if w.ok and table else 1


if __name__ == "__main__":
    raise SystemExit(main())
