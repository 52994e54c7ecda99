"""No secret in any output: run the identity end-to-end tests (CPython and MicroPython) in a subprocess,
collect every secret they saw (IATs, client secrets, registration tokens, access tokens, the admin token),
then scan everything printed (stdout/stderr of pytest and of each MicroPython run, including the reprs,
status dicts and error messages the tests print on purpose) and southgate's logs for any of them.

About 15 s: it re-runs test_identity_e2e.py once (both interpreters) with output capture off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "host_tests" / "firmware" / "test_identity_e2e.py"


def fragments(secret: str) -> list[str]:
    """The whole secret, and its last 24 characters (a JWT's signature part, a secret's random tail), so
    that a cut-off excerpt in an error message is caught too."""
    out = [secret]
    if len(secret) >= 40:
        out.append(secret[-24:])
    return out


def test_identity_runs_print_no_secrets(tmp_path: Path) -> None:
    sink = tmp_path / "secrets.txt"
    env = dict(os.environ)
    env["MCAGENT_LEAK_SINK"] = str(sink)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(E2E), "-q", "-s", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, "the e2e run failed:\n" + output[-4000:]
    assert "mcagent-e2e-shown:" in output, "the e2e tests' output was not captured"
    # Both interpreters ran and printed what a person would see.
    assert output.count("mcagent-e2e-shown:") >= 10

    secrets = {line.strip() for line in sink.read_text().splitlines() if line.strip()}
    assert len(secrets) >= 20, f"too few secrets noted: {len(secrets)}"
    logs = sorted(tmp_path.glob("southgate-*.log"))
    assert logs, "no southgate log was kept"
    texts = {"pytest output": output}
    for log in logs:
        texts[log.name] = log.read_text(errors="replace")
    assert any("/api/agentmanagement/v3/oauth/token" in t for t in texts.values())  # logs are real

    leaks = []
    for secret in secrets:
        for frag in fragments(secret):
            for name, text in texts.items():
                if frag in text:
                    i = text.index(frag)
                    before = text[max(0, i - 60) : i].replace("\n", " ")
                    leaks.append(f"{name}: ...{before}...")
    assert not leaks, "secrets found in output (context before each):\n" + "\n".join(leaks[:20])
