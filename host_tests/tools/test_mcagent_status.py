"""`mcagent status` on a virtual board: the firmware's report if there is one, files otherwise; no secrets."""

from __future__ import annotations

import json
import re

from mcagent_helpers import IAT, WIFI_PASSWORD, agentconfig, assert_no_secrets, run_cli
from mcagent_tools.status import REDACTED, is_secret_key, parse, redact, render
from mcagent_tools.testing import RunningVBoard

FAKE_STATUS = """\
import json
def report():
    print(json.dumps({"agent_id": "0123456789abcdef0123456789abcdef", "onboarding": "onboarded",
                      "buffered": 17, "sent": 240, "last_upload": "2026-01-02T03:04:05.000Z",
                      "last_error": None, "mem_free": 61234, "access_token": "%s",
                      "token_expires_ms": 1767323045000}))
""" % ("eyJ" + "TOKEN" * 10)


def _install_secrets(vb: RunningVBoard) -> None:
    (vb.dir / "agentconfig.json").write_text(json.dumps(agentconfig("0123456789abcdef0123456789abcdef")))
    (vb.dir / "settings.json").write_text(json.dumps({"wifi": {"ssid": "x", "password": WIFI_PASSWORD}}))


def test_status_uses_the_firmware_report_and_blanks_secrets(vboard: RunningVBoard) -> None:
    _install_secrets(vboard)
    pkg = vboard.dir / "lib" / "mcagent"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VERSION = '9.9.9'\n")
    (pkg / "status.py").write_text(FAKE_STATUS)

    proc = run_cli("status", "--port", vboard.port)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"status of {vboard.port}:"
    # The fields people look for come first, in this order, with readable labels.
    assert [line.split(":")[0].strip() for line in lines[1:8]] == [
        "agent",
        "onboarding",
        "buffered readings",
        "sent readings",
        "last upload",
        "last error",
        "free heap",
    ]
    assert "free heap:             61234 bytes" in proc.stdout
    assert "buffered readings:     17" in proc.stdout
    assert "sent readings:         240" in proc.stdout
    assert f"access_token:          {REDACTED}" in proc.stdout
    assert "token_expires_ms:      2026-01-02 03:04:05 UTC (1767323045000)" in proc.stdout
    assert "TOKENTOKEN" not in proc.stdout
    assert_no_secrets(proc.stdout, proc.stderr)

    assert "board reset: the node runs again" in proc.stderr  # asking stopped it
    stay = run_cli("status", "--port", vboard.port, "--json", "--no-reset")
    as_json = json.loads(stay.stdout)  # the notes go to stderr: stdout stays JSON
    assert as_json["buffered"] == 17 and as_json["access_token"] == REDACTED
    assert "the node is stopped at the REPL" in stay.stderr and "board reset" not in stay.stderr


def test_status_without_the_firmware_helper_lists_files_and_heap(vboard: RunningVBoard) -> None:
    _install_secrets(vboard)
    (vboard.dir / "certs").mkdir()
    (vboard.dir / "certs" / "ca.der").write_bytes(b"0" * 100)
    # The runtime's counters file (JSON line + checksum line) and the agent's state (with a secret in it).
    (vboard.dir / "node").mkdir()
    counters = {"sent": 6, "recorded": 9, "last_upload_ms": 1795304964250, "v": 1, "note": IAT}
    (vboard.dir / "node" / "state").write_text(json.dumps(counters) + "\n87eb112af879d93b\n")
    settings = {"wifi": {"ssid": "x", "password": WIFI_PASSWORD}, "state_dir": "agentstate"}
    (vboard.dir / "settings.json").write_text(json.dumps(settings))
    (vboard.dir / "agentstate").mkdir()
    (vboard.dir / "agentstate" / "registration").write_text(json.dumps({"client_secret": IAT}))
    human = run_cli("status", "--port", vboard.port)
    assert "runtime counters:" in human.stdout
    assert "    last_upload_ms:      2026-11-21 " in human.stdout
    assert "    sent:                6" in human.stdout
    assert_no_secrets(human.stdout, human.stderr)
    proc = run_cli("status", "--port", vboard.port, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"] == "files"
    assert doc["note"].startswith("no mcagent.status on the board")
    assert doc["platform"] == "linux"
    assert isinstance(doc["mem_free"], int) and doc["mem_free"] > 0
    assert doc["files"]["/agentconfig.json"] == (vboard.dir / "agentconfig.json").stat().st_size
    assert doc["files"]["/main.py"] is None
    assert doc["certs"] == [["ca.der", 100]]
    assert doc["runtime"] == {
        "sent": 6,
        "recorded": 9,
        "last_upload_ms": 1795304964250,
        "v": 1,
    }  # numbers only
    assert doc["agent_state"] == {
        "dir": "agentstate",
        "files": [["registration", len(json.dumps({"client_secret": IAT}))]],
    }
    assert_no_secrets(proc.stdout, proc.stderr)


def test_a_failing_report_falls_back_to_files(vboard: RunningVBoard) -> None:
    pkg = vboard.dir / "lib" / "mcagent"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "status.py").write_text("def report():\n    print('{\"half\": ')\n    raise OSError(5)\n")
    proc = run_cli("status", "--port", vboard.port, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"] == "files" and "report() failed: OSError(5" in doc["note"]


def test_status_of_a_port_that_does_not_exist_says_so() -> None:
    proc = run_cli("status", "--port", "/dev/no-such-board", "--timeout", "20")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("mcagent status: serial port /dev/no-such-board does not exist (")
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback
    assert "no status block" not in proc.stderr and "in use" not in proc.stderr


def test_status_of_a_port_without_a_board_fails_clearly() -> None:
    # /dev/null exists but no MicroPython answers there: the failure is about the answer, not the port.
    proc = run_cli("status", "--port", "/dev/null", "--timeout", "20")
    assert proc.returncode == 1
    assert "mcagent status: /dev/null: no status" in proc.stderr
    assert "does not exist" not in proc.stderr


def test_free_flash_is_shown_in_kib_like_deploy_and_json_keeps_bytes(vboard: RunningVBoard) -> None:
    doc = json.loads(run_cli("status", "--port", vboard.port, "--json").stdout)
    assert isinstance(doc["fs_free"], int) and isinstance(doc["mem_free"], int)  # bytes, unchanged
    human = run_cli("status", "--port", vboard.port).stdout
    # (the vboard's free flash is the host's free disk space: it changes between the two calls)
    assert re.search(r"^  free flash: +\d+ KiB$", human, re.MULTILINE), human
    assert re.search(r"^  free heap: +\d+ bytes$", human, re.MULTILINE), human
    assert "(bytes)" not in human
    assert "bytes" in run_cli("status", "--help").stdout.split("--json", 1)[1]  # the JSON unit is documented


def test_render_sizes() -> None:
    text = render("P", {"fs_free": 1263616, "mem_free": 61234, "other_free": 5})
    assert "  free flash:            1234 KiB\n" in text
    assert "  free heap:             61234 bytes\n" in text
    assert text.endswith("  other_free:            5")
    assert "free flash:            -" in render("P", {"fs_free": None})


def test_redaction_rules() -> None:
    for key in (
        "iat",
        "IAT",
        "client_secret",
        "clientSecret",
        "access_token",
        "password",
        "wifi_key",
        "psk",
        "jwt",
    ):
        assert is_secret_key(key), key
    for key in (
        "key_id",
        "token_expires_ms",
        "secret_expires_at",
        "buffered",
        "tokenAge",
        "last_error",
        "keys_count",
    ):
        assert not is_secret_key(key), key
    doc = {"a": {"password": "p", "list": [{"token": "t", "n": 1}]}, "token": "", "secret": 5}
    assert redact(doc) == {
        "a": {"password": REDACTED, "list": [{"token": REDACTED, "n": 1}]},
        "token": "",
        "secret": 5,
    }
    assert IAT not in json.dumps(redact({"iat": IAT}))


def test_parse_takes_the_last_block_and_the_last_json_line() -> None:
    text = (
        'noise\nMCAGENT-STATUS-BEGIN\n{"a": 1}\nMCAGENT-STATUS-END\n'
        'MCAGENT-STATUS-BEGIN\nlog line\n{"b": 2}\nMCAGENT-STATUS-END\n'
    )
    assert parse(text) == {"b": 2}


def test_the_tools_default_state_dir_is_the_firmwares() -> None:
    # One default name for the agent's state directory: `mcagent status` looks where the firmware writes
    # when settings.json names none (it once looked in "mcagent", which the firmware never used).
    from mcagent_tools import layout
    from mcagent_tools.firmware import module

    assert layout.DEFAULT_STATE_DIR == module("mcagent.board").Settings().state_dir
