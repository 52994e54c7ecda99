"""`make demo` end to end: southgate + the real firmware on the unix board, as a newcomer runs it."""

from __future__ import annotations

import re
import subprocess
import sys

from mcagent_tools.build import ROOT


def test_demo_runs_uploads_rotates_and_stores_the_simulated_values() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mcagent_tools.demo"], capture_output=True, text=True, cwd=ROOT, timeout=180
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    numbers = {
        k: int(v)
        for k, v in re.findall(
            r"^(readings sent|readings dropped|deep-sleep wakes|"
            r"secret rotations|uploads)\s+(\d+)",
            out,
            re.M,
        )
    }
    assert numbers["readings sent"] > 0, out
    assert numbers["readings dropped"] == 0, out
    assert numbers["deep-sleep wakes"] >= 1 and numbers["secret rotations"] >= 1, out
    assert "stored == simulated yes" in out, out
    assert "southgate timeseries --data" in out
    # Nothing left running: the demo's southgate stopped with the run (its port is not listening any more).
    port = re.search(r"southgate https://127\.0\.0\.1:(\d+)", out)
    assert port, out
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port.group(1)))) != 0
