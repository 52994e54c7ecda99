"""The fault queue: the next N requests matching a path fail in a chosen way.

Kinds: `status` (answer with a status code: 400, 401, 413, 429, 500, 503), `close_after_bytes` (read K
bytes of the request body, then drop the connection), `close_after_status` (send only the status line, then
close), `stall` (wait S seconds, then handle normally) and `drop` (read everything, answer success, store
nothing, report it in diagnostics). Faults live in the database so `southgate fault add` works on a
running server.
"""

from __future__ import annotations

import fnmatch
from http import HTTPStatus
from typing import Any

KINDS = ("status", "close_after_bytes", "close_after_status", "stall", "drop")
FAULT_STATUSES = (400, 401, 413, 429, 500, 503)


def validate_spec(spec: dict[str, Any]) -> tuple[str, str | None, int, str, dict[str, Any]]:
    """Check an add-fault spec; returns (path, method, count, kind, params); ValueError names the problem."""
    if not isinstance(spec, dict):
        raise ValueError("fault spec must be a JSON object")
    known = {"path", "method", "count", "kind", "status", "bytes", "seconds", "retry_after", "message"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError("unknown fault field(s): {}".format(", ".join(sorted(unknown))))
    path = spec.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("fault path must start with '/' (prefix, or a glob with * and ?)")
    method = spec.get("method")
    if method is not None and (not isinstance(method, str) or not method.isalpha()):
        raise ValueError("fault method must be an HTTP method name")
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError("fault count must be a positive integer")
    kind = spec.get("kind", "status")
    if kind not in KINDS:
        raise ValueError("fault kind must be one of {}".format(", ".join(KINDS)))
    params: dict[str, Any] = {}
    if kind == "status":
        status = spec.get("status", 500)
        if status not in FAULT_STATUSES:
            raise ValueError("fault status must be one of {}".format(", ".join(map(str, FAULT_STATUSES))))
        params["status"] = status
        if status in (429, 503):
            retry_after = spec.get("retry_after", 1)
            if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
                raise ValueError("retry_after must be a non-negative integer (seconds)")
            params["retry_after"] = retry_after
    elif kind == "close_after_bytes":
        k = spec.get("bytes", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError("bytes must be a non-negative integer")
        params["bytes"] = k
    elif kind == "close_after_status":
        status = spec.get("status", 500)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        params["status"] = status
    elif kind == "stall":
        s = spec.get("seconds", 1)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0 or s > 3600:
            raise ValueError("seconds must be a number between 0 and 3600")
        params["seconds"] = float(s)
    if "message" in spec:
        params["message"] = str(spec["message"])[:200]
    return path, method.upper() if method else None, count, kind, params


def matches(fault: dict[str, Any], method: str, path: str) -> bool:
    if fault["method"] and fault["method"] != method.upper():
        return False
    pattern = fault["path"]
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(path, pattern)
    return path == pattern or path.startswith(pattern.rstrip("/") + "/") or pattern == "/"


def status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()


def public(fault: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": fault["id"],
        "path": fault["path"],
        "method": fault["method"],
        "remaining": fault["remaining"],
        "kind": fault["kind"],
    }
    out.update(fault["params"])
    return out
