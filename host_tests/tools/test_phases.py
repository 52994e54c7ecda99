"""mcagent_tools.phases: its probe points still name code that is there, and its table reads the probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcagent_tools import phases
from mcagent_tools.build import compile_tree


def test_every_probe_point_is_in_the_firmware_once_and_the_copy_compiles(tmp_path: Path) -> None:
    copy = phases.probed_copy(tmp_path / "firmware")  # raises ValueError naming a lost anchor
    assert (copy / "_phase.py").is_file()
    for name, _, tag in phases.POINTS:
        assert f"_phase.p({tag!r})" in (copy / name).read_text()
    assert compile_tree(copy, tmp_path / "mpy") == []


def test_a_moved_anchor_is_named(tmp_path: Path) -> None:
    source = tmp_path / "src"
    phases.probed_copy(source)  # any tree with the files; then one anchor goes
    (source / "runtime" / "cycle.py").write_text("")
    with pytest.raises(ValueError, match="runtime/cycle.py"):  # a lost anchor stops the tool
        phases.probed_copy(tmp_path / "again", source)


def test_rows_read_the_probes_output() -> None:
    out = "\n".join(
        [
            "qstr pool: n_pool=5, n_qstr=600, n_str_data_bytes=5000, n_total_bytes=9000",
            "mcagent-phase|boot done|34000|_phase main mcagent",
            "[node] something else",
            "qstr pool: n_pool=6, n_qstr=700, n_str_data_bytes=6000, n_total_bytes=15000",
            "mcagent-phase|token fetched|50000|_phase mcagent mcagent.http",
        ]
    )
    a, b = phases.rows(out)
    assert (a.tag, a.held, a.pools, a.names, a.name_bytes, a.loaded) == ("boot done", 34000, 5, 600, 9000, [])
    assert (b.tag, b.names, b.loaded, b.released) == ("token fetched", 700, ["mcagent.http"], ["main"])
