"""IoT TS Bulk import jobs (docs/protocol.md §G.3): time series from JSON files put with IoT File Service.

Validated as the service documents it for performance assets (southgate's assets are all performance
assets): one asset/aspect per job, at most 100 files, each file a JSON array of records sorted by `_time`
whose first and last `_time` equal the file's `from` and `to`, all data of one UTC day and older than
30 minutes, every property a variable of the aspect with a value of its type. Any failure ends the job in
ERROR with the reasons, and nothing of it is imported.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, NamedTuple

from .clock import parse_iso
from .errors import bad_request
from .service import HEX32, Service
from .storage import AssetValue
from .validation import Invalid, check_value, parse_json

MAX_FILES = 100
MIN_AGE_MS = 30 * 60 * 1000
DAY_MS = 86400 * 1000
MAX_FILE_BYTES = 64 * 1024 * 1024
# A job's values are held until they are stored in one transaction: bounded, so one job cannot take the
# server's memory (100 files of 64 MiB would be tens of GB as rows).
MAX_JOB_BYTES = 64 * 1024 * 1024
MAX_JOB_VALUES = 200_000
MAX_REASONS = 10
_TASKS: set[asyncio.Task[None]] = set()  # running jobs, kept referenced until they end


class FileSpec(NamedTuple):
    """One file of an import job: its IoT File path and the [from, to] its records must span."""

    path: str
    from_ms: int
    to_ms: int


async def cancel_running() -> None:
    """Cancel the jobs still running and wait for them (the server shuts down; a cancelled job stays
    SUBMITTED in the database, as one cut by a crash would)."""
    tasks = list(_TASKS)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def check_request(body: Any) -> tuple[str, str, list[FileSpec]]:
    """The request's shape (400 when wrong): (entity, aspect, [(filePath, from_ms, to_ms)])."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise bad_request('body must be {"data": [{"entity", "propertySetName", "timeseriesFiles": [...]}]}')
    if len(body["data"]) != 1:
        raise bad_request("an import job takes exactly one asset-aspect combination (data must have 1 entry)")
    entry = body["data"][0]
    if not isinstance(entry, dict):
        raise bad_request("data[0] must be an object")
    entity, pset, files = entry.get("entity"), entry.get("propertySetName"), entry.get("timeseriesFiles")
    if not isinstance(entity, str) or not HEX32.match(entity):
        raise bad_request("data[0].entity must be 32 lowercase hex characters")
    if not isinstance(pset, str) or not pset or len(pset) > 128:
        raise bad_request("data[0].propertySetName is required")
    if not isinstance(files, list) or not files:
        raise bad_request("data[0].timeseriesFiles must list at least one file")
    if len(files) > MAX_FILES:
        raise bad_request(f"at most {MAX_FILES} files per import job ({len(files)} given)")
    out: list[FileSpec] = []
    for i, f in enumerate(files):
        where = f"timeseriesFiles[{i}]"
        if not isinstance(f, dict) or not isinstance(f.get("filePath"), str) or not f["filePath"]:
            raise bad_request(f"{where}.filePath is required")
        if len(f["filePath"]) > 1024:
            raise bad_request(f"{where}.filePath is longer than 1024 characters")
        try:
            lo, hi = parse_iso(f.get("from")), parse_iso(f.get("to"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise bad_request(f"{where}.from/to: {exc}") from exc
        if lo > hi:
            raise bad_request(f"{where}: from must not be after to")
        if any(f["filePath"] == seen.path for seen in out):
            raise bad_request(f"{where}.filePath names a file the job already lists")
        out.append(FileSpec(f["filePath"], lo, hi))
    return entity, pset, out


def start(svc: Service, job_id: str, entity: str, pset: str, files: list[FileSpec]) -> None:
    """Run a job in the background (the POST answers SUBMITTED at once, as the real service does)."""
    task = asyncio.get_running_loop().create_task(_run(svc, job_id, entity, pset, files))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _run(svc: Service, job_id: str, entity: str, pset: str, files: list[FileSpec]) -> None:
    st = svc.storage
    variables = {p["property"]: p["type"] for p in st.props(entity, pset)}
    blobs: list[tuple[FileSpec, str | None]] = []
    for spec in files:
        row = st.file(entity, spec.path)
        blobs.append((spec, None if row is None else str(svc.files_dir / row["blob"])))
    now = svc.clock.now_ms()
    try:
        rows, reasons = await asyncio.to_thread(_validate, entity, pset, blobs, variables, now)
    except Exception as exc:  # noqa: BLE001 - a job that breaks ends in ERROR, never silently
        rows, reasons = [], [f"internal error: {type(exc).__name__}"]
    if reasons:
        st.finish_import_job(job_id, "ERROR", "; ".join(reasons[:MAX_REASONS]), [], svc.clock.now_ms())
    else:
        await asyncio.to_thread(  # up to 100 files of rows in one transaction: off the event loop
            st.finish_import_job,
            job_id,
            "SUCCESS",
            f"imported {len(rows)} values from {len(files)} file(s)",
            rows,
            svc.clock.now_ms(),
        )


def _validate(
    entity: str,
    pset: str,
    blobs: list[tuple[FileSpec, str | None]],
    variables: dict[str, str],
    now_ms: int,
) -> tuple[list[AssetValue], list[str]]:
    """(rows to store, reasons it fails); reads and checks every file (runs off the event loop)."""
    rows: list[AssetValue] = []
    reasons: list[str] = []
    day: int | None = None
    total = 0
    for (path, lo, hi), blob in blobs:
        if total > MAX_JOB_BYTES:
            reasons.append(f"the job's files hold more than {MAX_JOB_BYTES} bytes: split it into jobs")
            break
        if blob is None:
            reasons.append(f"file {path[:200]!r} not found in IoT File Service for asset {entity}")
            continue
        try:
            with open(blob, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise Invalid(f"larger than {MAX_FILE_BYTES} bytes")
            total += len(data)
            records = parse_json(data)
            if not isinstance(records, list) or not records:
                raise Invalid("must be a non-empty JSON array of records")
            last = None
            for i, rec in enumerate(records):
                if len(rows) > MAX_JOB_VALUES:
                    raise Invalid(f"the job holds more than {MAX_JOB_VALUES} values: split it into jobs")
                ts = _record(rec, i, variables, entity, pset, rows)
                if last is not None and ts <= last:
                    raise Invalid(f"record {i}: _time is not after the previous one (sort ascending)")
                last = ts
                if ts > now_ms - MIN_AGE_MS:
                    raise Invalid(f"record {i}: data of performance assets must be older than 30 minutes")
                if day is None:
                    day = ts // DAY_MS
                elif ts // DAY_MS != day:
                    raise Invalid(f"record {i}: all data of a job must be of one (UTC) day")
            first = parse_iso(records[0]["_time"])
            if first != lo or last != hi:
                raise Invalid("its first and last _time must equal the job's from and to for it")
        except Invalid as exc:
            reasons.append(f"file {path[:200]!r}: {exc}")
        except OSError:
            reasons.append(f"file {path[:200]!r} could not be read")
    return rows, reasons


def _record(
    rec: Any,
    i: int,
    variables: dict[str, str],
    entity: str,
    pset: str,
    rows: list[AssetValue],
) -> int:
    if not isinstance(rec, dict):
        raise Invalid(f"record {i} is not an object")
    try:
        ts = parse_iso(rec.get("_time"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise Invalid(f"record {i}: _time {exc}") from exc
    for key, value in rec.items():
        if key == "_time" or key.endswith("_qc"):
            continue
        type_ = variables.get(key)
        if type_ is None:
            raise Invalid(f"record {i}: {key[:64]!r} is not a variable of aspect {pset!r}")
        text = _as_text(type_, value)
        reason = None if text is None else check_value(type_, text)
        if text is None or reason:
            raise Invalid(f"record {i}: {key}: {reason or f'value does not fit {type_}'}")
        qc = rec.get(key + "_qc", 0)
        if isinstance(qc, bool) or not isinstance(qc, int):
            raise Invalid(f"record {i}: {key}_qc must be an integer")
        rows.append(AssetValue(entity, pset, key, ts, json.dumps(value), str(qc)))
    return ts


def _as_text(type_: str, value: Any) -> str | None:
    """A JSON value as the exchange would have sent it (a string), or None when its JSON type is wrong."""
    if type_ == "BOOLEAN":
        return ("true" if value else "false") if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if type_ in ("INT", "LONG"):
        return str(value) if isinstance(value, int) else None
    if type_ == "DOUBLE":
        if isinstance(value, (int, float)) and math.isfinite(value):
            return repr(float(value))
        return None
    return value if isinstance(value, str) else None
