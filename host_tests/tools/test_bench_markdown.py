"""make bench writes its section of docs/benchmarks.md and keeps the others (make fit's, the console's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcagent_tools import bench


def test_the_flat_ram_section_is_replaced_and_the_rest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = tmp_path / "benchmarks.md"
    md.write_text(
        "# Benchmarks\n\nold intro\n\n## Flat RAM: old\n\nold table\n\n"
        "## A whole wake\n\nkept\n\n## console\n\nkept too\n"
    )
    monkeypatch.setattr(bench, "BENCHMARKS_MD", md)
    row = {"readings": 100, "budget_kb": 40, "heapsize_kb": 140, "batches": 1, "upload_s": 0.2}
    bench.write_markdown([row], 4)
    text = md.read_text()
    assert "old table" not in text and "| 100 | 40 KB | 140 KB | 1 | 0.2 s |" in text
    assert text.count("## Flat RAM") == 1
    assert text.endswith("## A whole wake\n\nkept\n\n## console\n\nkept too\n")
    md.write_text("")  # a new file: just the section
    bench.write_markdown([row], 4)
    assert md.read_text().startswith("# Benchmarks") and "## A whole wake" not in md.read_text()
