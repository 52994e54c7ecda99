"""Show what the agent on a board is doing, over its REPL (mpremote exec): never a secret.

    mcagent status --port /dev/ttyUSB0 [--json]

The board answers with one JSON object. When the firmware has `mcagent.status.report()` that object comes
from it (onboarding state, buffered and sent readings, last upload, last error, ...); otherwise the board
lists what it can see without the agent's help: free heap and flash, installed files and their sizes.
Keys that name secrets (keys, tokens, passwords, the onboarding token) are blanked on the host as well,
in case a board ever sends one. Asking over the REPL stops a running main.py, so status then resets the board
and the node starts again, as after a power cut (`--no-reset` leaves it at the REPL).

Sizes: the readable output shows free flash in KiB (as `mcagent deploy` does) and free heap in bytes;
--json passes the board's numbers through unchanged, all in bytes (mem_free, fs_free, file sizes).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import layout
from .runner import ToolError, check_port, tool_path
from .runner import run as run_tool

BEGIN, END = "MCAGENT-STATUS-BEGIN", "MCAGENT-STATUS-END"

#: Runs on the board. Must stay valid MicroPython; prints BEGIN, one JSON line, END.
STATUS_CODE = (
    """\
import gc, os, sys, json
def _size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return None
def _ls(d):
    out = []
    try:
        for e in os.ilistdir(d):
            if e[1] == 0x4000:
                out.append([e[0] + '/', None])
            else:
                out.append([e[0], _size(d.rstrip('/') + '/' + e[0])])
    except OSError:
        return None
    out.sort()
    return out
def _mem():
    gc.collect()
    return gc.mem_free()
def _fallback(note):
    r = {'source': 'files', 'note': note}
    r['platform'] = sys.platform
    r['micropython'] = '.'.join([str(x) for x in sys.implementation.version[:3]])
    try:
        import mcagent
        r['mcagent'] = mcagent.VERSION
    except Exception:
        r['mcagent'] = None
    r['mem_free'] = _mem()
    try:
        v = os.statvfs('/')
        r['fs_free'] = v[0] * v[4]
    except OSError:
        pass
    r['files'] = {p: _size(p) for p in @FILES@}
    r['certs'] = _ls(@CERTS@)
    r['root'] = _ls('/')
    # The runtime's counters (sent, recorded, uploads, ...): numbers only, so no secret can leak.
    try:
        with open(@NODE_STATE@) as f:
            d = json.loads(f.readline())
        r['runtime'] = {k: v for k, v in d.items() if isinstance(v, (int, float))}
    except Exception:
        r['runtime'] = None
    # The agent's state directory (settings.json "state_dir"): file names and sizes, never content.
    try:
        with open(@SETTINGS@) as f:
            sd = json.loads(f.read()).get('state_dir', @STATE_DIR@)
    except Exception:
        sd = @STATE_DIR@
    r['agent_state'] = {'dir': sd, 'files': _ls(sd)}
    return r
os.chdir('/')
_note = None
try:
    import mcagent.status as _s
except ImportError as e:
    _s = None
    _note = 'no mcagent.status on the board (' + str(e) + ')'
print(@BEGIN@)
if _s is not None:
    try:
        _s.report()
    except Exception as e:
        _s = None
        _note = 'mcagent.status.report() failed: ' + repr(e)
        print()
        print(@END@)
        print(@BEGIN@)
if _s is None:
    print(json.dumps(_fallback(_note)))
print(@END@)
""".replace("@FILES@", repr([layout.AGENTCONFIG, layout.SETTINGS, layout.BOARD_JSON, layout.MAIN]))
    .replace("@CERTS@", repr(layout.CERTS_DIR))
    .replace("@NODE_STATE@", repr(layout.NODE_STATE))
    .replace("@SETTINGS@", repr(layout.SETTINGS))
    .replace("@STATE_DIR@", repr(layout.DEFAULT_STATE_DIR))
    .replace("@BEGIN@", repr(BEGIN))
    .replace("@END@", repr(END))
)

#: Labels (in this order) for the keys the firmware's report is expected to use; others follow sorted.
LABELS = (
    ("agent_id", "agent"),
    ("onboarding", "onboarding"),
    ("buffered", "buffered readings"),
    ("sent", "sent readings"),
    ("last_upload", "last upload"),
    ("last_error", "last error"),
    ("mem_free", "free heap"),
    ("fs_free", "free flash"),
)


def kib(size: int) -> str:
    """A size in bytes as whole KiB, written as `mcagent deploy` writes free flash ("1205 KiB")."""
    return f"{size // 1024} KiB"


#: How the readable output shows sizes (in bytes on the board) under these keys.
SIZES: dict[str, Callable[[int], str]] = {"mem_free": lambda n: f"{n} bytes", "fs_free": kib}

_SECRET_WORDS = {
    "iat",
    "secret",
    "token",
    "password",
    "passwd",
    "psk",
    "key",
    "jwt",
    "assertion",
    "credential",
    "credentials",
    "passphrase",
}
_HARMLESS_WORDS = {
    "id",
    "ids",
    "count",
    "age",
    "expires",
    "expiry",
    "at",
    "time",
    "ms",
    "s",
    "ok",
    "state",
    "valid",
    "hash",
    "fingerprint",
    "kind",
    "type",
    "len",
    "length",
    "source",
    "present",
}
REDACTED = "<redacted>"


def _words(key: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w}


def is_secret_key(key: str) -> bool:
    words = _words(key)
    return bool(words & _SECRET_WORDS) and not words & _HARMLESS_WORDS


def redact(value: Any) -> Any:
    """Blank string values under keys that name secrets (a second line of defence behind the firmware)."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(v, str) and v and is_secret_key(str(k)) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def parse(output: str) -> dict[str, Any]:
    """The last BEGIN..END block of the board's answer, as a dict."""
    end = output.rfind(END)
    begin = output.rfind(BEGIN, 0, end if end >= 0 else None)
    if begin < 0 or end < 0:
        raise ValueError("no status block in the board's answer")
    text = output[begin + len(BEGIN) : end].strip()
    for line in reversed(text.splitlines()):  # the JSON object is the last line; firmware may print before it
        line = line.strip()
        if line.startswith("{"):
            doc = json.loads(line)
            if isinstance(doc, dict):
                return doc
    raise ValueError(f"the status block holds no JSON object: {text[-200:]!r}")


def _show(value: Any, key: str = "") -> str:
    if key in SIZES and isinstance(value, int) and not isinstance(value, bool):
        return SIZES[key](value)
    if key.endswith("_ms") and isinstance(value, int) and value > 10**12:  # Unix milliseconds
        when = datetime.fromtimestamp(value / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{when} ({value})"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return "-" if value is None else str(value)


def render(port: str, doc: dict[str, Any]) -> str:
    lines = [f"status of {port}:"]
    done = set()
    for key, label in LABELS:
        if key in doc:
            lines.append(f"  {label + ':':22} {_show(doc[key], key)}")
            done.add(key)
    for key in sorted(k for k in doc if k not in done and k != "runtime"):
        lines.append(f"  {key + ':':22} {_show(doc[key], key)}")
    runtime = doc.get("runtime")
    if isinstance(runtime, dict):
        lines.append("  runtime counters:")
        lines += [f"    {k + ':':20} {_show(v, k)}" for k, v in sorted(runtime.items())]
    return "\n".join(lines)


def command(port: str) -> list[str]:
    return [tool_path("mpremote"), "connect", port, "resume", "exec", STATUS_CODE]


def query(port: str, timeout_s: float = 60.0) -> dict[str, Any]:
    check_port(port)
    result = run_tool(command(port), timeout_s=timeout_s)
    try:
        doc: dict[str, Any] = redact(parse(result.output))
        return doc
    except ValueError as e:
        raise ToolError(f"{port}: no status ({e}); mpremote said:\n{result.tail()}") from None


def restart(port: str, timeout_s: float = 30.0) -> str | None:
    """Reset the board, so the node that asking stopped runs again; None, or why it failed."""
    result = run_tool([tool_path("mpremote"), "connect", port, "resume", "reset"], timeout_s=timeout_s)
    return None if result.ok else f"the reset failed; reset the board by hand:\n{result.tail()}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board (or a vboard's pty)")
    p.add_argument(
        "--no-reset",
        action="store_true",
        help="leave the board at the REPL (asking stops the node; by default status resets the board after)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the board's JSON (secrets blanked; sizes in bytes: mem_free, fs_free, files)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the board")


def run(args: argparse.Namespace) -> int:
    try:
        check_port(args.port)
    except ToolError as e:
        print(f"mcagent status: {e}", file=sys.stderr)
        return 1
    doc = None
    try:
        doc = query(args.port, args.timeout)
    except ToolError as e:  # the REPL was asked all the same: the node may be stopped
        print(f"mcagent status: {e}", file=sys.stderr)
    if doc is not None:
        print(json.dumps(doc, indent=2, sort_keys=True) if args.json else render(args.port, doc))
    if args.no_reset:
        if doc is not None:
            print(
                f"mcagent status: the node is stopped at the REPL (`mpremote connect {args.port} reset` "
                "restarts it)",
                file=sys.stderr,
            )
        return 0 if doc is not None else 1
    failed = restart(args.port)
    if failed:
        print(f"mcagent status: asking stopped the node, and {failed}", file=sys.stderr)
        return 1
    print("mcagent status: board reset: the node runs again", file=sys.stderr)
    return 0 if doc is not None else 1
