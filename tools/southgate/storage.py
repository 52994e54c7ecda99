# ruff: noqa: E501  (SQL statements read better unwrapped)
"""All persistent state of a southgate instance in one SQLite database (DIR/southgate.db).

The server and the CLI open the same file (WAL mode), so `southgate agent create` and `southgate fault add`
work whether or not a server is running on DIR. Time series are keyed by (agent, data point, timestamp):
a re-sent batch overwrites itself, which makes at-least-once delivery idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, entity_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL, etag INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'NOT_ONBOARDED', status_since_ms INTEGER NOT NULL,
    iat_jti TEXT, iat TEXT, iat_expires_s INTEGER, iat_used INTEGER NOT NULL DEFAULT 0,
    secret TEXT, secret_expires_s INTEGER, secret_used INTEGER NOT NULL DEFAULT 0,
    rat_hash TEXT, prev_rat_hash TEXT, onboard_gen INTEGER NOT NULL DEFAULT 0,
    last_seen_ms INTEGER, iat_hash TEXT, iat_issued_s INTEGER,
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS assertion_jtis (
    agent_id TEXT NOT NULL, jti TEXT NOT NULL, exp_s INTEGER NOT NULL, PRIMARY KEY (agent_id, jti)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS assertion_jtis_exp ON assertion_jtis (exp_s);
CREATE TABLE IF NOT EXISTS assets (
    entity_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_ms INTEGER NOT NULL, tenant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS properties (
    entity_id TEXT NOT NULL, property_set TEXT NOT NULL, property TEXT NOT NULL,
    type TEXT NOT NULL, unit TEXT NOT NULL,
    PRIMARY KEY (entity_id, property_set, property)
);
CREATE TABLE IF NOT EXISTS dsc (
    agent_id TEXT PRIMARY KEY, id TEXT NOT NULL, etag INTEGER NOT NULL, body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mappings (
    id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, data_point_id TEXT NOT NULL, entity_id TEXT NOT NULL,
    property_set TEXT NOT NULL, property TEXT NOT NULL, keep INTEGER NOT NULL, validity TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mappings_agent ON mappings (agent_id, data_point_id);
CREATE TABLE IF NOT EXISTS mapping_calls (tenant TEXT NOT NULL, at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    agent_id TEXT NOT NULL, data_point_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value TEXT NOT NULL, quality TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, data_point_id, ts_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS asset_values (
    entity_id TEXT NOT NULL, property_set TEXT NOT NULL, property TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    value TEXT NOT NULL, quality TEXT NOT NULL,
    PRIMARY KEY (entity_id, property_set, ts_ms, property)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, entity_id TEXT NOT NULL, source TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, severity INTEGER NOT NULL, description TEXT NOT NULL, body TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_agent ON events (agent_id, ts_ms);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, entity_id TEXT NOT NULL,
    path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, etag INTEGER NOT NULL,
    content_type TEXT NOT NULL, description TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    source TEXT NOT NULL, details TEXT NOT NULL, blob TEXT NOT NULL, received_ms INTEGER NOT NULL,
    UNIQUE (entity_id, path)
);
CREATE TABLE IF NOT EXISTS uploads (
    entity_id TEXT NOT NULL, path TEXT NOT NULL, agent_id TEXT NOT NULL, started_ms INTEGER NOT NULL,
    meta TEXT NOT NULL, PRIMARY KEY (entity_id, path)
);
CREATE TABLE IF NOT EXISTS custom_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, type TEXT NOT NULL, version TEXT NOT NULL,
    details TEXT NOT NULL, content_type TEXT NOT NULL, payload BLOB NOT NULL, received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS diagnostics (
    id INTEGER PRIMARY KEY AUTOINCREMENT, agent_id TEXT NOT NULL, correlation_id TEXT NOT NULL,
    severity TEXT NOT NULL, message TEXT NOT NULL, source TEXT NOT NULL, state TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS diagnostics_agent ON diagnostics (agent_id, id);
CREATE TABLE IF NOT EXISTS activations (
    id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, tenant TEXT NOT NULL, status TEXT NOT NULL,
    created_ms INTEGER NOT NULL, active_since_ms INTEGER, UNIQUE (agent_id)
);
CREATE TABLE IF NOT EXISTS apps (
    client_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, app_name TEXT NOT NULL, app_version TEXT NOT NULL,
    secret_hash TEXT NOT NULL, created_ms INTEGER NOT NULL, UNIQUE (tenant, app_name)
);
CREATE TABLE IF NOT EXISTS import_jobs (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, property_set TEXT NOT NULL,
    status TEXT NOT NULL, message TEXT NOT NULL, request TEXT NOT NULL, created_ms INTEGER NOT NULL,
    modified_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, method TEXT, remaining INTEGER NOT NULL,
    kind TEXT NOT NULL, params TEXT NOT NULL, created_ms INTEGER NOT NULL
);
"""


# Data point types a chart can draw, and how a stored text value becomes a number in SQL.
NUMERIC = {
    "DOUBLE": "CAST(value AS REAL)",
    "INT": "CAST(value AS REAL)",
    "LONG": "CAST(value AS REAL)",
    "BOOLEAN": "CASE value WHEN 'true' THEN 1.0 ELSE 0.0 END",
}
RAW_FACTOR = 2  # a chart range with up to RAW_FACTOR points per pixel is sent as it is


class Conflict(Exception):
    """A uniqueness rule was violated (name taken, mapping exists, ...)."""


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


class Reading(NamedTuple):
    """One stored time series value of an agent's data point (the readings table's columns, in order)."""

    agent_id: str
    data_point_id: str
    ts_ms: int
    value: str
    quality: str
    received_ms: int


class AssetValue(NamedTuple):
    """One value of an asset's aspect variable (the asset_values table's columns, in order)."""

    entity_id: str
    property_set: str
    property: str
    ts_ms: int
    value: str  # JSON text of the typed value
    quality: str


class Variable(NamedTuple):
    """A typed variable of an asset's aspect (the asset model)."""

    aspect: str
    variable: str
    type: str
    unit: str


class EventQuery(NamedTuple):
    """What an Event Management read asks for (routes_events parses it); None: any."""

    tenant: str | None
    from_ms: int
    to_ms: int
    entity_id: str | None = None
    type_id: str | None = None
    correlation_id: str | None = None
    severity: int | None = None
    history: bool = False
    descending: bool = True
    offset: int = 0
    limit: int = 20


class Storage:
    """Thin typed wrapper over the database; every method is one short statement or transaction.

    No SQL runs outside this class. Each thread gets its own connection and transaction depth: the event
    loop's thread the one opened here, worker threads (asyncio.to_thread, for big reads and inserts) their
    own on first use, so a transaction never spans threads and SQLite's locking keeps writers apart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists()
        if new:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        db = self._connect()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=OFF")
        db.executescript(SCHEMA)
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        """Open the calling thread's connection (autocommit: tx() says where a transaction is)."""
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        self._local.conn = conn
        self._local.depth = 0
        with self._lock:
            self._conns.append(conn)
        return conn

    @property
    def db(self) -> sqlite3.Connection:
        """The calling thread's connection (opened on a thread's first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        return conn if conn is not None else self._connect()

    def _migrate(self) -> None:
        """Bring a data directory made by an older southgate up to date (idempotent, keeps all data).

        Agent rows gain iat_hash/iat_issued_s; an IAT kept in plain text becomes its SHA-256 and issue time
        (the service re-signs an unused IAT from its claims when it hands it out again).
        """
        cols = {r["name"] for r in self.db.execute("PRAGMA table_info(agents)").fetchall()}
        asset_cols = {r["name"] for r in self.db.execute("PRAGMA table_info(assets)").fetchall()}
        act_cols = {r["name"] for r in self.db.execute("PRAGMA table_info(activations)").fetchall()}
        with self.tx() as db:
            for col, kind in (("iat_hash", "TEXT"), ("iat_issued_s", "INTEGER")):
                if col not in cols:
                    db.execute(f"ALTER TABLE agents ADD COLUMN {col} {kind}")
            if "active_since_ms" not in act_cols:
                db.execute("ALTER TABLE activations ADD COLUMN active_since_ms INTEGER")
                db.execute("UPDATE activations SET active_since_ms = created_ms WHERE status = 'ACTIVE'")
            if "tenant" not in asset_cols:
                # Assets became per tenant: an old asset belongs to the tenant of the agent bound to it, else
                # of the agents mapping or sending events onto it, else the default tenant.
                db.execute("ALTER TABLE assets ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
                db.execute(
                    "UPDATE assets SET tenant = COALESCE("
                    "(SELECT a.tenant FROM agents a WHERE a.entity_id = assets.entity_id LIMIT 1),"
                    "(SELECT a.tenant FROM mappings m JOIN agents a ON a.id = m.agent_id"
                    " WHERE m.entity_id = assets.entity_id LIMIT 1),"
                    "(SELECT a.tenant FROM events e JOIN agents a ON a.id = e.agent_id"
                    " WHERE e.entity_id = assets.entity_id LIMIT 1), 'devtenant')"
                )
            for row in db.execute("SELECT id, iat FROM agents WHERE iat IS NOT NULL").fetchall():
                issued = None
                try:
                    seg = row["iat"].split(".")[1]
                    claims = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
                    if isinstance(claims.get("iat"), int):
                        issued = claims["iat"]
                except (IndexError, ValueError, AttributeError):
                    pass
                db.execute(
                    "UPDATE agents SET iat_hash = ?, iat_issued_s = ?, iat = NULL WHERE id = ?",
                    (hashlib.sha256(row["iat"].encode()).hexdigest(), issued, row["id"]),
                )

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def data_version(self) -> int:
        """Changes whenever another connection (the CLI, a worker thread) commits: time to reload settings."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the calling thread's connection (nested calls join the outer one)."""
        db = self.db
        local = self._local
        if local.depth:
            local.depth += 1
            try:
                yield db
            finally:
                local.depth -= 1
            return
        db.execute("BEGIN IMMEDIATE")
        local.depth = 1
        try:
            yield db
        except BaseException:
            local.depth = 0
            db.execute("ROLLBACK")
            raise
        local.depth = 0
        db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return _row(self.db.execute(sql, args).fetchone())

    def _all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    # settings -------------------------------------------------------------------------------------------
    def load_settings(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self._all("SELECT key, value FROM settings")}

    def save_settings(self, values: dict[str, Any]) -> None:
        with self.tx() as db:
            for key, value in values.items():
                db.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value))
                )

    # agents ---------------------------------------------------------------------------------------------
    def create_agent(self, agent_id: str, tenant: str, name: str, entity_id: str, now_ms: int) -> None:
        try:
            with self.tx() as db:
                db.execute(
                    "INSERT INTO agents (id, tenant, name, entity_id, created_ms, status_since_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (agent_id, tenant, name, entity_id, now_ms, now_ms),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"an agent named {name!r} already exists in tenant {tenant!r}") from exc

    def agent(self, agent_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM agents WHERE id = ?", agent_id)

    def entity_tenants(self, entity_id: str) -> set[str]:
        """Tenants whose agents map data points onto an entity (an asset belongs to one tenant)."""
        rows = self._all(
            "SELECT DISTINCT a.tenant AS tenant FROM mappings m JOIN agents a ON a.id = m.agent_id"
            " WHERE m.entity_id = ?",
            entity_id,
        )
        return {str(r["tenant"]) for r in rows}

    def owner_of_entity(self, entity_id: str) -> str | None:
        """The agent an entity belongs to (its bound asset, or the agent's own id as entity), if any."""
        row = self._one("SELECT id FROM agents WHERE id = ? OR entity_id = ? LIMIT 1", entity_id, entity_id)
        return row["id"] if row else None

    def agents(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM agents ORDER BY created_ms, id")

    def update_agent(self, agent_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE agents SET {cols} WHERE id = ?", (*fields.values(), agent_id))

    # client assertion ids (replay protection) --------------------------------------------------------------
    def claim_jti(self, agent_id: str, jti: str, exp_s: int, now_s: int) -> bool:
        """Remember `jti` of `agent_id` until `exp_s`; False when it is already remembered (a replay).

        Entries whose exp_s has passed are pruned first (an assertion past its exp is refused anyway)."""
        with self.tx() as db:
            db.execute("DELETE FROM assertion_jtis WHERE exp_s < ?", (now_s,))
            cur = db.execute(
                "INSERT OR IGNORE INTO assertion_jtis (agent_id, jti, exp_s) VALUES (?, ?, ?)",
                (agent_id, jti, exp_s),
            )
            return cur.rowcount == 1

    # assets ---------------------------------------------------------------------------------------------
    def ensure_asset(self, entity_id: str, now_ms: int, name: str | None = None, tenant: str = "") -> None:
        """Create the asset if it does not exist (its tenant is set once, by whoever creates it)."""
        self.db.execute(
            "INSERT OR IGNORE INTO assets (entity_id, name, created_ms, tenant) VALUES (?, ?, ?, ?)",
            (entity_id, name or "asset-" + entity_id[:8], now_ms, tenant),
        )

    def create_asset(
        self, entity_id: str, tenant: str, name: str, variables: list[Variable], now_ms: int
    ) -> None:
        """A modelled asset with its aspects' variables [(aspect, variable, type, unit)] in one transaction.

        Conflict when the id is taken; an existing asset of the same tenant only gains new variables."""
        with self.tx() as db:
            row = db.execute("SELECT tenant FROM assets WHERE entity_id = ?", (entity_id,)).fetchone()
            if row is not None and row["tenant"] != tenant:
                raise Conflict(f"asset id {entity_id} is taken")
            db.execute(
                "INSERT OR IGNORE INTO assets (entity_id, name, created_ms, tenant) VALUES (?, ?, ?, ?)",
                (entity_id, name, now_ms, tenant),
            )
            for aspect, var, type_, unit in variables:
                old = self.prop(entity_id, aspect, var)
                if old is not None and (old["type"], old["unit"]) != (type_, unit):
                    raise Conflict(
                        f"variable {aspect}.{var} exists as {old['type']} {old['unit']!r}; cannot redefine it"
                    )
                self.add_prop(entity_id, aspect, var, type_, unit)

    def asset(self, entity_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM assets WHERE entity_id = ?", entity_id)

    def assets(self, tenant: str | None = None) -> list[dict[str, Any]]:
        if tenant is None:
            return self._all("SELECT * FROM assets ORDER BY created_ms, entity_id")
        return self._all("SELECT * FROM assets WHERE tenant = ? ORDER BY created_ms, entity_id", tenant)

    def aspect_names(self, entity_id: str) -> list[str]:
        rows = self._all(
            "SELECT DISTINCT property_set FROM properties WHERE entity_id = ? ORDER BY property_set",
            entity_id,
        )
        return [str(r["property_set"]) for r in rows]

    def prop_count(self, entity_id: str, pset: str) -> int:
        row = self._one(
            "SELECT COUNT(*) AS n FROM properties WHERE entity_id = ? AND property_set = ?", entity_id, pset
        )
        return int(row["n"]) if row else 0

    def prop(self, entity_id: str, pset: str, prop: str) -> dict[str, Any] | None:
        return self._one(
            "SELECT * FROM properties WHERE entity_id = ? AND property_set = ? AND property = ?",
            entity_id,
            pset,
            prop,
        )

    def add_prop(self, entity_id: str, pset: str, prop: str, type_: str, unit: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO properties (entity_id, property_set, property, type, unit) VALUES (?,?,?,?,?)",
            (entity_id, pset, prop, type_, unit),
        )

    def props(self, entity_id: str, pset: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT * FROM properties WHERE entity_id = ? AND property_set = ? ORDER BY property",
            entity_id,
            pset,
        )

    # data source configuration --------------------------------------------------------------------------
    def dsc(self, agent_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM dsc WHERE agent_id = ?", agent_id)

    def put_dsc(self, agent_id: str, dsc_id: str, etag: int, body: dict[str, Any], now_ms: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO dsc (agent_id, id, etag, body, updated_ms) VALUES (?, ?, ?, ?, ?)",
            (agent_id, dsc_id, etag, json.dumps(body), now_ms),
        )

    # mappings -------------------------------------------------------------------------------------------
    def mappings(self, agent_id: str, **filters: str) -> list[dict[str, Any]]:
        cols = {
            "dataPointId": "data_point_id",
            "entityId": "entity_id",
            "propertySetName": "property_set",
            "propertyName": "property",
        }
        sql = "SELECT * FROM mappings WHERE agent_id = ?"
        args: list[Any] = [agent_id]
        for key, value in filters.items():
            sql += f" AND {cols[key]} = ?"
            args.append(value)
        return self._all(sql + " ORDER BY created_ms, id", *args)

    def mappings_of_point(self, agent_id: str, dp_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM mappings WHERE agent_id = ? AND data_point_id = ?", agent_id, dp_id)

    def mappings_of_property(self, entity_id: str, pset: str, prop: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT * FROM mappings WHERE entity_id = ? AND property_set = ? AND property = ?",
            entity_id,
            pset,
            prop,
        )

    def mapping(self, mapping_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM mappings WHERE id = ?", mapping_id)

    def add_mapping(self, row: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO mappings (id, agent_id, data_point_id, entity_id, property_set, property, keep,"
            " validity, created_ms) VALUES (:id, :agent_id, :data_point_id, :entity_id, :property_set,"
            " :property, :keep, :validity, :created_ms)",
            row,
        )

    def delete_mapping(self, mapping_id: str) -> None:
        self.db.execute("DELETE FROM mappings WHERE id = ?", (mapping_id,))

    def set_mapping_validity(self, mapping_id: str, validity: dict[str, Any]) -> None:
        self.db.execute("UPDATE mappings SET validity = ? WHERE id = ?", (json.dumps(validity), mapping_id))

    def count_mapping_call(self, tenant: str, now_ms: int, window_ms: int) -> int:
        """Record one mapping call; returns how many there were in the window including this one."""
        with self.tx() as db:
            db.execute("DELETE FROM mapping_calls WHERE at_ms <= ?", (now_ms - window_ms,))
            db.execute("INSERT INTO mapping_calls (tenant, at_ms) VALUES (?, ?)", (tenant, now_ms))
            row = db.execute("SELECT COUNT(*) FROM mapping_calls WHERE tenant = ?", (tenant,)).fetchone()
        return int(row[0])

    # time series ----------------------------------------------------------------------------------------
    def upsert_readings(self, rows: Iterable[Reading]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO readings (agent_id, data_point_id, ts_ms, value, quality, received_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def upsert_asset_values(self, rows: Iterable[AssetValue]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO asset_values (entity_id, property_set, property, ts_ms, value, quality)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _agent_rows(
        self, table: str, order: str, agent_id: str, from_ms: int | None, to_ms: int | None
    ) -> list[dict[str, Any]]:
        """Rows of one agent in [from, to) of a table keyed by ts_ms (table and order are ours, not input)."""
        sql = f"SELECT * FROM {table} WHERE agent_id = ?"
        args: list[Any] = [agent_id]
        if from_ms is not None:
            sql += " AND ts_ms >= ?"
            args.append(from_ms)
        if to_ms is not None:
            sql += " AND ts_ms < ?"
            args.append(to_ms)
        return self._all(f"{sql} ORDER BY {order}", *args)

    def readings(
        self, agent_id: str, from_ms: int | None = None, to_ms: int | None = None
    ) -> list[dict[str, Any]]:
        return self._agent_rows("readings", "ts_ms, data_point_id", agent_id, from_ms, to_ms)

    def asset_page(
        self,
        entity_id: str,
        pset: str,
        after_ms: int,
        upto_ms: int,
        limit: int,
        descending: bool,
        props: list[str] | None,
    ) -> list[dict[str, Any]]:
        """Rows of the first `limit` distinct timestamps in (after, upto] (IoT Time Series bounds), in the
        chosen order, only of `props` when given. Runs on the calling thread's connection (off the loop)."""
        db = self.db
        only = ""
        args: list[Any] = [entity_id, pset, after_ms, upto_ms]
        if props:
            only = " AND property IN ({})".format(",".join("?" * len(props)))
            args += props
        order = "DESC" if descending else "ASC"
        stamps = db.execute(
            "SELECT DISTINCT ts_ms FROM asset_values WHERE entity_id = ? AND property_set = ? AND ts_ms > ?"
            f" AND ts_ms <= ?{only} ORDER BY ts_ms {order} LIMIT ?",
            (*args, limit),
        ).fetchall()
        if not stamps:
            return []
        lo = min(r["ts_ms"] for r in stamps)
        hi = max(r["ts_ms"] for r in stamps)
        rows = db.execute(
            "SELECT * FROM asset_values WHERE entity_id = ? AND property_set = ? AND ts_ms >= ? AND ts_ms <= ?"
            f"{only} ORDER BY ts_ms {order}, property",
            (entity_id, pset, lo, hi, *args[4:]),
        ).fetchall()
        return [dict(r) for r in rows]

    def latest_values(
        self, entity_id: str, pset: str, after_ms: int, upto_ms: int, props: list[str] | None
    ) -> list[dict[str, Any]]:
        """The newest row of each property with a timestamp in (after, upto] (IoT Time Series latestValue)."""
        db = self.db
        only = ""
        args: list[Any] = [entity_id, pset, after_ms, upto_ms]
        if props:
            only = " AND property IN ({})".format(",".join("?" * len(props)))
            args += props
        rows = db.execute(
            "SELECT v.* FROM asset_values v JOIN (SELECT property, MAX(ts_ms) AS ts FROM asset_values"
            f" WHERE entity_id = ? AND property_set = ? AND ts_ms > ? AND ts_ms <= ?{only} GROUP BY property) m"
            " ON v.property = m.property AND v.ts_ms = m.ts WHERE v.entity_id = ? AND v.property_set = ?"
            " ORDER BY v.ts_ms, v.property",
            (*args, entity_id, pset),
        ).fetchall()
        return [dict(r) for r in rows]

    # console reads (they grow with what agents sent: callers run them off the event loop) ------------------
    def chart_series(
        self, agent_id: str, points: list[tuple[str, str]], from_ms: int, to_ms: int, width: int
    ) -> list[dict[str, Any]]:
        """For each (data point id, type): timestamps and values in [from, to), at most ~2 per pixel.

        A range with more points than the chart has pixels comes back as the minimum and the maximum of each
        pixel's bucket, each at its own timestamp, so a spike stays visible and the answer's size depends on
        the chart's width, not on how much is stored."""
        return [
            self._one_series(agent_id, dp_id, NUMERIC[type_], from_ms, to_ms, width)
            for dp_id, type_ in points
        ]

    def _one_series(
        self, agent_id: str, dp_id: str, expr: str, from_ms: int, to_ms: int, width: int
    ) -> dict[str, Any]:
        db = self.db
        where = "agent_id = ? AND data_point_id = ? AND ts_ms >= ? AND ts_ms < ?"
        args: tuple[Any, ...] = (agent_id, dp_id, from_ms, to_ms)
        count = int(db.execute(f"SELECT COUNT(*) FROM readings WHERE {where}", args).fetchone()[0])
        if count <= RAW_FACTOR * width:
            rows = db.execute(
                f"SELECT ts_ms, {expr} FROM readings WHERE {where} ORDER BY ts_ms", args
            ).fetchall()
            return {
                "x": [r[0] for r in rows],
                "y": [r[1] for r in rows],
                "count": count,
                "downsampled": False,
            }
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

    def reading_bounds(self, agent_id: str) -> tuple[int | None, int | None]:
        """Oldest and newest reading of an agent (the 'all' range of a chart)."""
        row = self.db.execute(
            "SELECT MIN(ts_ms), MAX(ts_ms) FROM readings WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        return row[0], row[1]

    def latest_readings(self, agent_id: str) -> list[dict[str, Any]]:
        """The newest reading of each data point of an agent."""
        db = self.db
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

    def agent_overview(self) -> dict[str, dict[str, Any]]:
        """Per agent: readings, events and files stored, and its latest diagnostic (a problem first)."""
        stats: dict[str, dict[str, Any]] = {}

        def entry(agent_id: str) -> dict[str, Any]:
            return stats.setdefault(
                agent_id, {"readings": 0, "events": 0, "files": 0, "diagnostics": 0, "last_diagnostic": None}
            )

        db = self.db
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

    def recent(self, table: str, agent_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` events or diagnostics of an agent, newest first."""
        order = {"events": "ts_ms DESC, id DESC", "diagnostics": "id DESC"}[table]
        return self._all(
            f"SELECT * FROM {table} WHERE agent_id = ? ORDER BY {order} LIMIT ?", agent_id, limit
        )

    # events ---------------------------------------------------------------------------------------------
    def upsert_event(self, row: dict[str, Any]) -> bool:
        """Store an event; a re-sent one (same id, same agent) replaces itself. False, and nothing written,
        when the id is another agent's event: one agent never replaces another's."""
        other = self._one("SELECT agent_id FROM events WHERE id = ?", row["id"])
        if other is not None and other["agent_id"] != row["agent_id"]:
            return False
        self.db.execute(
            "INSERT OR REPLACE INTO events (id, agent_id, entity_id, source, ts_ms, severity, description, body,"
            " received_ms) VALUES (:id, :agent_id, :entity_id, :source, :ts_ms, :severity, :description, :body,"
            " :received_ms)",
            row,
        )
        return True

    def events(
        self, agent_id: str, from_ms: int | None = None, to_ms: int | None = None
    ) -> list[dict[str, Any]]:
        return self._agent_rows("events", "ts_ms, id", agent_id, from_ms, to_ms)

    def query_events(self, q: EventQuery, standard_type: str) -> tuple[int, list[dict[str, Any]]]:
        """(how many events match, the page of them): a tenant's events (None: every tenant's) by entity,
        type, correlation id, severity and time (both bounds inclusive). Without history, an event that a
        newer one of the same entity, type and correlation id superseded is not listed, whatever the
        filter: the newest of a group stands for it. An event sent without a type (or with an empty one) is
        of standard_type; one without a correlation id is alone."""
        sql = (
            "WITH ev AS (SELECT e.*, CASE WHEN json_type(e.body, '$.typeId') = 'text'"
            " AND json_extract(e.body, '$.typeId') != '' THEN json_extract(e.body, '$.typeId') ELSE ? END"
            " AS type_id, COALESCE(json_extract(e.body, '$.correlationId'), e.id) AS corr"
            " FROM events e JOIN agents a ON a.id = e.agent_id"
            " WHERE (? IS NULL OR a.tenant = ?) AND (? IS NULL OR e.entity_id = ?)),"
            " f AS (SELECT *, ROW_NUMBER() OVER (PARTITION BY entity_id, type_id, corr"
            " ORDER BY ts_ms DESC, id DESC) AS rn FROM ev"
            " WHERE (? IS NULL OR type_id = ?) AND (? IS NULL OR corr = ?))"
            " SELECT {what} FROM f WHERE (? OR rn = 1) AND ts_ms >= ? AND ts_ms <= ?"
            " AND (? IS NULL OR severity = ?)"
        )
        args = (
            standard_type,
            q.tenant,
            q.tenant,
            q.entity_id,
            q.entity_id,
            q.type_id,
            q.type_id,
            q.correlation_id,
            q.correlation_id,
            q.history,
            q.from_ms,
            q.to_ms,
            q.severity,
            q.severity,
        )
        order = "DESC" if q.descending else "ASC"
        # One statement gives the page and the total, so an event arriving meanwhile cannot split them.
        rows = self._all(
            sql.format(what="*, COUNT(*) OVER () AS total")
            + f" ORDER BY ts_ms {order}, id {order} LIMIT ? OFFSET ?",
            *args,
            q.limit,
            q.offset,
        )
        if rows:
            return int(rows[0]["total"]), rows
        return int(self.db.execute(sql.format(what="COUNT(*)"), args).fetchone()[0]), rows

    def event_in_tenant(self, event_id: str, tenant: str | None) -> dict[str, Any] | None:
        """One event, if it is of that tenant's agents (None: any tenant's)."""
        return self._one(
            "SELECT e.* FROM events e JOIN agents a ON a.id = e.agent_id WHERE e.id = ?"
            " AND (? IS NULL OR a.tenant = ?)",
            event_id,
            tenant,
            tenant,
        )

    # files ----------------------------------------------------------------------------------------------
    def file(self, entity_id: str, path: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM files WHERE entity_id = ? AND path = ?", entity_id, path)

    def upsert_file(self, row: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO files (agent_id, entity_id, path, size, sha256, etag, content_type, description, ts_ms,"
            " source, details, blob, received_ms) VALUES (:agent_id, :entity_id, :path, :size, :sha256, :etag,"
            " :content_type, :description, :ts_ms, :source, :details, :blob, :received_ms)"
            " ON CONFLICT (entity_id, path) DO UPDATE SET agent_id = excluded.agent_id, size = excluded.size,"
            " sha256 = excluded.sha256, etag = excluded.etag, content_type = excluded.content_type,"
            " description = excluded.description, ts_ms = excluded.ts_ms, source = excluded.source,"
            " details = excluded.details, blob = excluded.blob, received_ms = excluded.received_ms",
            row,
        )

    def files(self, agent_id: str | None = None, entity_id: str | None = None) -> list[dict[str, Any]]:
        if entity_id is not None:
            return self._all("SELECT * FROM files WHERE entity_id = ? ORDER BY path", entity_id)
        return self._all("SELECT * FROM files WHERE agent_id = ? ORDER BY received_ms, id", agent_id)

    def upload(self, entity_id: str, path: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM uploads WHERE entity_id = ? AND path = ?", entity_id, path)

    def put_upload(self, entity_id: str, path: str, agent_id: str, now_ms: int, meta: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO uploads (entity_id, path, agent_id, started_ms, meta) VALUES (?, ?, ?, ?, ?)",
            (entity_id, path, agent_id, now_ms, json.dumps(meta)),
        )

    def delete_upload(self, entity_id: str, path: str) -> None:
        self.db.execute("DELETE FROM uploads WHERE entity_id = ? AND path = ?", (entity_id, path))

    # custom items ---------------------------------------------------------------------------------------
    def add_custom(
        self,
        agent_id: str,
        type_: str,
        version: str,
        details: dict[str, Any],
        content_type: str,
        payload: bytes,
        now_ms: int,
    ) -> None:
        self.db.execute(
            "INSERT INTO custom_items (agent_id, type, version, details, content_type, payload, received_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (agent_id, type_, version, json.dumps(details), content_type, payload, now_ms),
        )

    def custom_items(self, agent_id: str) -> list[dict[str, Any]]:
        """An agent's custom items without their payloads (`size` instead), oldest first."""
        return self._all(
            "SELECT id, agent_id, type, version, details, content_type, length(payload) AS size, received_ms"
            " FROM custom_items WHERE agent_id = ? ORDER BY id",
            agent_id,
        )

    def custom_item(self, agent_id: str, item_id: int) -> dict[str, Any] | None:
        """One custom item with its payload, if it is `agent_id`'s."""
        return self._one("SELECT * FROM custom_items WHERE id = ? AND agent_id = ?", item_id, agent_id)

    # diagnostics ----------------------------------------------------------------------------------------
    def add_diagnostic(
        self,
        agent_id: str,
        correlation_id: str,
        severity: str,
        message: str,
        source: str,
        state: str,
        now_ms: int,
    ) -> None:
        self.db.execute(
            "INSERT INTO diagnostics (agent_id, correlation_id, severity, message, source, state, ts_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (agent_id, correlation_id, severity, message, source, state, now_ms),
        )

    def diagnostics(self, agent_ids: list[str], since_ms: int = 0) -> list[dict[str, Any]]:
        if not agent_ids:
            return []
        marks = ",".join("?" * len(agent_ids))
        return self._all(
            f"SELECT * FROM diagnostics WHERE agent_id IN ({marks}) AND ts_ms >= ? ORDER BY id",
            *agent_ids,
            since_ms,
        )

    def add_activation(
        self, row: dict[str, Any], per_tenant: int, now_ms: int, lifetime_ms: int
    ) -> str | None:
        """Insert an activation unless the agent has one or its tenant has `per_tenant` active ones; returns
        None when inserted, else the reason. Activations older than `lifetime_ms` no longer count."""
        with self.tx() as db:
            self.expire_activations(now_ms, lifetime_ms)
            if db.execute("SELECT 1 FROM activations WHERE agent_id = ?", (row["agent_id"],)).fetchone():
                return "exists"
            active = db.execute(
                "SELECT COUNT(*) FROM activations WHERE tenant = ? AND status = 'ACTIVE'", (row["tenant"],)
            ).fetchone()[0]
            if row["status"] == "ACTIVE" and active >= per_tenant:
                return "limit"
            db.execute(
                "INSERT INTO activations (id, agent_id, tenant, status, created_ms, active_since_ms) VALUES"
                " (:id, :agent_id, :tenant, :status, :created_ms, :active_since_ms)",
                row,
            )
        return None

    def expire_activations(self, now_ms: int, lifetime_ms: int) -> None:
        """An activation switches itself off `lifetime_ms` after it was switched on."""
        self.db.execute(
            "UPDATE activations SET status = 'INACTIVE' WHERE status = 'ACTIVE' AND active_since_ms <= ?",
            (now_ms - lifetime_ms,),
        )

    def set_activation(self, activation_id: str, status: str, now_ms: int) -> None:
        self.db.execute(
            "UPDATE activations SET status = ?, active_since_ms = CASE WHEN ? = 'ACTIVE' AND status != 'ACTIVE'"
            " THEN ? ELSE active_since_ms END WHERE id = ?",
            (status, status, now_ms, activation_id),
        )

    def delete_activation(self, activation_id: str) -> None:
        self.db.execute("DELETE FROM activations WHERE id = ?", (activation_id,))

    def activation(self, activation_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM activations WHERE id = ?", activation_id)

    def activations_of_agent(self, agent_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM activations WHERE agent_id = ?", agent_id)

    def activations(self, tenant: str) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM activations WHERE tenant = ? ORDER BY created_ms, id", tenant)

    # apps (Token Manager credentials) ---------------------------------------------------------------------
    def create_app(
        self, client_id: str, tenant: str, name: str, version: str, secret_hash: str, now_ms: int
    ) -> None:
        try:
            self.db.execute(
                "INSERT INTO apps (client_id, tenant, app_name, app_version, secret_hash, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (client_id, tenant, name, version, secret_hash, now_ms),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"an app named {name!r} already exists in tenant {tenant!r}") from exc

    def app(self, client_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM apps WHERE client_id = ?", client_id)

    def apps(self) -> list[dict[str, Any]]:
        return self._all(
            "SELECT client_id, tenant, app_name, app_version, created_ms FROM apps ORDER BY created_ms"
        )

    # import jobs (IoT TS Bulk) ---------------------------------------------------------------------------
    def add_import_job(self, row: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO import_jobs (id, tenant, entity_id, property_set, status, message, request, created_ms,"
            " modified_ms) VALUES (:id, :tenant, :entity_id, :property_set, :status, :message, :request,"
            " :created_ms, :modified_ms)",
            row,
        )

    def finish_import_job(
        self,
        job_id: str,
        status: str,
        message: str,
        rows: list[AssetValue],
        now_ms: int,
    ) -> None:
        """Store an import job's values and its final status in one transaction (all or nothing)."""
        with self.tx() as db:
            if rows:
                self.upsert_asset_values(rows)
            db.execute(
                "UPDATE import_jobs SET status = ?, message = ?, modified_ms = ? WHERE id = ?",
                (status, message, now_ms, job_id),
            )

    def import_job(self, job_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM import_jobs WHERE id = ?", job_id)

    # faults ---------------------------------------------------------------------------------------------
    def add_fault(
        self, path: str, method: str | None, count: int, kind: str, params: dict[str, Any], now_ms: int
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO faults (path, method, remaining, kind, params, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (path, method, count, kind, json.dumps(params), now_ms),
        )
        return int(cur.lastrowid or 0)

    def faults(self) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM faults WHERE remaining > 0 ORDER BY id")
        for r in rows:
            r["params"] = json.loads(r["params"])
        return rows

    def consume_fault(self, fault_id: int) -> bool:
        cur = self.db.execute(
            "UPDATE faults SET remaining = remaining - 1 WHERE id = ? AND remaining > 0", (fault_id,)
        )
        return cur.rowcount == 1

    def clear_faults(self) -> int:
        cur = self.db.execute("DELETE FROM faults")
        return cur.rowcount
