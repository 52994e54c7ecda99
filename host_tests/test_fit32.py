"""A whole wake on the 32-bit Unix port (the ESP32's word and GC block size), firmware as deployed .mpy.

The real firmware/main.py on the unix board, one cycle, against southgate over verified TLS, with the files
`mcagent deploy` installs (node.json compiled on the host). Heap is deterministic for a given binary and
inputs, so the test asserts -X heapsize figures (measured: docs/benchmarks.md, `make fit`):

- a first wake (onboard, DSC, mappings, token, upload) and a later wake (token refresh, upload of a
  1,000-reading backlog) succeed within today's bounds; these bounds only ever go down;
- a later wake uploads 10,000 readings in the same heap as 1,000 (bodies stream from flash);
- with the firmware frozen into the binary, the same wakes need far less (what bytecode costs).

The issue's targets (80 KB first wake, 64 KB later wake, as .mpy) are not met yet: see docs/architecture.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcagent_tools.fit import Workbench
from southgate.testing import RunningSouthgate

FIRST_WAKE_KB = 140  # measured 136 KB (was ~150 before node.json, the runtime package and phase release)
LATER_WAKE_KB = 136  # measured 128 KB
FROZEN_WAKE_KB = 64  # measured 56 KB first wake, 52 KB later wake


@pytest.fixture(scope="module")
def bench(upy32: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    work = tmp_path_factory.mktemp("fit32")
    with RunningSouthgate(work / "southgate") as sg:
        yield Workbench(upy32, work, sg)


def test_first_and_later_wake_fit_their_bounds(bench: Workbench) -> None:
    base = bench.work / "base.img"
    first = bench.first_wake(FIRST_WAKE_KB, base)
    assert first.ok, first.output
    for n in (1000, 10_000):
        image = bench.work / f"backlog-{n}.img"
        shutil.copy(base, image)
        bench.fill(image, n)
        later = bench.later_wake(image, LATER_WAKE_KB)
        assert later.ok, (n, later.output)
        assert bench.pending(bench.work / "later.img") == 0


def test_a_first_wake_needs_more_than_a_small_heap(bench: Workbench) -> None:
    """The test can fail: far below the bound the wake does not complete (and nothing is lost)."""
    assert not bench.first_wake(48).ok


def test_frozen_firmware_costs_no_heap_for_bytecode(
    upy32_frozen: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("fit32-frozen")
    with RunningSouthgate(work / "southgate") as sg:
        frozen = Workbench(upy32_frozen, work, sg, frozen=True)
        base = work / "base.img"
        first = frozen.first_wake(FROZEN_WAKE_KB, base)
        assert first.ok, first.output
        image = work / "backlog.img"
        shutil.copy(base, image)
        frozen.fill(image, 1000)
        later = frozen.later_wake(image, FROZEN_WAKE_KB)
        assert later.ok, later.output
