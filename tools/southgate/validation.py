"""Content rules of docs/protocol.md §D/§E: data source configurations, value types, events."""

from __future__ import annotations

import math
import re
from typing import Any

from .clock import parse_iso
from .multipart import JsonRefused, loads_untrusted

TYPES = ("INT", "LONG", "DOUBLE", "BOOLEAN", "STRING", "BIG_STRING", "TIMESTAMP")
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_DOUBLE_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


MAX_INT_DIGITS = 19  # more significant digits than any 64-bit integer has


class Invalid(ValueError):
    """Content that breaks a rule; the message names the rule and where."""


def parse_json(data: bytes | bytearray | str) -> Any:
    """Untrusted JSON (bodies, token segments) through southgate's one loader (multipart.loads_untrusted):
    Invalid with a short reason for text that is not UTF-8, not JSON, nested too deeply, holds NaN/Infinity,
    numbers with too many digits or a lone surrogate escape."""
    try:
        return loads_untrusted(data)
    except JsonRefused as e:
        raise Invalid(str(e)) from None


def _int_in_range(value: str, lo: int, hi: int) -> bool:
    """Range check of a decimal integer string without converting a huge one (int() refuses >4300 digits)."""
    digits = value.lstrip("+-").lstrip("0")
    if len(digits) > MAX_INT_DIGITS:
        return False
    return lo <= int(value) <= hi


def _str(
    obj: dict[str, Any],
    key: str,
    where: str,
    *,
    required: bool = True,
    empty_ok: bool = False,
    max_len: int = 255,
) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise Invalid(f"{where}: {key!r} is required")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise Invalid(f"{where}: {key!r} must be a string")
    if not value and not empty_ok:
        raise Invalid(f"{where}: {key!r} must not be empty")
    if len(value) > max_len:
        raise Invalid(f"{where}: {key!r} is longer than {max_len} characters")
    return value


def check_dsc(dsc: Any) -> dict[str, dict[str, Any]]:
    """Validate a data source configuration; returns {dataPointId: dataPoint}."""
    if not isinstance(dsc, dict):
        raise Invalid("data source configuration must be a JSON object")
    _str(dsc, "configurationId", "dataSourceConfiguration")
    sources = dsc.get("dataSources")
    if not isinstance(sources, list) or not sources:
        raise Invalid("dataSourceConfiguration: 'dataSources' must be a non-empty array")
    points: dict[str, dict[str, Any]] = {}
    for i, source in enumerate(sources):
        where = f"dataSources[{i}]"
        if not isinstance(source, dict):
            raise Invalid(f"{where} must be an object")
        _str(source, "name", where)
        _str(source, "description", where, required=False, empty_ok=True)
        dps = source.get("dataPoints")
        if not isinstance(dps, list):
            raise Invalid(f"{where}: 'dataPoints' must be an array")
        for j, dp in enumerate(dps):
            w = f"{where}.dataPoints[{j}]"
            if not isinstance(dp, dict):
                raise Invalid(f"{w} must be an object")
            dp_id = _str(dp, "id", w)
            _str(dp, "name", w)
            _str(dp, "description", w, required=False, empty_ok=True)
            type_ = _str(dp, "type", w)
            if type_ not in TYPES:
                raise Invalid("{}: type {!r} is not one of {}".format(w, type_, ", ".join(TYPES)))
            _str(dp, "unit", w, empty_ok=True)
            assert dp_id is not None
            if dp_id in points:
                raise Invalid(f"{w}: data point id {dp_id!r} is used twice (ids must be unique per agent)")
            points[dp_id] = dp
    return points


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


def check_exchange_event(event: Any, version: str, where: str) -> int:
    """Validate one businessEvent of an exchange item; returns its timestamp in ms."""
    if not isinstance(event, dict):
        raise Invalid(f"{where} must be an object")
    _str(event, "id", where)
    _str(event, "correlationId", where, required=False)
    ts = _str(event, "timestamp", where)
    assert ts is not None
    try:
        ts_ms = parse_iso(ts)
    except ValueError as exc:
        raise Invalid(f"{where}: timestamp {exc}") from exc
    sev = event.get("severity")
    allowed = (1, 2, 3) if version.startswith("1") else (20, 30, 40)
    if isinstance(sev, bool) or sev not in allowed:
        raise Invalid(f"{where}: severity must be one of {allowed} in version {version}")
    desc = event.get("description")
    if desc is not None and (not isinstance(desc, str) or len(desc) >= 256):
        raise Invalid(f"{where}: description must be a string shorter than 256 characters")
    if event.get("type") != "MindSphereStandardEvent":
        raise Invalid(f"{where}: type must be MindSphereStandardEvent")
    if event.get("version") not in (None, "1.0"):
        raise Invalid(f"{where}: version must be 1.0")
    details = event.get("details")
    if details is not None and not isinstance(details, dict):
        raise Invalid(f"{where}: details must be an object")
    return ts_ms
