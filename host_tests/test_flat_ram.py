"""Flat RAM: a backlog of 100, 10,000 or 100,000 stored readings uploads completely, over verified TLS to
southgate, with the firmware compiled to .mpy in the MicroPython Unix port, under a 64 KB run-time heap.

The run-time budget is what a board whose firmware is frozen into flash has free: the agent's modules are
loaded into a 512 KB heap first, the surplus above 64 KB is held in a ballast (mcagent_tools.bench and its
MicroPython script tools/mcagent_tools/upy/backlog.py). Bodies stream from flash through one buffer, so the
same budget must do for every backlog; and one plain `-X heapsize` (bytecode included) must do for 100 and
for 10,000 readings alike. docs/benchmarks.md has the smallest figures (`make bench`); this test only
asserts that fixed ones keep working.

About 25 s in all: the 100,000 case alone takes ~20 s (fill ~1 s, upload ~18 s in 177 batches of 64 KB,
read-back ~1 s), marked slow; it is the only big one (10,000: ~4 s with its plain-heap run).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcagent_tools.bench import Backlog
from mcagent_tools.build import FIRMWARE, compile_tree
from southgate.testing import RunningSouthgate

HEAP_KB = 512  # the whole heap of the budget runs: code + ballast + budget
BUDGET_KB = 64  # free heap left to the agent once its modules are loaded
PLAIN_HEAP_KB = 160  # one plain -X heapsize for 100 and 10,000 readings (smallest measured: ~144 KB)
T0_MS = 1790000000000  # tools/mcagent_tools/upy/backlog.py records reading i at T0_MS + i s, value i * 0.5
EXCHANGE = "/api/mindconnect/v3/exchange"


@pytest.fixture(scope="module")
def flat_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RunningSouthgate, Path]]:
    root = tmp_path_factory.mktemp("flat-ram")
    mpy = root / "mpy"
    errors = compile_tree(FIRMWARE, mpy)
    assert not errors, [f"{e.source}: {e.message}" for e in errors]
    with RunningSouthgate(root / "southgate", require_mapping=False) as sg:
        assert sg.base_url.startswith("https://")
        yield root, sg, mpy


def iso_ms(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def upload(sg: RunningSouthgate, backlog: Backlog, heap_kb: int, budget_kb: int | None) -> dict[str, Any]:
    """One complete upload of the backlog (from a fresh copy of its store); checks the exchange traffic."""
    sg.reset_counters()
    backlog.verbose = True  # a failed run prints micropython's output
    out = backlog.upload(heap_kb, budget_kb)
    what = f"{backlog.n} readings, -X heapsize={heap_kb}k, budget {budget_kb} KB"
    assert out is not None, f"upload incomplete: {what}"
    assert out["error"] is None and out["retries"] == 0 and out["quarantined"] == 0, (what, out)
    c = sg.counters()
    assert c["tls_handshakes"] >= 1  # verified TLS: backlog.py gives the agent southgate's CA only
    sent = [r["status"] for r in c["per_request"] if r["path"] == EXCHANGE]
    assert sent == [200] * out["batches"], (what, sent[:20])
    return out


@pytest.mark.parametrize(
    "n", [100, 10_000, pytest.param(100_000, marks=pytest.mark.slow)], ids=["100", "10k", "100k"]
)
def test_backlog_uploads_completely_under_a_64k_budget(
    flat_env: tuple[Path, RunningSouthgate, Path], n: int
) -> None:
    root, sg, mpy = flat_env
    work = root / f"backlog-{n}"
    work.mkdir()
    backlog = Backlog(work, sg, n, mpy)  # onboards, configures and records n readings (big heap)

    out = upload(sg, backlog, HEAP_KB, BUDGET_KB)
    assert out["readings_sent"] == n and out["pending"] == 0
    # The ballast really left only the budget (a little over: the filling stops below 1 KB of surplus).
    assert out["heap_free_at_start"] <= (BUDGET_KB + 2) * 1024, out["heap_free_at_start"]
    # Each body is bounded by the default 64 KB batch budget (~565 readings), not by the backlog.
    assert n // 600 <= out["batches"] <= n // 500 + 1, out["batches"]

    if n <= 10_000:
        # The same plain heap for 100 and for 10,000 readings (the figure does not grow with the backlog).
        again = upload(sg, backlog, PLAIN_HEAP_KB, None)
        assert again["readings_sent"] == n and again["pending"] == 0

    rows = sg.timeseries(backlog.agent_id)
    assert len(rows) == n
    for i, r in enumerate(rows):
        want = (iso_ms(T0_MS + i * 1000), "DP-Bench", i * 0.5, "0")
        if (r["timestamp"], r["dataPointId"], float(r["value"]), r["qualityCode"]) != want:
            raise AssertionError(f"reading {i} arrived as {r}, sent as {want}")
