"""`make bench`: measured figures for docs/benchmarks.md.

Flat RAM (issue: flash buffer and streamed exchange): for backlogs of 100, 10,000 and 100,000 stored
readings, the smallest heap with which the firmware (compiled to .mpy, in the MicroPython Unix port)
uploads the whole backlog over verified TLS to southgate. Two figures per backlog, each by binary search:

- run-time budget: free heap left to the agent once its modules are loaded (a ballast holds the rest).
  This is what a board whose firmware is frozen into flash has to offer, bytecode costing no heap there.
- plain `-X heapsize`: the whole heap, .mpy bytecode included (the Unix port cannot freeze modules).

Neither may grow with the backlog: request bodies stream from flash through one small buffer.
Note the Unix port is 64-bit (8-byte words): the same objects take up to twice the heap of a 32-bit ESP32.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from southgate.testing import RunningSouthgate

from mcagent_tools.build import FIRMWARE, ROOT, compile_tree

SCRIPT = Path(__file__).parent / "upy" / "backlog.py"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"


def micropython() -> str:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else shutil.which("micropython") or "micropython"


class Backlog:
    """A southgate agent with a store of n readings on the host filesystem, copied afresh for each trial."""

    def __init__(self, work: Path, sg: RunningSouthgate, n: int, mpy: Path) -> None:
        self.work, self.sg, self.n, self.mpy = work, sg, n, mpy
        self.verbose = False
        config = sg.create_agent(f"bench-{n}-{int(time.time() * 1000) % 100000}")
        self.agent_id = config["content"]["clientId"]
        (work / "agentconfig.json").write_text(json.dumps(config))
        (work / "agentconfig.json").chmod(0o600)
        self.args: dict[str, Any] = {
            "config": str(work / "agentconfig.json"),
            "ca": sg.ca_der,
            "n": n,
            "state": str(work / "seed-state"),
            "store": str(work / "seed-store"),
        }
        out = self.run("fill", "4m", {})
        if out is None or out.get("recorded") != n:
            raise RuntimeError(f"could not record {n} readings: {out}")

    def run(self, mode: str, heap: str, extra: dict[str, Any]) -> dict[str, Any] | None:
        args_file = self.work / "args.json"
        args_file.write_text(json.dumps(dict(self.args, mode=mode, **extra)))
        env = {"MICROPYPATH": f"{self.mpy}:.frozen"}
        proc = subprocess.run(
            [micropython(), "-X", f"heapsize={heap}", str(SCRIPT), str(args_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            umask=0o077,  # the Unix port has no chmod: keeps the agent's secret files owner-only
        )
        if proc.returncode != 0:
            if self.verbose:
                print(proc.stdout[-500:], proc.stderr[-1500:], file=sys.stderr)
            return None
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def upload(self, heap_kb: int, budget_kb: int | None) -> dict[str, Any] | None:
        """Upload the whole backlog from a fresh copy; the summary if every reading was sent, else None."""
        trial = self.work / "trial"
        shutil.rmtree(trial, ignore_errors=True)
        shutil.copytree(self.args["store"], trial / "store")
        shutil.copytree(self.args["state"], trial / "state")
        extra = {"store": str(trial / "store"), "state": str(trial / "state"), "budget_kb": budget_kb}
        out = self.run("flush", f"{heap_kb}k", extra)
        if out and out.get("readings_sent") == self.n and out.get("pending") == 0:
            return out
        return None


def smallest(works: Callable[[int], bool], lo: int, hi: int, step: int) -> int | None:
    """Smallest value in [lo, hi] (multiples of step) for which works() holds, assuming monotony."""
    if not works(hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


def smallest_steady(works: Callable[[int], bool], lo: int, hi: int, step: int, above: int = 6) -> int | None:
    """Like smallest(), for a figure that is not quite monotonic (a fragmented heap: a wake can fail at one
    size and pass a step below): the smallest value found for which the next `above` steps up all work."""
    found = smallest(works, lo, hi, step)
    if found is None:
        return None
    k = found + step
    while k <= min(hi, found + above * step):
        if not works(k):
            found = k + step
        k += step
    return found if found <= hi else None


def _fits_budget(backlog: Backlog, kb: int) -> bool:
    """The backlog uploads in a 1 MB heap with a batch budget of `kb`."""
    return backlog.upload(1024, kb) is not None


def _fits_heap(backlog: Backlog, kb: int) -> bool:
    """The backlog uploads with the default batch budget in a heap of `kb`."""
    return backlog.upload(kb, None) is not None


def flat_ram(backlogs: list[int], step: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mcagent-bench-") as tmp:
        root = Path(tmp)
        mpy = root / "mpy"
        errors = compile_tree(FIRMWARE, mpy)
        if errors:
            raise SystemExit("\n".join(f"{e.source}: {e.message}" for e in errors))
        with RunningSouthgate(root / "southgate", require_mapping=False) as sg:
            for n in backlogs:
                work = root / f"b{n}"
                work.mkdir()
                t0 = time.monotonic()
                backlog = Backlog(work, sg, n, mpy)
                fill_s = time.monotonic() - t0
                t0 = time.monotonic()
                full = backlog.upload(1024, 64)
                upload_s = time.monotonic() - t0
                if full is None:
                    raise SystemExit(f"backlog {n}: upload failed even with a 64 KB budget in a 1 MB heap")
                budget = smallest(functools.partial(_fits_budget, backlog), 8, 128, step)
                plain = smallest(functools.partial(_fits_heap, backlog), 64, 512, step)
                rows.append(
                    {
                        "readings": n,
                        "budget_kb": budget,
                        "heapsize_kb": plain,
                        "batches": full["batches"],
                        "fill_s": round(fill_s, 1),
                        "upload_s": round(upload_s, 1),
                    }
                )
                print(
                    f"backlog {n:>7}: run-time budget {budget} KB, plain heapsize {plain} KB, "
                    f"{full['batches']} batches, upload {upload_s:.1f} s",
                    flush=True,
                )
    return rows


def write_markdown(rows: list[dict[str, Any]], step: int) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`tools/mcagent_tools/bench.py`); tests never assert on these figures.",
        "",
        "## Flat RAM: smallest heap that uploads a whole backlog",
        "",
        "The firmware compiled to `.mpy` runs in the MicroPython Unix port (64-bit) and uploads a backlog of",
        "stored readings (one DOUBLE value each) over verified TLS to southgate. Binary search, "
        f"{step} KB steps.",
        "",
        "- *run-time budget*: free heap left once the agent's modules are loaded (the rest held by a",
        "  ballast) — what a board with the firmware frozen into flash must have free.",
        "- *plain heapsize*: `micropython -X heapsize=…` for the whole process, `.mpy` bytecode included.",
        "",
        "| backlog (readings) | run-time budget | plain heapsize | batches | upload time |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['readings']:,} | {r['budget_kb']} KB | {r['heapsize_kb']} KB | {r['batches']} "
            f"| {r['upload_s']} s |"
        )
    spread = {k: max(r[k] for r in rows) - min(r[k] for r in rows) for k in ("budget_kb", "heapsize_kb")}
    verdict = "Neither figure grows with the backlog" + (
        " (the spread is one search step)" if any(spread.values()) else ""
    )
    lines += [
        "",
        f"{verdict}: bodies are composed from flash through one reused buffer, Content-Length is computed",
        "in a first pass, and the store keeps two integers, not a list, per backlog. On a 32-bit ESP32 the",
        "same objects take up to half of these figures.",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {sys.platform}, Python {sys.version.split()[0]}.",
        "",
    ]
    # This section only: the file's other sections (make fit's, southgate's console) are kept as they are.
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    start = text.find("## Flat RAM")
    rest = text[text.find("\n## ", start) + 1 :] if start >= 0 and text.find("\n## ", start) >= 0 else ""
    BENCHMARKS_MD.write_text("\n".join(lines) + ("\n" + rest if rest else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlogs", default="100,10000,100000", help="comma-separated backlog sizes")
    parser.add_argument("--step", type=int, default=4, help="binary search resolution in KB")
    args = parser.parse_args(argv)
    rows = flat_ram([int(x) for x in args.backlogs.split(",")], args.step)
    write_markdown(rows, args.step)
    print(f"wrote {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
