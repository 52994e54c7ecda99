"""A whole wake on the 32-bit Unix port (the ESP32's word and GC block size), firmware as deployed .mpy.

The real firmware/main.py on the unix board (its stand-in with a 4 MiB flash, as `make fit` runs it), one
cycle, against southgate over verified TLS, with the files `mcagent deploy` installs (node.json compiled on
the host). Heap is deterministic for given inputs up to the layout of a fragmented heap (a step or two), so
the test asserts -X heapsize bounds a little above the figures `make fit` measures (docs/benchmarks.md):

- a first wake (onboard, DSC, mappings, token, upload) succeeds in the issue's 80 KB; a later wake (from deep
  sleep: a sample, token refresh, upload of a 1,000-reading backlog) in the issue's 64 KB: the board's
  schedule.upload_wake makes it two boots, the one that samples and asks and the upload wake, each in that
  heap; a power-on wake (the same after a power cut, with the health event: it uploads inline) within
  today's bound; bounds only ever go down;
- a sampling wake (from deep sleep, a sample recorded, no upload due: most of a node's wakes) in the issue's
  64 KB;
- later wakes upload backlogs of 100, 1,000, 10,000 and 100,000 readings in the same heap, give or take the
  one 4 KB step the issue allows (bodies stream from flash: the backlog's size costs no RAM);
- the library API (onboard, configure, token, record 20,000 readings, flush) within its bound;
- with the firmware frozen into the binary, the same wakes need far less (what bytecode costs).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcagent_tools.fit import BOARDS, UPLOAD_ASKED, Workbench, lost, names_note, standin
from southgate.testing import RunningSouthgate

pytestmark = pytest.mark.heap  # make test runs these alone, after the rest: CPU contention varies the layout

# Measured 2026-12-03 (make fit). The first wake is held to the 80 KB, measured 80 KB: one run in
# about twenty under CPU load failed there (timing changes how the answers arrive and so the layout of the
# heap), so it gets three tries. The library API is held to the 64 KB: it passes at 62. Its run makes
# 582 names (611 before the assertion's claims and some literals became constants, 2026-12-04); the 621st
# would cost a 4.5 KB block for the next 640 (MicroPython's qstr pools double from 20 entries: 20, 40, ...
# 640), so a change that adds names on its path may need to save some. The other bounds keep a margin of
# two steps or more above their figures.
FIRST_WAKE_KB = 80  # measured 80 KB (84 before -O3, 92-96 earlier that day, 112-116 before packing)
FIRST_WAKE_TRIES = 3
# A later wake, held to the 64 KB: measured 64 KB on every stand-in (63 at 1 KB resolution on the
# unix board; 80 KB before the upload wake, 84-88, 92-96, 100-104 before that), 10,000 and 100,000 readings
# one step more (68 KB). At its target, so three tries, as the first wake.
LATER_WAKE_KB = 64
LATER_WAKE_TRIES = 3
BACKLOG_STEP_KB = 4  # the allowance for a backlog 10 and 100 times bigger
POWER_ON_WAKE_KB = 88  # measured 80 KB
# A wake from deep sleep that only samples, held to the 64 KB; measured 60 (76 KB before its wakes
# stopped loading the agent's identity and configuration, made names of 14 private constants and arguments,
# and let the drivers and the schedule's code go before the store opens; 72, 68, 64 on the way). Its
# run makes ~611 names: like the library API, it stays below the 621st, which would cost a 4.5 KB pool.
SAMPLING_WAKE_KB = 64
SAMPLING_WAKE_TRIES = 3
LIBRARY_KB = 64  # measured 64 KB (68 before private constants, jwt's own primitives and hostcompat)
LIBRARY_TRIES = 3  # at its target like the first wake, so the same allowance for timing
FROZEN_WAKE_KB = 48  # measured: first wake 36 KB (48-52 before packing), later wake 32, sampling wake 24


@pytest.fixture(scope="module")
def bench(upy32: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    work = tmp_path_factory.mktemp("fit32")
    with RunningSouthgate(work / "southgate") as sg:
        with Workbench(
            upy32, work, sg, board_json=standin(BOARDS / "unix" / "board.json", work / "board.json")
        ) as bench:
            yield bench


def test_first_and_later_wake_fit_their_bounds(bench: Workbench) -> None:
    base = bench.work / "base.img"
    for _ in range(FIRST_WAKE_TRIES):
        first = bench.first_wake(FIRST_WAKE_KB, base)
        if first.ok:
            break
    assert first.ok, first.output
    for n in (100, 1_000, 10_000, 100_000):
        image = bench.work / f"backlog-{n}.img"
        shutil.copy(base, image)
        bench.fill(image, n)
        kb = LATER_WAKE_KB if n <= 1_000 else LATER_WAKE_KB + BACKLOG_STEP_KB
        for _ in range(LATER_WAKE_TRIES):
            later = bench.later_wake(image, kb)
            if later.ok:
                break
        assert later.ok, (n, later.output)
        # two boots: the wake that samples and asks, then the upload wake (schedule.upload_wake)
        assert UPLOAD_ASKED in later.output and ": a wake of its own" in later.output, later.output
        assert bench.pending(bench.work / "later.img") == 0
        if n == 1_000:
            power_on = bench.power_on_wake(image, POWER_ON_WAKE_KB)
            assert power_on.ok, power_on.output
            assert "PWRON_RESET" in power_on.output and "health event queued" in power_on.output


def test_a_sampling_wake_fits_64_kb(bench: Workbench) -> None:
    """The wake most of a deep-sleeping node's wakes are: from deep sleep, a sample recorded, no upload."""
    base = bench.work / "sampling-base.img"
    assert bench.first_wake(256, base).ok
    for _ in range(SAMPLING_WAKE_TRIES):
        wake = bench.sampling_wake(base, SAMPLING_WAKE_KB)
        if wake.ok:
            break
    assert wake.ok, wake.output
    assert "DEEPSLEEP_RESET" in wake.output and "deep sleep" in wake.output


def test_the_library_api_fits_its_bound(bench: Workbench) -> None:
    assert any(bench.library(LIBRARY_KB, 20_000) for _ in range(LIBRARY_TRIES))
    # make fit reports how many names the run made (582 on 2026-12-04) and where the next pool comes
    assert bench.library_names is not None and bench.library_names > 500, bench.library_names


def test_names_note_says_where_the_next_qstr_pool_comes() -> None:
    # MicroPython's run-time pools: 20, 40, 80, 160, 320, 640, ... entries (7 bytes each on a 32-bit build)
    assert "name 621 would allocate the next qstr pool: 640 entries, 4,480 bytes" in names_note(614)
    assert "name 621 " in names_note(620)
    assert "name 1,261 would allocate the next qstr pool: 1280 entries" in names_note(621)
    assert "name 21 would allocate the next qstr pool: 40 entries" in names_note(1)


def test_a_wake_that_lost_a_sample_did_not_fit() -> None:
    """A MemoryError in record() is caught and counted by the cycle, and its log line may itself run out of
    memory: the wake ends well, but its sample is gone. The summary's counters tell."""
    ok = {"taken": 3, "recorded": 2, "dropped": 0, "pending_clock": 1, "errors": 0}
    assert not lost(ok)
    assert lost({**ok, "recorded": 1})  # taken, neither recorded nor held
    assert lost({**ok, "errors": 1})
    assert lost({**ok, "recorded": 1, "dropped": 1})  # counted (the health event tells), lost all the same


def test_a_first_wake_needs_more_than_a_small_heap(bench: Workbench) -> None:
    """The test can fail: far below the bound the wake does not complete (and nothing is lost)."""
    assert not bench.first_wake(48).ok


def test_frozen_firmware_costs_no_heap_for_bytecode(
    upy32_frozen: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("fit32-frozen")
    board_json = standin(BOARDS / "unix" / "board.json", work / "board.json")
    with RunningSouthgate(work / "southgate") as sg:
        frozen = Workbench(upy32_frozen, work, sg, board_json=board_json, frozen=True)
        frozen.close()  # no .mpy on its path
        base = work / "base.img"
        first = frozen.first_wake(FROZEN_WAKE_KB, base)
        assert first.ok, first.output
        image = work / "backlog.img"
        shutil.copy(base, image)
        frozen.fill(image, 1000)
        later = frozen.later_wake(image, FROZEN_WAKE_KB)
        assert later.ok, later.output
