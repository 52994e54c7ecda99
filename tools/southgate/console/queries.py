"""Read-only queries of the console that grow with what agents sent (readings, events, diagnostics).

They run in a worker thread on their own read-only connection (the server's connection belongs to the event
loop). The chart query downsamples in SQL: a range with more points than the chart has pixels comes back as
the minimum and the maximum of each pixel's bucket, each at its own timestamp, so a spike stays visible and
the answer's size depends on the chart's width, not on how much is stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

# Data point types a chart can draw, and how a stored text value becomes a number.
NUMERIC = {
    "DOUBLE": "CAST(value AS REAL)",
    "INT": "CAST(value AS REAL)",
    "LONG": "CAST(value AS REAL)",
    "BOOLEAN": "CASE value WHEN 'true' THEN 1.0 ELSE 0.0 END",
}
RAW_FACTOR = 2  # up to RAW_FACTOR points per pixel are sent as they are


@contextmanager
def reader(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for one query (cheap to open; WAL lets it read beside the writer)."""
    db = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True, timeout=10)
    try:
        db.row_factory = sqlite3.Row
        yield db
    finally:
        db.close()


def series(
    db_path: Path, agent_id: str, points: list[tuple[str, str]], from_ms: int, to_ms: int, width: int
) -> list[dict[str, Any]]:
    """For each (data point id, type): timestamps and values in [from, to), at most ~2 per pixel."""
    out = []
    with reader(db_path) as db:
        for dp_id, type_ in points:
            out.append(_one_series(db, agent_id, dp_id, NUMERIC[type_], from_ms, to_ms, width))
    return out


def _one_series(
    db: sqlite3.Connection, agent_id: str, dp_id: str, expr: str, from_ms: int, to_ms: int, width: int
) -> dict[str, Any]:
    where = "agent_id = ? AND data_point_id = ? AND ts_ms >= ? AND ts_ms < ?"
    args: tuple[Any, ...] = (agent_id, dp_id, from_ms, to_ms)
    count = int(db.execute(f"SELECT COUNT(*) FROM readings WHERE {where}", args).fetchone()[0])
    if count <= RAW_FACTOR * width:
        rows = db.execute(f"SELECT ts_ms, {expr} FROM readings WHERE {where} ORDER BY ts_ms", args).fetchall()
        return {"x": [r[0] for r in rows], "y": [r[1] for r in rows], "count": count, "downsampled": False}
    # Bucket i holds ts in [from + i*span/width, from + (i+1)*span/width). SQLite returns the bare column
    # ts_ms of the row that gave the MIN (or MAX) when the query has that one aggregate: two queries.
    bucket = "((ts_ms - ?) * ?) / ?"
    span = to_ms - from_ms
    picked: dict[int, dict[int, float]] = {}
    for agg in ("MIN", "MAX"):
        sql = f"SELECT {bucket} AS b, ts_ms, {agg}({expr}) FROM readings WHERE {where} GROUP BY b"
        for b, ts, value in db.execute(sql, (from_ms, width, span, *args)):
            picked.setdefault(b, {})[ts] = value
    x: list[int] = []
    y: list[float] = []
    for b in sorted(picked):
        for ts in sorted(picked[b]):
            x.append(ts)
            y.append(picked[b][ts])
    return {"x": x, "y": y, "count": count, "downsampled": True}


def time_bounds(db_path: Path, agent_id: str) -> tuple[int | None, int | None]:
    """Oldest and newest reading of an agent (the 'all' range of a chart)."""
    with reader(db_path) as db:
        row = db.execute(
            "SELECT MIN(ts_ms), MAX(ts_ms) FROM readings WHERE agent_id = ?", (agent_id,)
        ).fetchone()
    return row[0], row[1]


def latest_values(db_path: Path, agent_id: str) -> list[dict[str, Any]]:
    """The newest reading of each data point of an agent."""
    with reader(db_path) as db:
        points = [
            r[0]
            for r in db.execute("SELECT DISTINCT data_point_id FROM readings WHERE agent_id = ?", (agent_id,))
        ]
        out = []
        for dp in sorted(points):
            row = db.execute(
                "SELECT data_point_id, ts_ms, value, quality FROM readings WHERE agent_id = ? AND"
                " data_point_id = ? ORDER BY ts_ms DESC LIMIT 1",
                (agent_id, dp),
            ).fetchone()
            out.append(dict(row))
    return out


def agent_overview(db_path: Path) -> dict[str, dict[str, Any]]:
    """Per agent: readings, events and files stored, and its latest diagnostic (a problem first)."""
    stats: dict[str, dict[str, Any]] = {}

    def entry(agent_id: str) -> dict[str, Any]:
        return stats.setdefault(
            agent_id, {"readings": 0, "events": 0, "files": 0, "diagnostics": 0, "last_diagnostic": None}
        )

    with reader(db_path) as db:
        for table in ("readings", "events", "files", "diagnostics"):
            for agent_id, n in db.execute(f"SELECT agent_id, COUNT(*) FROM {table} GROUP BY agent_id"):
                entry(agent_id)[table] = n
        for problems in (False, True):  # the latest problem overrides the latest of all
            cond = "WHERE severity != 'INFO'" if problems else ""
            rows = db.execute(
                "SELECT d.agent_id, d.severity, d.message, d.ts_ms FROM diagnostics d JOIN (SELECT"
                f" agent_id, MAX(id) AS id FROM diagnostics {cond} GROUP BY agent_id) m ON d.id = m.id"
            )
            for r in rows:
                entry(r["agent_id"])["last_diagnostic"] = dict(r)
    return stats


def recent(db_path: Path, table: str, agent_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` events or diagnostics of an agent, newest first."""
    order = {"events": "ts_ms DESC, id DESC", "diagnostics": "id DESC"}[table]
    with reader(db_path) as db:
        return [
            dict(r)
            for r in db.execute(
                f"SELECT * FROM {table} WHERE agent_id = ? ORDER BY {order} LIMIT ?", (agent_id, limit)
            )
        ]
