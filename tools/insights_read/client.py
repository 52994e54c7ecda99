"""A typed read client for the Insights Hub APIs applications use, on aiohttp.

It authenticates with app credentials through Token Manager (or takes a bearer token, e.g. southgate's admin
token), reads IoT Time Series v3 following the `Link: <...>; rel="next"` header page by page, reads IoT TS
Bulk v3 following `nextRecord`, puts files with IoT File Service, creates and polls IoT TS Bulk import
jobs, and reads Event Management v3 events following `_links.next`. The same code talks to southgate and
to Insights Hub: only the base URL and credentials differ.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

Record = dict[str, Any]
Time = str | datetime
T = TypeVar("T")
_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


def _seg(value: str) -> str:
    """One path segment of a URL (an id, an aspect name): a '/', '#' or '?' in it stays in it."""
    return quote(value, safe="")


class ReadError(RuntimeError):
    """A non-2xx answer: the status and the service's message (never a token or secret)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class AppCredentials:
    """What `southgate app create` writes (and Insights Hub's Developer Cockpit shows for an app)."""

    client_id: str
    client_secret: str
    tenant: str
    app_name: str
    app_version: str

    @classmethod
    def load(cls, path: str | Path) -> AppCredentials:
        doc = json.loads(Path(path).read_text())
        try:
            return cls(
                str(doc["clientId"]),
                str(doc["clientSecret"]),
                str(doc["tenant"]),
                str(doc["appName"]),
                str(doc["appVersion"]),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: app credentials need {exc.args[0]!r}") from None

    def __repr__(self) -> str:  # never show the secret
        return f"AppCredentials(client_id={self.client_id!r}, tenant={self.tenant!r}, app={self.app_name!r})"


def iso(t: Time) -> str:
    """ISO 8601 UTC with milliseconds, the form the APIs take."""
    if isinstance(t, str):
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class ReadClient:
    """`async with ReadClient(base_url, credentials=AppCredentials.load("app.json")) as c: ...`."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: AppCredentials | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if (credentials is None) == (token is None):
            raise ValueError("give either app credentials or a bearer token")
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._token = token
        self._token_exp = float("inf") if token else 0.0
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ReadClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # HTTP -----------------------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            # A next link names the gateway it came from; follow it on ours (same path and query).
            parts = urlsplit(path_or_url)
            return f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        return self.base_url + path_or_url

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[Any, dict[str, str]]:
        if self._session is None:
            raise RuntimeError("use ReadClient in 'async with'")
        hdrs = dict(headers or {})
        if auth:
            hdrs["Authorization"] = "Bearer " + await self.token()
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        async with self._session.request(
            method, self._url(path), data=data, headers=hdrs, ssl=self._ssl
        ) as r:
            raw = await r.read()
            answer_headers = {k: v for k, v in r.headers.items()}
            if r.status >= 300:
                raise ReadError(r.status, _message(raw))
            if not raw:
                return None, answer_headers
            if "json" in r.headers.get("Content-Type", ""):
                return json.loads(raw), answer_headers
            return raw, answer_headers

    async def token(self) -> str:
        """The bearer token: the given one, or a tenant token from Token Manager renewed before it expires."""
        if self._token is not None and time.time() < self._token_exp - 60:
            return self._token
        creds = self.credentials
        assert creds is not None
        basic = base64.b64encode(f"{creds.client_id}:{creds.client_secret}".encode()).decode()
        answer, _ = await self._request(
            "POST",
            "/api/technicaltokenmanager/v3/oauth/token",
            body={
                "appName": creds.app_name,
                "appVersion": creds.app_version,
                "hostTenant": creds.tenant,
                "userTenant": creds.tenant,
            },
            headers={"X-SPACE-AUTH-KEY": "Basic " + basic},
            auth=False,
        )
        self._token = str(answer["access_token"])
        self._token_exp = time.time() + float(answer.get("expires_in", 1800))
        return self._token

    # IoT Time Series v3 ---------------------------------------------------------------------------------
    async def timeseries_pages(
        self,
        entity: str,
        aspect: str,
        from_: Time,
        to: Time,
        *,
        limit: int | None = None,
        select: list[str] | None = None,
        sort: str = "asc",
    ) -> AsyncIterator[list[Record]]:
        """Pages of records in (from, to]: each request returns at most `limit` (<= 2000), the next page's
        URL comes in the `Link` header."""
        query: dict[str, str] = {"from": iso(from_), "to": iso(to)}
        if limit is not None:
            query["limit"] = str(limit)
        if select:
            query["select"] = ",".join(select)
        if sort != "asc":
            query["sort"] = sort
        url: str | None = f"/api/iottimeseries/v3/timeseries/{_seg(entity)}/{_seg(aspect)}?{urlencode(query)}"
        while url:
            records, headers = await self._request("GET", url)
            yield list(records or [])
            match = _LINK_RE.search(headers.get("Link", ""))
            url = match.group(1) if match else None

    async def timeseries(self, entity: str, aspect: str, from_: Time, to: Time, **kw: Any) -> list[Record]:
        """Every record in (from, to], all pages."""
        out: list[Record] = []
        async for page in self.timeseries_pages(entity, aspect, from_, to, **kw):
            out.extend(page)
        return out

    async def latest(self, entity: str, aspect: str, *, latest_value: bool = False) -> list[Record]:
        """The latest record (no range), or with `latest_value` each property's latest value."""
        query = "?latestValue=true" if latest_value else ""
        records, _ = await self._request(
            "GET", f"/api/iottimeseries/v3/timeseries/{_seg(entity)}/{_seg(aspect)}{query}"
        )
        return list(records or [])

    # IoT TS Bulk v3 ---------------------------------------------------------------------------------------
    async def bulk_timeseries(
        self, entity: str, aspect: str, from_: Time, to: Time, *, limit: int | None = None
    ) -> list[Record]:
        """Records in (from, to] (under 90 days), following `nextRecord`."""
        query = {"from": iso(from_), "to": iso(to)}
        if limit is not None:
            query["limit"] = str(limit)
        url: str | None = f"/api/iottsbulk/v3/timeseries/{_seg(entity)}/{_seg(aspect)}?{urlencode(query)}"
        out: list[Record] = []
        while url:
            answer, _ = await self._request("GET", url)
            out.extend(answer.get("records", []))
            url = answer.get("nextRecord") or None
        return out

    async def put_file(
        self, entity: str, path: str, content: bytes, content_type: str = "application/json"
    ) -> None:
        """Put a file with IoT File Service (e.g. the input of an import job); replaces an existing one."""
        await self._request(
            "PUT",
            f"/api/iotfile/v3/files/{_seg(entity)}/{quote(path, safe='/')}",
            data=content,
            headers={"Content-Type": "application/octet-stream", "type": content_type, "If-Match": "*"},
        )

    async def create_import_job(
        self, entity: str, aspect: str, files: list[dict[str, str]]
    ) -> dict[str, Any]:
        """Start an import job from files put before: files are {"filePath", "from", "to"}."""
        body = {"data": [{"entity": entity, "propertySetName": aspect, "timeseriesFiles": files}]}
        answer, _ = await self._request("POST", "/api/iottsbulk/v3/importJobs", body=body)
        return dict(answer)

    async def import_job(self, job_id: str) -> dict[str, Any]:
        answer, _ = await self._request("GET", f"/api/iottsbulk/v3/importJobs/{_seg(job_id)}")
        return dict(answer[0] if isinstance(answer, list) else answer)

    async def wait_import_job(
        self, job_id: str, timeout_s: float = 60.0, every_s: float = 0.5
    ) -> dict[str, Any]:
        """Poll a job until it is SUCCESS or ERROR (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = await self.import_job(job_id)
            if job.get("status") in ("SUCCESS", "ERROR"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"import job {job_id} still {job.get('status')} after {timeout_s:g} s")
            await asyncio.sleep(every_s)

    # Event Management v3 ----------------------------------------------------------------------------------
    async def events_pages(
        self,
        *,
        entity: str | None = None,
        from_: Time | None = None,
        to: Time | None = None,
        size: int = 100,
        newest_first: bool = True,
        history: bool = False,
        **filters: Any,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of events (at most `size`, 1-100, each), following `_links.next`. `from_`/`to` bound the
        time as (from, to] (the service's own default without them: the last 7 days); `filters` adds
        equality on typeId, correlationId or severity."""
        doc: dict[str, Any] = dict(filters)
        if entity is not None:
            doc["entityId"] = entity
        if from_ is not None and to is not None:
            doc["timestamp"] = {"between": f"({iso(from_)},{iso(to)}]"}
        elif from_ is not None:
            doc["timestamp"] = {"after": iso(from_)}
        elif to is not None:
            doc["timestamp"] = {"between": f"[1970-01-01T00:00:00.000Z,{iso(to)}]"}
        query = {"size": str(size), "sort": "timestamp," + ("desc" if newest_first else "asc")}
        if doc:
            query["filter"] = json.dumps(doc, separators=(",", ":"))
        if history:
            query["history"] = "true"
        url: str | None = f"/api/eventmanagement/v3/events?{urlencode(query)}"
        while url:
            answer, _ = await self._request("GET", url)
            yield list(((answer or {}).get("_embedded") or {}).get("events") or [])
            url = (((answer or {}).get("_links") or {}).get("next") or {}).get("href")

    async def events(self, **kw: Any) -> list[dict[str, Any]]:
        """Every event events_pages() finds, all pages."""
        out: list[dict[str, Any]] = []
        async for page in self.events_pages(**kw):
            out.extend(page)
        return out

    async def event(self, event_id: str) -> dict[str, Any]:
        answer, _ = await self._request("GET", f"/api/eventmanagement/v3/events/{_seg(event_id)}")
        return dict(answer)


def render_events(events: list[dict[str, Any]], fmt: str) -> str:
    """Events as json, or csv or a table: time, severity, entity, description, details (compact JSON)."""
    if fmt == "json":
        return json.dumps(events, indent=2)
    columns = ["timestamp", "severity", "entityId", "description", "details"]
    cells = [
        [str(e.get(c, "")) for c in columns[:-1]]
        + [json.dumps(e.get("details", {}), separators=(",", ":"), sort_keys=True)]
        for e in events
    ]
    return _table(columns, cells, fmt, "(no events)")


def _message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw[:200].decode(errors="replace")
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error_description") or doc.get("error") or doc)[:500]
    return str(doc)[:500]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run one of the client's coroutines from synchronous code (a command line)."""
    return asyncio.run(coro)


def render(records: list[Record], fmt: str) -> str:
    """Records as csv, json or a table: `_time`, then each property and its quality code."""
    if fmt == "json":
        return json.dumps(records, indent=2)
    props = sorted({k for r in records for k in r if k != "_time" and not k.endswith("_qc")})
    columns = ["_time"]
    for p in props:
        columns.append(p)
        if any(p + "_qc" in r for r in records):
            columns.append(p + "_qc")
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in records]
    return _table(columns, cells, fmt, "(no records)")


def _table(columns: list[str], cells: list[list[str]], fmt: str, empty: str) -> str:
    """Rows as csv, or as a table with a rule under its header (`empty` when there are none)."""
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buf.getvalue().rstrip("\n")
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if not cells:
        lines.append(empty)
    return "\n".join(lines)
