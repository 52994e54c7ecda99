"""Event Management v3, the read side applications use: `GET /events` (filter, page, size, sort, history)
and `GET /events/{id}`, a tenant's events only (app tokens; the admin token reads every tenant). Events
arrive from agents through exchange (`businessEvent` items) or `POST /events` (routes_data).

What southgate follows, as the service documents it: a page holds 1-100 events (20 by default), newest
first; without a timestamp in the filter the last 7 days are read; without `history=true` only the latest
of the events sharing entity, type and correlation id is listed; an event sent without a type is a
MindSphereStandardEvent. The filter is a JSON object of `entityId`, `typeId`, `correlationId` and
`severity` (a value, or `{"eq": value}`) and `timestamp` (`before`, `after`, `between` with `[`/`(` and
`]`/`)` bounds); anything else is refused with a 400 that names it, not ignored.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .clock import iso_ms, parse_iso_span
from .errors import bad_request, not_found
from .routes_read import read_auth
from .storage import EventQuery
from .validation import STANDARD_EVENT_TYPE
from .webutil import base_url, bool_param, int_param, json_response, service

routes = web.RouteTableDef()
EVENTS = "/api/eventmanagement/v3/events"
DEFAULT_SIZE = 20
MAX_SIZE = 100
MAX_OFFSET = 1_000_000  # page x size: deeper pages are refused rather than scanned
DEFAULT_WINDOW_MS = 7 * 86400 * 1000
MAX_FILTER = 4096
_EQUALITY = {"entityId": str, "typeId": str, "correlationId": str, "severity": int}


def _utf8(text: str) -> bool:
    """False for text with lone surrogates (JSON escapes allow them; SQLite and UTF-8 do not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _equal(field: str, value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"eq"}:
            raise bad_request(f'filter {field}: only equality is supported (a value or {{"eq": value}})')
        value = value["eq"]
    kind = _EQUALITY[field]
    if kind is str:
        if not isinstance(value, str) or not 0 < len(value) <= 256 or not _utf8(value):
            raise bad_request(f"filter {field} must be a string of 1 to 256 characters")
    elif isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise bad_request(f"filter {field} must be an integer (32 bits)")
    return value


def _instant(text: Any, what: str) -> tuple[int, int]:
    """(floor, ceil) in ms: a bound past the millisecond counts on the side it falls."""
    if not isinstance(text, str):
        raise bad_request(f"filter timestamp.{what} must be an ISO 8601 time")
    try:
        return parse_iso_span(text.strip())
    except ValueError as exc:
        raise bad_request(f"filter timestamp.{what}: {exc}") from exc


def _time_range(spec: Any, now: int) -> tuple[int, int]:
    """(from, to), both inclusive, in ms."""
    if isinstance(spec, str):
        spec = {"eq": spec}
    if not isinstance(spec, dict) or not spec or set(spec) - {"before", "after", "between", "eq"}:
        raise bad_request(
            'filter timestamp must be {"before": t}, {"after": t}, {"between": "[t1,t2)"} or a time'
        )
    lo, hi = -(2**62), 2**62
    if "eq" in spec:
        floor, ceil = _instant(spec["eq"], "eq")
        lo, hi = ceil, floor  # empty when the time falls between two milliseconds
    if "after" in spec:
        lo = max(lo, _instant(spec["after"], "after")[0] + 1)
    if "before" in spec:
        hi = min(hi, _instant(spec["before"], "before")[1] - 1)
    if "between" in spec:
        text = spec["between"]
        parts = text[1:-1].split(",") if isinstance(text, str) and len(text) > 2 else []
        if len(parts) != 2 or text[0] not in "[(" or text[-1] not in ")]":
            raise bad_request(
                'filter timestamp.between must read "[t1,t2)" (brackets: [ ] inclusive, ( ) not)'
            )
        a, b = _instant(parts[0], "between"), _instant(parts[1], "between")
        lo = max(lo, a[0] + 1 if text[0] == "(" else a[1])
        hi = min(hi, b[1] - 1 if text[-1] == ")" else b[0])
    return lo, hi


def parse_filter(raw: str | None, now: int) -> dict[str, Any]:
    """The filter query parameter as EventQuery fields; a 400 naming what is wrong or unsupported."""
    doc: Any = {}
    if raw:
        if len(raw) > MAX_FILTER:
            raise bad_request(f"filter must be at most {MAX_FILTER} characters")
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise bad_request(
                'filter must be a JSON object, e.g. {"entityId": "...", "timestamp": {"after": t}}'
            )
    unknown = sorted(set(doc) - set(_EQUALITY) - {"timestamp"})
    if unknown:
        raise bad_request(
            f"filter field {unknown[0][:64]!r} is not supported here (entityId, typeId, correlationId, "
            "severity, timestamp)"
        )
    fields: dict[str, Any] = {}
    for field, name in (
        ("entityId", "entity_id"),
        ("typeId", "type_id"),
        ("correlationId", "correlation_id"),
        ("severity", "severity"),
    ):
        if field in doc:
            fields[name] = _equal(field, doc[field])
    if "timestamp" in doc:
        fields["from_ms"], fields["to_ms"] = _time_range(doc["timestamp"], now)
    else:
        fields["from_ms"], fields["to_ms"] = now - DEFAULT_WINDOW_MS, now
    return fields


def _sort(raw: str | None) -> bool:
    """True for newest first (the default)."""
    if raw is None or raw == "":
        return True
    field, _, direction = raw.partition(",")
    if field.strip() != "timestamp" or direction.strip().lower() not in ("", "asc", "desc"):
        raise bad_request('sort must be "timestamp,desc" or "timestamp,asc" (events sort by time here)')
    return direction.strip().lower() == "desc"


def event_json(row: dict[str, Any], base: str) -> dict[str, Any]:
    """An event as Event Management answers it (a MindSphereStandardEvent), from its stored row."""
    sent = json.loads(row["body"])
    type_id = sent.get("typeId")  # as storage.query_events reads it: a non-empty text, else the standard
    out: dict[str, Any] = {
        "id": row["id"],
        "typeId": type_id if isinstance(type_id, str) and type_id else STANDARD_EVENT_TYPE,
        "correlationId": sent.get("correlationId") or row["id"],
        "timestamp": iso_ms(row["ts_ms"]),
        "entityId": row["entity_id"],
        "etag": sent.get("etag", 0) if isinstance(sent.get("etag"), int) else 0,
        "severity": row["severity"],
        "description": row["description"],
        "code": sent.get("code") if isinstance(sent.get("code"), str) else "",
        "source": sent.get("source") if isinstance(sent.get("source"), str) else "",
        "acknowledged": sent.get("acknowledged") is True,
    }
    if isinstance(sent.get("details"), dict):
        out["details"] = sent["details"]
    out["_links"] = {"self": {"href": f"{base}{EVENTS}/{quote(row['id'], safe='')}"}}
    return out


@routes.get(EVENTS)
async def get_events(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    svc = service(request)
    fields = parse_filter(request.query.get("filter"), svc.clock.now_ms())
    size = int_param(request, "size", DEFAULT_SIZE, 1, MAX_SIZE)
    number = int_param(request, "page", 0, 0, MAX_OFFSET // size)
    descending = _sort(request.query.get("sort"))
    history = bool_param(request, "history")
    bool_param(request, "includeShared")  # southgate shares no events between tenants
    query = EventQuery(
        tenant, history=history, descending=descending, offset=number * size, limit=size, **fields
    )
    total, rows = await asyncio.to_thread(svc.storage.query_events, query, STANDARD_EVENT_TYPE)
    base = base_url(request)
    pages = math.ceil(total / size)

    def link(n: int) -> dict[str, str]:
        params = dict(request.query)
        params.update({"page": str(n), "size": str(size)})
        return {"href": f"{base}{EVENTS}?{urlencode(params)}"}

    links = {"self": link(number), "first": link(0), "last": link(max(0, pages - 1))}
    if number + 1 < pages:
        links["next"] = link(number + 1)
    if number > 0:
        links["prev"] = link(number - 1)
    body: dict[str, Any] = {}
    if rows:  # HAL leaves the embedded list out of an empty page
        body["_embedded"] = {"events": [event_json(r, base) for r in rows]}
    body["_links"] = links
    body["page"] = {"size": size, "totalElements": total, "totalPages": pages, "number": number}
    return json_response(body)


@routes.get(EVENTS + "/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    tenant = read_auth(request)
    bool_param(request, "includeShared")
    event_id = request.match_info["event_id"]
    row = await asyncio.to_thread(service(request).storage.event_in_tenant, event_id[:256], tenant)
    if row is None:  # another tenant's event is as absent as one that never was
        raise not_found(f"no event {event_id[:64]!r}")
    return json_response(event_json(row, base_url(request)))
