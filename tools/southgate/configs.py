"""Data source configurations and data point mappings (docs/protocol.md §E), shared by the DSC endpoint,
the exchange's dataSourceConfiguration items and the mapping endpoints."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .storage import Storage
from .validation import check_dsc


def dsc_points(storage: Storage, agent_id: str) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(configurationId, {dataPointId: dataPoint}) of the agent's stored DSC, or (None, {})."""
    row = storage.dsc(agent_id)
    if row is None:
        return None, {}
    body = json.loads(row["body"])
    points = {dp["id"]: dp for src in body["dataSources"] for dp in src.get("dataPoints", [])}
    return body["configurationId"], points


def dsc_json(row: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(row["body"])
    out = {"id": row["id"], "eTag": str(row["etag"])}
    out.update(body)
    out["id"], out["eTag"] = row["id"], str(row["etag"])
    return out


def apply_dsc(storage: Storage, agent_id: str, dsc: Any, now_ms: int, if_match: str | None) -> dict[str, Any]:
    """Validate and store a DSC (Invalid on bad content, ValueError('etag') on mismatch); returns its JSON.

    `if_match` None means "no precondition" (the exchange path); the PUT endpoint passes the header.
    Mappings with keepMapping get their validity recomputed; the others are deleted (§E).
    """
    check_dsc(dsc)
    body = {k: v for k, v in dsc.items() if k not in ("id", "eTag")}
    with storage.tx():
        row = storage.dsc(agent_id)
        current = row["etag"] if row else None
        if if_match is not None:
            wanted = if_match.strip().strip('"')
            if wanted.startswith("W/"):
                wanted = wanted[2:].strip('"')
            ok = wanted == "*" or (str(current) == wanted if current is not None else wanted == "0")
            if not ok:
                raise ValueError("etag")
        new_etag = (current or 0) + 1
        dsc_id = row["id"] if row else uuid.uuid4().hex
        storage.put_dsc(agent_id, dsc_id, new_etag, body, now_ms)
        points = {dp["id"]: dp for src in body["dataSources"] for dp in src.get("dataPoints", [])}
        for m in storage.mappings(agent_id):
            if m["keep"]:
                storage.set_mapping_validity(m["id"], validity(storage, m, points))
            else:
                storage.delete_mapping(m["id"])
        stored = storage.dsc(agent_id)
    assert stored is not None
    return dsc_json(stored)


def validity(storage: Storage, mapping: dict[str, Any], points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    reasons = []
    dp = points.get(mapping["data_point_id"])
    prop = storage.prop(mapping["entity_id"], mapping["property_set"], mapping["property"])
    if dp is None:
        reasons.append("MISSING_DATAPOINT")
    elif prop is not None:
        if dp.get("type") != prop["type"]:
            reasons.append("TYPE_MISMATCH")
        if (dp.get("unit") or "") != prop["unit"]:
            reasons.append("UNIT_MISMATCH")
    if prop is None:
        reasons.append("MISSING_PROPERTY")
    return {"status": "INVALID" if reasons else "VALID", "reasons": reasons}


def mapping_json(storage: Storage, m: dict[str, Any], points: dict[str, dict[str, Any]]) -> dict[str, Any]:
    dp = points.get(m["data_point_id"]) or {}
    prop = storage.prop(m["entity_id"], m["property_set"], m["property"]) or {}
    return {
        "id": m["id"],
        "agentId": m["agent_id"],
        "dataPointId": m["data_point_id"],
        "dataPointUnit": dp.get("unit", ""),
        "dataPointType": dp.get("type", ""),
        "entityId": m["entity_id"],
        "propertySetName": m["property_set"],
        "propertyName": m["property"],
        "propertyUnit": prop.get("unit", ""),
        "propertyType": prop.get("type", ""),
        "qualityEnabled": True,
        "keepMapping": bool(m["keep"]),
        "validity": json.loads(m["validity"]),
    }
