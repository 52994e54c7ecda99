"""Reading stored data back: shared by the admin API, the IoT Time Series APIs and the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from .clock import iso_ms
from .storage import Storage


def timeseries(
    st: Storage, agent_id: str, from_ms: int | None = None, to_ms: int | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": iso_ms(r["ts_ms"]),
            "dataPointId": r["data_point_id"],
            "value": r["value"],
            "qualityCode": r["quality"],
        }
        for r in st.readings(agent_id, from_ms, to_ms)
    ]


def events(
    st: Storage, agent_id: str, from_ms: int | None = None, to_ms: int | None = None
) -> list[dict[str, Any]]:
    out = []
    for r in st.events(agent_id, from_ms, to_ms):
        # The event as sent (exchange businessEvent or Event Management JSON), plus normalised fields.
        record = dict(json.loads(r["body"]))
        record.update(
            {
                "id": r["id"],
                "timestamp": iso_ms(r["ts_ms"]),
                "severity": r["severity"],
                "description": r["description"],
                "entityId": r["entity_id"],
                "via": r["source"],
            }
        )
        out.append(record)
    return out


def files(
    st: Storage, agent_id: str, from_ms: int | None = None, to_ms: int | None = None
) -> list[dict[str, Any]]:
    out = []
    for r in st.files(agent_id=agent_id):
        if from_ms is not None and r["ts_ms"] < from_ms or to_ms is not None and r["ts_ms"] >= to_ms:
            continue
        out.append(
            {
                "path": r["path"],
                "name": os.path.basename(r["path"]),
                "entityId": r["entity_id"],
                "size": r["size"],
                "sha256": r["sha256"],
                "eTag": r["etag"],
                "type": r["content_type"],
                "description": r["description"],
                "timestamp": iso_ms(r["ts_ms"]),
                "via": r["source"],
                "details": json.loads(r["details"]),
                "blob": r["blob"],
            }
        )
    return out


def diagnostics(st: Storage, agent_id: str) -> list[dict[str, Any]]:
    return [
        {
            "agentId": r["agent_id"],
            "correlationId": r["correlation_id"],
            "severity": r["severity"],
            "message": r["message"],
            "source": r["source"],
            "state": r["state"],
            "timestamp": iso_ms(r["ts_ms"]),
        }
        for r in st.diagnostics([agent_id])
    ]


def _qc(quality: str) -> Any:
    return int(quality) if quality.isdigit() else quality


def records(rows: list[dict[str, Any]], descending: bool) -> list[dict[str, Any]]:
    """IoT Time Series records from asset_values rows: one object per timestamp, `_time` plus each
    property and its `_qc`, in time order (newest first when `descending`)."""
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        rec = out.setdefault(r["ts_ms"], {"_time": iso_ms(r["ts_ms"])})
        rec[r["property"]] = json.loads(r["value"])
        rec[r["property"] + "_qc"] = _qc(r["quality"])
    return [out[k] for k in sorted(out, reverse=descending)]


def render(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> str:
    """Rows as a table, JSON or CSV (the CLI's --format)."""
    if fmt == "json":
        return json.dumps(rows, indent=2)
    flat = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        return buf.getvalue().rstrip("\n")
    widths = {c: max([len(c)] + [len(r[c]) for r in flat]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for r in flat:
        lines.append("  ".join(r[c].ljust(widths[c]) for c in columns).rstrip())
    if not flat:
        lines.append("(no rows)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


COLUMNS = {
    "timeseries": ["timestamp", "dataPointId", "value", "qualityCode"],
    "events": ["timestamp", "id", "severity", "description", "entityId", "via"],
    "files": ["timestamp", "path", "size", "eTag", "type", "via", "sha256"],
}
