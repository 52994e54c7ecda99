"""What happens to a well-formed exchange body: items are checked against the DSC and mappings the way
the real service does it later and asynchronously (§D, §F) — values that don't fit are dropped and the
reason goes to diagnostics; the request itself was already answered 200-worthy.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import configs
from .clock import parse_iso
from .service import Service
from .storage import AssetValue, Reading
from .validation import Invalid, check_value, clip, event_time_ms, typed

#: Custom data (any item type without a rule of its own): limits of its type and version, and the source
#: its drops are reported under in diagnostics (the type itself may be anything).
MAX_CUSTOM_TYPE = 255
MAX_CUSTOM_VERSION = 64
CUSTOM_SOURCE = "custom"


class Report:
    """Counts per request, turned into diagnostics messages."""

    def __init__(self, service: Service, agent_id: str, correlation_id: str) -> None:
        self.service = service
        self.agent_id = agent_id
        self.correlation_id = correlation_id
        self.drops: Counter[tuple[str, str]] = Counter()
        self.stored: Counter[str] = Counter()

    def drop(self, source: str, reason: str, n: int = 1) -> None:
        self.drops[(source, reason)] += n

    def write(self) -> None:
        now = self.service.clock.now_ms()
        st = self.service.storage
        for (source, reason), n in sorted(self.drops.items()):
            msg = reason if n == 1 else f"{reason} ({n} values)"
            st.add_diagnostic(self.agent_id, self.correlation_id, "ERROR", msg, source, "DROPPED", now)
        if self.stored:
            parts = ", ".join(f"{n} {k}" for k, n in sorted(self.stored.items()))
            st.add_diagnostic(
                self.agent_id, self.correlation_id, "INFO", "stored " + parts, "exchange", "FINISHED", now
            )


def save_blob(service: Service, data: bytes) -> tuple[str, str]:
    """Write file content next to the database; returns (blob name, sha256)."""
    name = uuid.uuid4().hex + ".bin"
    path = service.files_dir / name
    with open(path, "wb") as f:
        f.write(data)
    return name, hashlib.sha256(data).hexdigest()


def remove_blob(service: Service, name: str | None) -> None:
    if name:
        try:
            os.unlink(service.files_dir / name)
        except OSError:
            pass


def store_file(
    service: Service,
    agent_id: str,
    entity_id: str,
    path: str,
    blob: str,
    size: int,
    sha: str,
    content_type: str,
    description: str,
    ts_ms: int,
    source: str,
    details: dict[str, Any],
) -> int:
    """Insert or replace the file at (entity, path); returns its new etag."""
    st = service.storage
    with st.tx():
        old = st.file(entity_id, path)
        etag = old["etag"] + 1 if old else 0
        st.upsert_file(
            {
                "agent_id": agent_id,
                "entity_id": entity_id,
                "path": path,
                "size": size,
                "sha256": sha,
                "etag": etag,
                "content_type": content_type,
                "description": description,
                "ts_ms": ts_ms,
                "source": source,
                "details": json.dumps(details),
                "blob": blob,
                "received_ms": service.clock.now_ms(),
            }
        )
    if old and old["blob"] != blob:
        remove_blob(service, old["blob"])
    return etag


def ingest(service: Service, agent: dict[str, Any], items: list[Any], correlation_id: str) -> Report:
    """Store the items of one exchange request; returns the report (already written to diagnostics).

    Each item goes to the rule of its payload type (RULES), anything else to the custom-data rule. A rule
    that raises Invalid drops the item, with the reason in diagnostics under the rule's source name.
    """
    report = Report(service, agent["id"], correlation_id)
    for index, item in enumerate(items):
        kind = item.payload_type
        rule = RULES.get(kind)
        source = str(kind) if rule is not None else CUSTOM_SOURCE
        try:
            (rule or CUSTOM_RULE)(service, agent, item, index, report)
        except Invalid as exc:
            report.drop(source, f"item {index + 1}: {exc}")
    report.write()
    return report


def _time_series(service: Service, agent: dict[str, Any], item: Any, index: int, report: Report) -> None:
    st = service.storage
    details = item.details or {}
    config_id, points = configs.dsc_points(st, agent["id"])
    sent_config = details.get("configurationId")
    data = item.parsed if isinstance(item.parsed, list) else []
    total = sum(len(e.get("values", [])) for e in data if isinstance(e, dict))
    if config_id is None:
        report.drop("standardTimeSeries", "no data source configuration stored for this agent", total)
        return
    if sent_config != config_id:
        report.drop("standardTimeSeries", f"unknown configurationId {str(sent_config)[:64]!r}", total)
        return
    now = service.clock.now_ms()
    readings: list[Reading] = []
    asset_rows: list[AssetValue] = []
    count = 0

    def flush() -> None:
        # Small batches keep the row lists (on top of the parsed JSON) from doubling the memory of a big body.
        st.upsert_readings(readings)
        st.upsert_asset_values(asset_rows)
        readings.clear()
        asset_rows.clear()

    with st.tx():
        _ts_rows(service, agent, data, points, report, now, readings, asset_rows, flush)
        count = report.stored["time series value(s)"]
        flush()
    if not count:
        report.stored.pop("time series value(s)", None)


def _ts_rows(
    service: Service,
    agent: dict[str, Any],
    data: list[Any],
    points: dict[str, dict[str, Any]],
    report: Report,
    now: int,
    readings: list[Reading],
    asset_rows: list[AssetValue],
    flush: Any,
) -> None:
    st = service.storage
    mapping_cache: dict[str, list[dict[str, Any]]] = {}
    for element in data:
        try:
            ts_ms = parse_iso(element["timestamp"])
        except (ValueError, KeyError, TypeError):
            report.drop(
                "standardTimeSeries",
                "bad timestamp {!r}".format(str(element.get("timestamp"))[:40]),
                len(element.get("values", [])),
            )
            continue
        for v in element.get("values", []):
            dp_id = v.get("dataPointId")
            value = v.get("value")
            quality = v.get("qualityCode", "0")
            dp = points.get(dp_id)
            if dp is None:
                report.drop("standardTimeSeries", f"unknown dataPointId {str(dp_id)[:64]!r}")
                continue
            if not isinstance(value, str):
                report.drop("standardTimeSeries", f"value of {dp_id!r} is not a string")
                continue
            reason = check_value(dp["type"], value)
            if reason:
                report.drop("standardTimeSeries", f"data point {dp_id!r}: {reason}")
                continue
            maps = mapping_cache.get(dp_id)
            if maps is None:
                maps = mapping_cache[dp_id] = [
                    m
                    for m in st.mappings_of_point(agent["id"], dp_id)
                    if json.loads(m["validity"])["status"] == "VALID"
                ]
            if not maps and service.settings.require_mapping:
                report.drop("standardTimeSeries", f"data point {dp_id!r} is not mapped to an asset property")
                continue
            readings.append(Reading(agent["id"], dp_id, ts_ms, value, str(quality), now))
            report.stored["time series value(s)"] += 1
            for m in maps:
                asset_rows.append(
                    AssetValue(
                        m["entity_id"],
                        m["property_set"],
                        m["property"],
                        ts_ms,
                        json.dumps(typed(dp["type"], value)),
                        str(quality),
                    )
                )
            if len(readings) >= 2000:
                flush()


def _events(service: Service, agent: dict[str, Any], item: Any, index: int, report: Report) -> None:
    data = item.parsed if isinstance(item.parsed, list) else []
    now = service.clock.now_ms()
    with service.storage.tx():
        for i, event in enumerate(data):
            # The parser checked every event against validation.check_events (a 400 otherwise).
            stored = service.storage.upsert_event(
                {
                    "id": event["id"],
                    "agent_id": agent["id"],
                    "entity_id": agent["entity_id"],
                    "source": "exchange",
                    "ts_ms": event_time_ms(event),
                    "severity": event["severity"],
                    "description": event.get("description") or "",
                    "body": json.dumps(event),
                    "received_ms": now,
                }
            )
            if not stored:
                eid = str(event["id"])[:64]
                report.drop("businessEvent", f"event[{i}]: id {eid!r} is another agent's event")
                continue
            report.stored["event(s)"] += 1


def _file(service: Service, agent: dict[str, Any], item: Any, index: int, report: Report) -> None:
    details = item.details or {}
    name = details.get("fileName")
    if not isinstance(name, str) or not name or len(name) > 1024:
        raise Invalid("file item needs details.fileName")
    created = details.get("creationDate")
    try:
        ts_ms = parse_iso(created) if created is not None else service.clock.now_ms()
    except ValueError as exc:
        raise Invalid(f"file {name[:64]!r}: creationDate {exc}") from exc
    payload = bytes(item.payload)
    blob, sha = save_blob(service, payload)
    store_file(
        service,
        agent["id"],
        agent["entity_id"],
        name,
        blob,
        len(payload),
        sha,
        str(details.get("fileType") or item.content_type or "application/octet-stream"),
        "",
        ts_ms,
        "exchange",
        details,
    )
    report.stored["file(s)"] += 1


def _dsc(service: Service, agent: dict[str, Any], item: Any, index: int, report: Report) -> None:
    # Stored like a PUT without If-Match; a DSC that breaks a rule is dropped (Invalid, by ingest).
    configs.apply_dsc(service.storage, agent["id"], item.parsed, service.clock.now_ms(), None)
    report.stored["dataSourceConfiguration"] += 1


def _custom(service: Service, agent: dict[str, Any], item: Any, index: int, report: Report) -> None:
    """Data of custom data types for custom handling: any type and version, optional details, any
    content type, the payload kept byte for byte."""
    type_, version, details = item.payload_type, item.payload_version, item.details
    if not isinstance(type_, str) or not 0 < len(type_) <= MAX_CUSTOM_TYPE:
        size = len(type_) if isinstance(type_, str) else 0
        raise Invalid(f"custom item type must have 1 to {MAX_CUSTOM_TYPE} characters, not {size}")
    if not isinstance(version, str) or not 0 < len(version) <= MAX_CUSTOM_VERSION:
        size = len(version) if isinstance(version, str) else 0
        raise Invalid(
            f"custom item {clip(type_)!r}: version must have 1 to {MAX_CUSTOM_VERSION} characters, not {size}"
        )
    if details is None:
        details = {}
    elif not isinstance(details, dict):
        raise Invalid(f"custom item {clip(type_)!r}: details must be an object")
    content_type = item.content_type if isinstance(item.content_type, str) else ""
    service.storage.add_custom(
        agent["id"], type_, version, details, content_type, bytes(item.payload), service.clock.now_ms()
    )
    report.stored["custom item(s)"] += 1


#: One rule per item type of the exchange (docs/protocol.md §D.2), all with one signature; an item of any
#: other type is custom data (`_custom`). A rule stores what fits, reports drops, raises Invalid to drop all.
Rule = Callable[[Service, dict[str, Any], Any, int, Report], None]
RULES: dict[str, Rule] = {
    "standardTimeSeries": _time_series,
    "businessEvent": _events,
    "file": _file,
    "dataSourceConfiguration": _dsc,
}
CUSTOM_RULE: Rule = _custom
