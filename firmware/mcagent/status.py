"""One line of JSON about a node, for `mcagent status` over the REPL (contract in docs/deploy.md).

Reads the node's files as they are (settings, agent state, node counters, flash store, ring log) and prints
what a person checking a board wants to see. Never a secret: no key, token, password or IAT is read into
the output, and a broken file shows as an error text instead of an exception.
"""

import gc
import json
import os


def _load_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _state(directory, name):
    try:
        from mcagent.state import State

        return State(directory).load(name)
    except Exception:  # a status report must not fail because one file is damaged
        return None


def _fs_free(root):
    try:
        st = os.statvfs(root or ".")
        return st[0] * st[4]  # available to us (f_bavail), as deploy and the fallback report it
    except (OSError, AttributeError):
        return None


def collect(root=""):
    """The status facts of the node whose files are under root ("" = current directory)."""
    from mcagent.clock import iso_ms

    pre = root.rstrip("/") + "/" if root else ""
    settings = _load_json(pre + "settings.json") or {}
    out = {
        "agent_id": None,
        "onboarding": "not onboarded",
        "buffered": None,
        "sent": None,
        "last_upload": None,
        "last_error": None,
    }
    config = _load_json(pre + settings.get("agentconfig", "agentconfig.json"))
    if isinstance(config, dict) and isinstance(config.get("content"), dict):
        out["agent_id"] = config["content"].get("clientId")
    reg = _state(pre + settings.get("state_dir", "agent-state"), "registration")
    if isinstance(reg, dict) and reg.get("client_id"):
        out["onboarding"] = "onboarded"
        out["agent_id"] = reg.get("client_id")
        if reg.get("expires_at"):
            out["secret_expires"] = iso_ms(reg["expires_at"] * 1000)
    node = _state(pre + "node", "state")
    if isinstance(node, dict):
        for k in ("sent", "recorded", "taken", "uploads", "rotations", "dropped", "boots", "wakes", "errors"):
            if k in node:
                out[k] = node[k]
        if node.get("uploads") and node.get("last_upload_ms"):
            out["last_upload"] = iso_ms(node["last_upload_ms"])
    try:
        from mcagent.store import Store

        stats = Store(pre + "store").stats(True, True)
        out["buffered"] = stats.get("pending_readings")
        out["buffered_events"] = stats.get("pending_events")
        out["store_dropped"] = stats.get("dropped_readings", stats.get("dropped"))
    except Exception as e:  # no store yet, or unreadable: say so instead of failing
        out["store_error"] = "%s: %s" % (type(e).__name__, e)
    try:
        from mcagent.runlog import RunLog

        lines = RunLog(pre + settings.get("runlog", "runlog.txt")).lines()
        if lines:
            out["last_error"] = lines[-1]
    except Exception:
        pass
    gc.collect()
    out["mem_free"] = gc.mem_free() if hasattr(gc, "mem_free") else None
    out["fs_free"] = _fs_free(root)
    return out


def report(root=""):
    """Print the status as one JSON line (what `mcagent status` parses)."""
    print(json.dumps(collect(root)))
