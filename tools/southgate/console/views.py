"""The console's pages and JSON: agents, one agent (charts, latest values, events, files, diagnostics,
faults), a tenant; the chart data, file downloads, static assets; login and logout.

Pages are rendered server-side with Jinja2 (autoescaped); the agent page's charts are drawn in the browser
by Plotly.js, served from the installed `plotly` package (nothing from a CDN: the console works offline).
Only fields meant for people are put in a page: never a client secret, an IAT or a token.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from aiohttp import web

from ..clock import iso_ms, parse_iso
from ..service import Service
from ..storage import NUMERIC, Storage
from ..webutil import SERVICE_KEY
from .auth import AUTH_KEY, COOKIE, is_admin_token, set_session_cookie

PREFIX = "/console"
HERE = Path(__file__).parent
SPANS_MS = {"1h": 3_600_000, "1d": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000}
RECENT_ROWS = 100
MAX_FORM_BYTES = 4096
MAX_WIDTH = 5000
MAX_SPAN_MS = 100 * 365 * 86_400_000
_AGENT_ID = re.compile(r"[0-9a-f]{32}\Z")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _when(ms: int | None) -> str:
    return "—" if ms is None else iso_ms(int(ms)).replace("T", " ").replace("Z", " UTC")


def _ago(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "never"
    return _duration(now_ms - int(ms)) + " ago" if now_ms >= ms else "in " + _duration(int(ms) - now_ms)


def _duration(ms: int) -> str:
    s = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


_env.filters["when"] = _when
_env.filters["size"] = _size
_env.globals["ago"] = _ago
_env.globals["prefix"] = PREFIX


def render(name: str, status: int = 200, **context: Any) -> web.Response:
    html = _env.get_template(name).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _svc(request: web.Request) -> Service:
    return request.config_dict[SERVICE_KEY]


def _db(request: web.Request) -> Storage:
    return _svc(request).storage


def not_found(what: str) -> web.Response:
    return render("message.html", status=404, title="Not found", message=what)


# login ------------------------------------------------------------------------------------------------
def login_page(request: web.Request, status: int = 200, message: str = "") -> web.Response:
    target = request.path_qs if request.path != f"{PREFIX}/login" else ""
    return render("login.html", title="Log in", status=status, message=message, next=_safe_next(target))


def _safe_next(target: str) -> str:
    """Only a console path may be where a login leads (no open redirect)."""
    printable = all(" " < c < "\x7f" for c in target)  # nothing for a header to choke on
    if printable and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


async def login_get(request: web.Request) -> web.Response:
    key = request.query.get("key")
    if key is None:
        return login_page(request)
    if not request.config_dict[AUTH_KEY].use_link_key(key):
        return login_page(request, 401, "That login link was used already or is not this server's.")
    # A page that moves on by itself: the navigation starts on this site, so the SameSite=Strict cookie goes
    # with it even when the link was opened from a terminal (a redirect would count as cross-site).
    target = _safe_next(request.query.get("next", ""))
    response = render("message.html", title="Logged in", message="Logged in.", refresh=target)
    set_session_cookie(request, response)
    return response


async def _login_form(request: web.Request) -> dict[str, str]:
    """The login form's fields: a small URL-encoded UTF-8 body, else a 4xx (never aiohttp's general form
    parser, which fails on hostile multipart bodies with a 500)."""
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise web.HTTPUnsupportedMediaType(text="the login form is application/x-www-form-urlencoded")
    if (request.content_length or 0) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, request.content_length or 0)
    body = await request.content.read(MAX_FORM_BYTES + 1)
    if len(body) > MAX_FORM_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_FORM_BYTES, len(body))
    try:
        pairs = parse_qsl(body.decode("utf-8"), max_num_fields=10, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="the login form is not URL-encoded UTF-8") from None
    return dict(pairs)


async def login_post(request: web.Request) -> web.Response:
    form = await _login_form(request)
    token = form.get("token")
    target = _safe_next(form.get("next") or "")
    if not isinstance(token, str) or not is_admin_token(request, token):
        return render(
            "login.html", title="Log in", status=401, message="That is not the admin token.", next=target
        )
    response = web.Response(status=303, headers={"Location": target})
    set_session_cookie(request, response)
    return response


async def logout(request: web.Request) -> web.Response:
    sid = request.cookies.get(COOKIE)
    if sid:
        request.config_dict[AUTH_KEY].close_session(sid)
    response = render("login.html", title="Log in", message="Logged out.", next=PREFIX + "/")
    response.del_cookie(COOKIE, path="/console")
    return response


# agents and tenants -----------------------------------------------------------------------------------
def _agent_row(agent: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """What the console shows of an agent: no secret, IAT or token hash ever leaves here."""
    expires = agent.get("secret_expires_s")
    return {
        "id": agent["id"],
        "name": agent["name"],
        "tenant": agent["tenant"],
        "entity_id": agent["entity_id"],
        "status": agent["status"],
        "status_since_ms": agent["status_since_ms"],
        "created_ms": agent["created_ms"],
        "last_seen_ms": agent.get("last_seen_ms"),
        "secret_expires_ms": int(expires) * 1000 if expires and agent["status"] == "ONBOARDED" else None,
        "readings": stats.get("readings", 0),
        "events": stats.get("events", 0),
        "files": stats.get("files", 0),
        "diagnostics": stats.get("diagnostics", 0),
        "last_diagnostic": stats.get("last_diagnostic"),
    }


async def _agent_rows(request: web.Request, tenant: str | None = None) -> list[dict[str, Any]]:
    svc = _svc(request)
    stats = await asyncio.to_thread(_db(request).agent_overview)
    agents = [a for a in svc.storage.agents() if tenant is None or a["tenant"] == tenant]
    return [_agent_row(a, stats.get(a["id"], {})) for a in agents]


def _tenants(svc: Service) -> list[str]:
    return sorted({str(a["tenant"]) for a in svc.storage.agents()})


async def agents_page(request: web.Request) -> web.Response:
    svc = _svc(request)
    rows = await _agent_rows(request)
    return render(
        "agents.html", title="Agents", agents=rows, tenants=_tenants(svc), now_ms=svc.clock.now_ms()
    )


async def tenant_page(request: web.Request) -> web.Response:
    svc = _svc(request)
    tenant = request.match_info["tenant"]
    if tenant not in _tenants(svc):
        return not_found("No agent of that tenant.")
    rows = await _agent_rows(request, tenant)
    entities: dict[str, dict[str, Any]] = {}
    for row in rows:
        entities.setdefault(row["entity_id"], {"aspects": set(), "agents": set()})["agents"].add(row["name"])
        for m in svc.storage.mappings(row["id"]):
            e = entities.setdefault(m["entity_id"], {"aspects": set(), "agents": set()})
            e["aspects"].add(m["property_set"])
            e["agents"].add(row["name"])
    assets = []
    for entity_id, e in sorted(entities.items()):
        asset = svc.storage.asset(entity_id)
        assets.append(
            {
                "entity_id": entity_id,
                "name": asset["name"] if asset else "—",
                "aspects": sorted(e["aspects"]),
                "agents": sorted(e["agents"]),
            }
        )
    totals = {k: sum(r[k] for r in rows) for k in ("readings", "events", "files", "diagnostics")}
    return render(
        "tenant.html",
        title=f"Tenant {tenant}",
        tenant=tenant,
        agents=rows,
        assets=assets,
        totals=totals,
        onboarded=sum(1 for r in rows if r["status"] == "ONBOARDED"),
        tenants=_tenants(svc),
        now_ms=svc.clock.now_ms(),
    )


# one agent --------------------------------------------------------------------------------------------
def _agent(request: web.Request) -> dict[str, Any] | None:
    agent_id = request.match_info["agent_id"]
    if not _AGENT_ID.match(agent_id):
        return None
    return _svc(request).storage.agent(agent_id)


def data_points(svc: Service, agent_id: str) -> dict[str, dict[str, Any]]:
    """The agent's data points from its DSC: id -> {name, type, unit, source}."""
    row = svc.storage.dsc(agent_id)
    out: dict[str, dict[str, Any]] = {}
    if row is None:
        return out
    try:
        body = json.loads(row["body"])
    except ValueError:
        return out
    for source in body.get("dataSources") or []:
        for dp in source.get("dataPoints") or []:
            if isinstance(dp, dict) and isinstance(dp.get("id"), str):
                out[dp["id"]] = {
                    "name": str(dp.get("name", dp["id"])),
                    "type": str(dp.get("type", "")),
                    "unit": str(dp.get("unit", "")),
                    "source": str(source.get("name", "")),
                }
    return out


def charts(svc: Service, agent_id: str) -> list[dict[str, Any]]:
    """One chart per aspect (asset + property set) the agent's data points are mapped to; numeric data
    points without a mapping get a chart of their own. Each trace is one data point."""
    points = data_points(svc, agent_id)
    by_aspect: dict[tuple[str, str], list[dict[str, Any]]] = {}
    mapped: set[str] = set()
    for m in svc.storage.mappings(agent_id):
        dp = points.get(m["data_point_id"])
        if dp is None or dp["type"] not in NUMERIC:
            continue
        mapped.add(m["data_point_id"])
        traces = by_aspect.setdefault((m["entity_id"], m["property_set"]), [])
        if all(t["id"] != m["data_point_id"] for t in traces):
            traces.append(
                {"id": m["data_point_id"], "name": m["property"], "type": dp["type"], "unit": dp["unit"]}
            )
    out = []
    for (entity_id, pset), traces in sorted(by_aspect.items()):
        asset = svc.storage.asset(entity_id)
        name = asset["name"] if asset else entity_id
        out.append({"key": f"{entity_id}/{pset}", "title": f"{name} · {pset}", "traces": traces})
    loose = [
        {"id": dp_id, "name": dp["name"], "type": dp["type"], "unit": dp["unit"]}
        for dp_id, dp in sorted(points.items())
        if dp_id not in mapped and dp["type"] in NUMERIC
    ]
    if loose:
        out.append({"key": "-", "title": "Data points without a mapping", "traces": loose})
    return out


def assets_of(svc: Service, agent: dict[str, Any]) -> list[dict[str, Any]]:
    """The agent's bound asset and every asset its mappings name, with their aspects and properties."""
    entities: dict[str, dict[str, list[dict[str, Any]]]] = {agent["entity_id"]: {}}
    for m in svc.storage.mappings(agent["id"]):
        aspects = entities.setdefault(m["entity_id"], {})
        aspects.setdefault(m["property_set"], []).append(
            {"property": m["property"], "data_point": m["data_point_id"], "validity": _validity(m)}
        )
    out = []
    for entity_id, aspects in entities.items():
        asset = svc.storage.asset(entity_id)
        out.append(
            {
                "entity_id": entity_id,
                "name": asset["name"] if asset else "—",
                "bound": entity_id == agent["entity_id"],
                "aspects": sorted(aspects.items()),
            }
        )
    return out


def _validity(mapping: dict[str, Any]) -> str:
    try:
        return str(json.loads(mapping["validity"]).get("status", ""))
    except (ValueError, AttributeError, TypeError):
        return ""


async def agent_page(request: web.Request) -> web.Response:
    agent = _agent(request)
    if agent is None:
        return not_found("No such agent.")
    svc = _svc(request)
    db = _db(request)
    now = svc.clock.now_ms()
    stats = await asyncio.to_thread(db.agent_overview)
    latest = await asyncio.to_thread(db.latest_readings, agent["id"])
    events = await asyncio.to_thread(db.recent, "events", agent["id"], RECENT_ROWS)
    diagnostics = await asyncio.to_thread(db.recent, "diagnostics", agent["id"], RECENT_ROWS)
    points = data_points(svc, agent["id"])
    newest = max((r["ts_ms"] for r in latest), default=None)
    default_span = "1h" if newest is None or newest >= now - SPANS_MS["1h"] else "all"
    files = [
        {
            "id": f["id"],
            "path": f["path"],
            "size": f["size"],
            "type": f["content_type"],
            "ts_ms": f["ts_ms"],
            "sha256": f["sha256"],
            "description": f["description"],
        }
        for f in reversed(svc.storage.files(agent_id=agent["id"]))
    ]
    page_data = {
        "agent": agent["id"],
        "charts": charts(svc, agent["id"]),
        "span": default_span,
        "now": now,
        "series": f"{PREFIX}/agents/{agent['id']}/series",
        "latest": f"{PREFIX}/agents/{agent['id']}/latest",
    }
    return render(
        "agent.html",
        title=agent["name"],
        agent=_agent_row(agent, stats.get(agent["id"], {})),
        assets=assets_of(svc, agent),
        latest=[dict(r, point=points.get(r["data_point_id"], {})) for r in latest],
        events=events,
        files=files,
        diagnostics=diagnostics,
        faults=svc.storage.faults(),
        page_data=page_data,
        spans=list(SPANS_MS) + ["all"],
        tenants=_tenants(svc),
        now_ms=now,
        plotly=plotly_version(),
    )


def _time_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    if re.fullmatch(r"-?\d{1,16}", raw):
        return int(raw)
    try:
        return parse_iso(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name}: {exc}") from None


def _chart_range(request: web.Request, now: int, bounds: tuple[int | None, int | None]) -> tuple[int, int]:
    span = request.query.get("span", "")
    lo, hi = _time_param(request, "from"), _time_param(request, "to")
    if lo is not None or hi is not None:
        if lo is None or hi is None or not 0 < hi - lo <= MAX_SPAN_MS:
            raise web.HTTPBadRequest(text="give both from and to, from before to (at most 100 years apart)")
        return lo, hi
    if span == "all":
        first, last = bounds
        if first is None or last is None:
            return now - SPANS_MS["1h"], now + 1
        return first, max(last + 1, first + 1000)
    if span not in SPANS_MS:
        raise web.HTTPBadRequest(text="span must be one of {} or all".format(", ".join(SPANS_MS)))
    return now - SPANS_MS[span], now + 1


async def series(request: web.Request) -> web.Response:
    """The data of one chart: each trace's timestamps (ms) and values in the range, downsampled."""
    agent = _agent(request)
    if agent is None:
        raise web.HTTPNotFound(text="no such agent")
    svc = _svc(request)
    key = request.query.get("chart", "")
    chart = next((c for c in charts(svc, agent["id"]) if c["key"] == key), None)
    if chart is None:
        raise web.HTTPNotFound(text="no such chart for this agent")
    raw_width = request.query.get("width", "800")
    if not re.fullmatch(r"\d{1,5}", raw_width) or not 10 <= int(raw_width) <= MAX_WIDTH:
        raise web.HTTPBadRequest(text=f"width must be an integer from 10 to {MAX_WIDTH}")
    width = int(raw_width)
    now = svc.clock.now_ms()
    bounds: tuple[int | None, int | None] = (None, None)
    if request.query.get("span") == "all":
        bounds = await asyncio.to_thread(_db(request).reading_bounds, agent["id"])
    lo, hi = _chart_range(request, now, bounds)
    points = [(t["id"], t["type"]) for t in chart["traces"]]
    data = await asyncio.to_thread(_db(request).chart_series, agent["id"], points, lo, hi, width)
    traces = [dict(meta, **d) for meta, d in zip(chart["traces"], data, strict=True)]
    return web.json_response({"from": lo, "to": hi, "now": now, "traces": traces})


async def latest(request: web.Request) -> web.Response:
    """What auto-refresh updates besides the charts: last seen, secret expiry, the latest values."""
    agent = _agent(request)
    if agent is None:
        raise web.HTTPNotFound(text="no such agent")
    svc = _svc(request)
    rows = await asyncio.to_thread(_db(request).latest_readings, agent["id"])
    row = _agent_row(agent, {})
    return web.json_response(
        {
            "now": svc.clock.now_ms(),
            "status": row["status"],
            "lastSeen": row["last_seen_ms"],
            "secretExpires": row["secret_expires_ms"],
            "latest": [
                {
                    "dataPointId": r["data_point_id"],
                    "time": r["ts_ms"],
                    "value": r["value"],
                    "quality": r["quality"],
                }
                for r in rows
            ],
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    """A file an agent uploaded, always as an attachment of type octet-stream: its content is the agent's,
    so the browser must never render it as a page of the console."""
    agent = _agent(request)
    raw_id = request.match_info["file_id"]
    if agent is None or not re.fullmatch(r"\d{1,18}", raw_id):
        raise web.HTTPNotFound(text="no such file")
    row = next((f for f in _svc(request).storage.files(agent_id=agent["id"]) if f["id"] == int(raw_id)), None)
    if row is None:
        raise web.HTTPNotFound(text="no such file")
    path = _svc(request).files_dir / Path(row["blob"]).name
    if not path.is_file():
        raise web.HTTPNotFound(text="the file's content is gone from the data directory")
    name = Path(row["path"]).name or "file"
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100] or "file"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(name[:200])}",
        },
    )


# static -----------------------------------------------------------------------------------------------
@cache
def _plotly_path() -> Path | None:
    """plotly.min.js inside the installed `plotly` wheel (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@cache
def plotly_version() -> str:
    path = _plotly_path()
    if path is None:
        return ""
    with open(path, "rb") as f:
        head = f.read(200).decode("ascii", "replace")
    m = re.search(r"plotly\.js v([0-9][0-9A-Za-z.+-]*)", head)
    return m.group(1) if m else "unknown"


@cache
def _static_bytes(name: str) -> tuple[bytes, bytes] | None:
    """(raw, gzipped) content of a static asset, read and compressed once."""
    if name == "plotly.min.js":
        path = _plotly_path()
    elif name in ("console.js", "console.css"):
        path = HERE / "static" / name
    else:
        return None
    if path is None:
        return None
    raw = path.read_bytes()
    return raw, gzip.compress(raw, 6)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = await asyncio.to_thread(_static_bytes, name)
    if found is None:
        raise web.HTTPNotFound(text="no such file")
    raw, packed = found
    ctype = "text/css" if name.endswith(".css") else "text/javascript"
    headers = {"Cache-Control": "private, max-age=86400", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=packed, content_type=ctype, charset="utf-8", headers=headers)
    return web.Response(body=raw, content_type=ctype, charset="utf-8", headers=headers)


async def fallback(request: web.Request) -> web.Response:
    """Any other console URL: reached only when logged in (the middleware refuses before)."""
    return not_found("There is no such console page.")


def add_routes(app: web.Application) -> None:
    """The console's URLs (relative to PREFIX). Tests walk this list: each must refuse without login."""
    app.router.add_get("/", agents_page)
    app.router.add_get("/login", login_get)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout)
    app.router.add_get("/tenants/{tenant}", tenant_page)
    app.router.add_get("/agents/{agent_id}", agent_page)
    app.router.add_get("/agents/{agent_id}/series", series)
    app.router.add_get("/agents/{agent_id}/latest", latest)
    app.router.add_get("/agents/{agent_id}/files/{file_id}", download)
    app.router.add_get("/static/{name}", static)
    app.router.add_route("*", "/{tail:.*}", fallback)
