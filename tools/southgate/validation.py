"""The payload rules of docs/protocol.md §D/§E in one place: exchange items (time series, events, data
source configurations), the Event Management API's events, value types, and the loader for untrusted JSON.

The multipart parser applies the structural rules to an exchange body (a 400 names the first broken one),
the DSC endpoint the same DSC rules, ingest the value rules (values that do not fit are dropped, §D.4).
Adding an item type: its rule here, its storage in ingest.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
from typing import Any

from .clock import parse_iso

#: Data point types (§E.1), in the protocol's order.
TYPES = ("INT", "LONG", "DOUBLE", "BOOLEAN", "STRING", "BIG_STRING", "TIMESTAMP")
#: Item types whose JSON payload southgate decodes and checks, with the versions it knows (§D.2 table).
JSON_TYPES: dict[str, tuple[str, ...]] = {
    "standardTimeSeries": ("1.0",),
    "businessEvent": ("1.0", "2.0"),
    "dataSourceConfiguration": ("1.0",),
}
#: Every item type with known versions; an unknown version of one of them is refused (400).
KNOWN_VERSIONS: dict[str, tuple[str, ...]] = {**JSON_TYPES, "file": ("1.0",)}
#: Event severities per businessEvent version (§D.2): error, warning, information.
SEVERITIES = {"1.0": (1, 2, 3), "2.0": (20, 30, 40)}
#: The Event Management API (Node's PostEvent) uses the severities of businessEvent 2.0; 20 when omitted.
API_SEVERITY_DEFAULT = 20
STANDARD_EVENT_TYPE = "com.siemens.mindsphere.eventmgmt.event.type.MindSphereStandardEvent"
MAX_TEXT = 255  # names, ids, descriptions: at most this many characters (descriptions "below 256", §D.2)

_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_DOUBLE_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_MEDIA_TYPE = re.compile(r"[\x20-\x7e]{0,255}\Z")  # a file item's fileType: it becomes a Content-Type header
_ISO_RE = re.compile(r"(\d{4}-\d{2}-\d{2})T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.(\d{1,9}))?Z\Z")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
MAX_INT_DIGITS = 19  # more significant digits than any 64-bit integer has
TS_HINT = "must be an ISO 8601 UTC timestamp like 2024-05-01T12:00:00.000Z"


class Invalid(ValueError):
    """Content that breaks a rule: `msg` says which, `path` where ("" for the whole document)."""

    def __init__(self, msg: str, path: str = "") -> None:
        super().__init__(f"{path}: {msg}" if path else msg)
        self.path = path
        self.msg = msg


# untrusted JSON -------------------------------------------------------------------------------------------
class JsonRefused(ValueError):
    """Untrusted JSON southgate will not take; the message is the reason. utf8: it was not even UTF-8."""

    def __init__(self, reason: str, utf8: bool = True) -> None:
        super().__init__(reason)
        self.utf8 = utf8


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(text: str, value: Any) -> bool:
    """True if JSON text decoded to value holds a lone surrogate escape (a \\ud800 without its pair): not
    Unicode text, and no store or log can encode it. Only walks the value when the text has such escapes."""
    if not _SURROGATE_ESCAPE.search(text):
        return False
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def loads_untrusted(data: bytes | bytearray | str) -> Any:
    """The one JSON loader for untrusted input (bodies, meta and payload parts, token segments): JsonRefused
    for text that is not UTF-8, not JSON, nested too deeply, holds NaN/Infinity, a number with too many
    digits or a lone surrogate escape."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonRefused(f"not UTF-8 (byte {e.start})", utf8=False) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise JsonRefused("nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, the int digit limit of Python 3.11+
        if "integer string conversion" in str(e):
            raise JsonRefused("a number has too many digits") from None
        raise JsonRefused(str(e)[:120]) from None
    if _lone_surrogate(text, value):
        raise JsonRefused("a lone surrogate escape: not Unicode text")
    return value


def parse_json(data: bytes | bytearray | str) -> Any:
    """Untrusted JSON through loads_untrusted, refusals as Invalid with a short reason."""
    try:
        return loads_untrusted(data)
    except JsonRefused as e:
        raise Invalid(str(e)) from None


# small rules ------------------------------------------------------------------------------------------------
def clip(s: str, limit: int = 60) -> str:
    return s if len(s) <= limit else s[:limit] + "..."


def iso_key(value: Any) -> str | None:
    """Canonical form of a ``YYYY-MM-DDTHH:MM:SS[.fraction]Z`` timestamp (equal instants, equal keys), or
    None if ``value`` is not one. The usual millisecond form is its own key, so no new string is kept."""
    if not isinstance(value, str):
        return None
    m = _ISO_RE.match(value)
    if not m or not _valid_date(m.group(1)):
        return None
    frac = m.group(2)
    if frac is not None and len(frac) == 3:
        return value
    digits = (frac or "").ljust(9, "0")
    return value[:19] + "." + digits[:3] + digits[3:].rstrip("0") + "Z"


@functools.lru_cache(maxsize=4096)
def _valid_date(text: str) -> bool:
    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _string(
    obj: dict[str, Any], key: str, path: str, *, empty: bool = False, optional: bool = False
) -> str | None:
    """obj[key] as a string of at most MAX_TEXT characters (non-empty unless `empty`); None if optional and
    absent."""
    if key not in obj:
        if optional:
            return None
        raise Invalid(f"{key!r} missing", path)
    v = obj[key]
    where = f"{path}.{key}" if path else key
    if not isinstance(v, str):
        raise Invalid(f"must be a string, got {clip(json.dumps(v))}", where)
    if not empty and not v:
        raise Invalid("must not be empty", where)
    if len(v) > MAX_TEXT:
        raise Invalid(f"must be shorter than {MAX_TEXT + 1} characters (has {len(v)})", where)
    return v


def _int_in_range(value: str, lo: int, hi: int) -> bool:
    """Range check of a decimal integer string without converting a huge one (int() refuses >4300 digits)."""
    digits = value.lstrip("+-").lstrip("0")
    if len(digits) > MAX_INT_DIGITS:
        return False
    return lo <= int(value) <= hi


# values (§D.4) ------------------------------------------------------------------------------------------
def check_value(type_: str, value: str) -> str | None:
    """None when `value` (a string, as sent) fits `type_`; otherwise the reason."""
    if type_ in ("INT", "LONG"):
        if not _INT_RE.match(value):
            return f"value {value[:40]!r} is not an integer ({type_})"
        lo, hi = INT32 if type_ == "INT" else INT64
        if not _int_in_range(value, lo, hi):
            return f"value {value[:40]!r} is out of range for {type_}"
        return None
    if type_ == "DOUBLE":
        if not _DOUBLE_RE.match(value):
            return f"value {value[:40]!r} is not a number (DOUBLE)"
        if not math.isfinite(float(value)):
            return f"value {value[:40]!r} is out of range for DOUBLE"
        return None
    if type_ == "BOOLEAN":
        if value not in ("true", "false"):
            return f"value {value[:40]!r} is not true or false (BOOLEAN)"
        return None
    if type_ == "TIMESTAMP":
        try:
            parse_iso(value)
        except ValueError:
            return f"value {value[:40]!r} is not an ISO 8601 timestamp (TIMESTAMP)"
        return None
    if type_ == "STRING" and len(value) > 255:
        return "value is longer than 255 characters (STRING; use BIG_STRING)"
    return None


def typed(type_: str, value: str) -> Any:
    """The JSON value an IoT Time Series read returns for a stored string value."""
    if type_ in ("INT", "LONG"):
        return int(value)
    if type_ == "DOUBLE":
        return float(value)
    if type_ == "BOOLEAN":
        return value == "true"
    return value


# standardTimeSeries (§D.2) --------------------------------------------------------------------------------
def check_timeseries(doc: Any) -> None:
    """[{timestamp, values: [{dataPointId, value, qualityCode}]}], each data point once per instant."""
    if not isinstance(doc, list):
        raise Invalid("must be a JSON array of {timestamp, values}")
    first: dict[str, int] = {}  # timestamp key -> index of the first element with it
    repeated: dict[str, set[str]] = {}  # data point ids seen so far at timestamps that occur more than once
    for k, rec in enumerate(doc):
        if type(rec) is not dict:
            raise Invalid("must be an object {timestamp, values}", f"[{k}]")
        key = iso_key(rec.get("timestamp"))
        if key is None:
            raise Invalid(TS_HINT if "timestamp" in rec else "missing", f"[{k}].timestamp")
        values = rec.get("values")
        if type(values) is not list:
            raise Invalid("must be an array" if "values" in rec else "missing", f"[{k}].values")
        ids: set[str] = set()
        for j, v in enumerate(values):
            # Fast path first: ~10^5 values per 10 MiB body.
            dp = v.get("dataPointId") if type(v) is dict else None
            if not (
                type(dp) is str and dp and type(v.get("value")) is str and type(v.get("qualityCode")) is str
            ):
                q = f"[{k}].values[{j}]"
                if not isinstance(v, dict):
                    raise Invalid("must be an object {dataPointId, value, qualityCode}", q)
                _check_raw_string(v, "dataPointId", q)
                _check_raw_string(v, "value", q, empty=True)
                _check_raw_string(v, "qualityCode", q, empty=True)
            assert isinstance(dp, str)
            if dp in ids:
                where = f"[{k}].values[{j}].dataPointId"
                raise Invalid(f"duplicate dataPointId {clip(dp)!r} at {rec['timestamp']}", where)
            ids.add(dp)
        if key not in first:
            first[key] = k
            continue
        # The same instant in another element: no data point twice across them either.
        earlier = repeated.get(key)
        if earlier is None:
            earlier = repeated[key] = {v["dataPointId"] for v in doc[first[key]]["values"]}
        for j, v in enumerate(values):
            if v["dataPointId"] in earlier:
                where = f"[{k}].values[{j}].dataPointId"
                raise Invalid(
                    f"duplicate dataPointId {clip(v['dataPointId'])!r} at {rec['timestamp']}", where
                )
        earlier |= ids


def _check_raw_string(obj: dict[str, Any], key: str, path: str, *, empty: bool = False) -> None:
    """A time series field: a string (values have no length limit here: the DSC type decides, §D.4)."""
    if key not in obj:
        raise Invalid(f"{key!r} missing", path)
    v = obj[key]
    if not isinstance(v, str):
        raise Invalid(f"must be a string, got {clip(json.dumps(v))}", f"{path}.{key}")
    if not empty and not v:
        raise Invalid("must not be empty", f"{path}.{key}")


# businessEvent (§D.2) -------------------------------------------------------------------------------------
def check_events(doc: Any, version: str) -> None:
    """[{id, correlationId?, timestamp, severity, description?, type, version, details?}] of one version."""
    if not isinstance(doc, list):
        raise Invalid("must be a JSON array of events")
    allowed = SEVERITIES[version]
    for k, ev in enumerate(doc):
        p = f"[{k}]"
        if not isinstance(ev, dict):
            raise Invalid("must be an object", p)
        if "timestamp" not in ev:
            raise Invalid("missing", p + ".timestamp")
        if iso_key(ev["timestamp"]) is None:
            raise Invalid(TS_HINT, p + ".timestamp")
        if "severity" not in ev:
            raise Invalid("missing", p + ".severity")
        sev = ev["severity"]
        if isinstance(sev, bool) or not isinstance(sev, int) or sev not in allowed:
            one_of = "/".join(str(a) for a in allowed)
            raise Invalid(
                f"must be one of {one_of} for businessEvent version {version}, got {clip(json.dumps(sev))}",
                p + ".severity",
            )
        if _string(ev, "type", p) != "MindSphereStandardEvent":
            raise Invalid(f"must be MindSphereStandardEvent, got {clip(json.dumps(ev['type']))}", p + ".type")
        if _string(ev, "version", p) != "1.0":
            raise Invalid(f"must be 1.0, got {clip(json.dumps(ev['version']))}", p + ".version")
        _string(ev, "id", p)
        _string(ev, "correlationId", p, optional=True)
        _string(ev, "description", p, empty=True, optional=True)
        if "details" in ev and not isinstance(ev["details"], dict):
            raise Invalid("must be an object", p + ".details")


def event_time_ms(event: dict[str, Any]) -> int:
    """The Unix milliseconds of an event that passed check_events."""
    return parse_iso(event["timestamp"])


def check_api_event(event: Any) -> tuple[int, int, str]:
    """An Event Management API event (Node's PostEvent): the standard event type only, its fields as in
    businessEvent 2.0 (severities, description length), a timestamp with a zone; returns (ts_ms, severity,
    description). The caller checks entityId (it needs the tenant)."""
    if not isinstance(event, dict):
        raise Invalid("event must be a JSON object")
    try:
        ts_ms = parse_iso(event.get("timestamp"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise Invalid(str(exc), "timestamp") from None
    severity = event.get("severity", API_SEVERITY_DEFAULT)
    allowed = SEVERITIES["2.0"]
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in allowed:
        raise Invalid(
            f"must be one of {'/'.join(map(str, allowed))} (error, warning, information)", "severity"
        )
    desc = _string(event, "description", "", empty=True, optional=True) or ""
    if event.get("typeId", STANDARD_EVENT_TYPE) != STANDARD_EVENT_TYPE:
        raise Invalid(f"only the standard event type {STANDARD_EVENT_TYPE} is known here", "typeId")
    for key in ("source", "sourceType", "sourceId", "code", "correlationId"):
        _string(event, key, "", empty=True, optional=True)
    if "acknowledged" in event and not isinstance(event["acknowledged"], bool):
        raise Invalid("must be true or false", "acknowledged")
    return ts_ms, severity, desc


# dataSourceConfiguration (§E.1) -----------------------------------------------------------------------------
def check_dsc(doc: Any) -> dict[str, dict[str, Any]]:
    """A data source configuration in its full form; returns {dataPointId: dataPoint}."""
    if not isinstance(doc, dict):
        raise Invalid("must be a JSON object {configurationId, dataSources}")
    _string(doc, "configurationId", "")
    sources = doc.get("dataSources")
    if not isinstance(sources, list):
        raise Invalid("must be an array" if "dataSources" in doc else "missing", "dataSources")
    if not sources:
        raise Invalid("must not be empty", "dataSources")
    points: dict[str, dict[str, Any]] = {}
    for k, ds in enumerate(sources):
        p = f"dataSources[{k}]"
        if not isinstance(ds, dict):
            raise Invalid("must be an object", p)
        _string(ds, "name", p)
        _string(ds, "description", p, empty=True, optional=True)
        if "customData" in ds and not isinstance(ds["customData"], dict):
            raise Invalid("must be an object", p + ".customData")
        dps = ds.get("dataPoints")
        if not isinstance(dps, list):
            raise Invalid("must be an array" if "dataPoints" in ds else "missing", p + ".dataPoints")
        for j, dp in enumerate(dps):
            q = f"{p}.dataPoints[{j}]"
            if not isinstance(dp, dict):
                raise Invalid("must be an object", q)
            dp_id = _string(dp, "id", q)
            _string(dp, "name", q)
            _string(dp, "description", q, empty=True, optional=True)
            _string(dp, "unit", q, empty=True)
            if dp.get("type") not in TYPES:
                got = clip(json.dumps(dp.get("type")))
                raise Invalid(f"must be one of {', '.join(TYPES)}, got {got}", q + ".type")
            if "customData" in dp and not isinstance(dp["customData"], dict):
                raise Invalid("must be an object", q + ".customData")
            assert dp_id is not None
            if dp_id in points:
                raise Invalid(f"duplicate data point id {clip(dp_id)!r}", q + ".id")
            points[dp_id] = dp
    return points


# exchange items: what each standard item type requires of its meta details and its payload ---------------
def check_item_details(ptype: str, details: dict[str, Any]) -> None:
    """The meta part's payload.details a standard item type requires (custom items: anything)."""
    if ptype == "standardTimeSeries":
        if not isinstance(details.get("configurationId"), str):
            raise Invalid('"payload.details.configurationId" must be a string for standardTimeSeries')
    elif ptype == "file":
        name = details.get("fileName")
        if not isinstance(name, str) or not name:
            raise Invalid('"payload.details.fileName" must be a non-empty string for a file item')
        if iso_key(details.get("creationDate")) is None:
            raise Invalid(
                '"payload.details.creationDate" must be an ISO 8601 UTC timestamp'
                " like 2024-05-01T12:00:00.000Z"
            )
        ftype = details.get("fileType", "")
        if not isinstance(ftype, str) or not _MEDIA_TYPE.match(ftype):
            raise Invalid('"payload.details.fileType" must be a media type like "text/csv" (printable ASCII)')


def check_item_payload(ptype: str, version: str, parsed: Any) -> None:
    """The JSON payload of a standard JSON item type (JSON_TYPES)."""
    if ptype == "standardTimeSeries":
        check_timeseries(parsed)
    elif ptype == "businessEvent":
        check_events(parsed, version)
    else:
        check_dsc(parsed)
