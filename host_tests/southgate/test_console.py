"""southgate's web console, driven in a real headless Chromium (Debian's `chromium` through Playwright).

One module-wide setup: the demo runs (the real firmware on the unix board, taking the console screenshot of
`make demo DEMO_ARGS=--console-shot`), then southgate serves its data again and a second agent sends
readings, an event and a file. One browser serves every browser test. Without chromium or Playwright the
browser tests skip, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from mcagent_tools.build import ROOT
from mcagent_tools.upy32 import in_ci
from sgclient import Agent, Client, Resp, strict_body, ts_item
from southgate.clock import iso_ms, parse_iso
from southgate.console import views
from southgate.console.shot import chromium_path
from southgate.testing import RunningSouthgate
from support.console_browser import BrowserUnavailable, browser, log_in, wait_for_charts

CONSOLE = "/console"
FILES = "/api/iotfile/v3/files"
EVENTS = "/api/eventmanagement/v3/events"
FILE_BYTES = b"calibration 2026-12-03\nslope=1.0021\n"


def _browser_problem() -> str | None:
    if chromium_path() is None:
        return "no chromium on PATH (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    return None


def _need_browser() -> None:
    problem = _browser_problem()
    if problem:
        if in_ci():
            pytest.fail(f"the console's browser tests need chromium and playwright with CI=true: {problem}")
        pytest.skip(f"console browser tests: {problem}")


class Setup:
    """The running southgate with the demo's agent and a second agent that sent a file and an event."""

    def __init__(self, sg: RunningSouthgate, demo_agent: str, shot: Path | None, other: Agent) -> None:
        self.sg = sg
        self.demo_agent = demo_agent
        self.shot = shot
        self.other = other
        self.http = Client(sg.base_url, sg.ca_pem)

    def get(self, path: str, **kw: Any) -> Resp:
        return self.http.request("GET", path, **kw)

    def admin_get(self, path: str) -> Resp:
        return self.http.request("GET", path, token=self.sg.admin_token)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("console")
    shot = work / "agent-page.png" if _browser_problem() is None else None
    cmd = [sys.executable, "-m", "mcagent_tools.demo", "--keep", str(work / "demo"), "--run-s", "8"]
    if shot is not None:
        cmd += ["--console-shot", str(shot)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    demo_agent = re.search(r"agent ([0-9a-f]{32})", proc.stdout)
    assert demo_agent, proc.stdout
    with RunningSouthgate(work / "demo" / "southgate") as sg:
        other = Agent(sg, name="pump <b>7</b>").ready()
        now = iso_ms(parse_iso(sg.admin("GET", "/admin/health")["time"]) - 60_000)
        ctype, body = strict_body([ts_item("CF-test", [(now, [("DP-temp", "21.5", "0")])])])
        assert other.exchange(ctype, body).status == 200
        event = {"entityId": other.id, "severity": 20, "timestamp": now, "description": "valve <i>stuck</i>"}
        assert other.http.json("POST", EVENTS, event, token=other.token).status == 201
        headers = {"Content-Type": "application/octet-stream", "type": "text/html", "timestamp": now}
        r = other.http.request(
            "PUT", f"{FILES}/{other.id}/logs/cal.html", FILE_BYTES, headers, token=other.token
        )
        assert r.status == 201, r
        yield Setup(sg, demo_agent.group(1), shot, other)


@pytest.fixture(scope="module")
def context(setup: Setup) -> Iterator[Any]:
    """One logged-in browser for the module's browser tests."""
    _need_browser()
    try:
        with browser() as ctx:
            page = ctx.new_page()
            log_in(page, setup.sg.base_url, setup.sg.admin_token)
            page.close()
            yield ctx
    except BrowserUnavailable as exc:  # pragma: no cover - _need_browser checked the same
        pytest.fail(str(exc))


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield p
    p.close()
    assert not errors, errors  # no script error, no CSP violation


# ---------------------------------------------------------------------------------------------------------
def _chart_key(setup: Setup, agent_id: str) -> str:
    """The first chart of an agent's page, as the page hands it to console.js."""
    html = setup.admin_get(f"{CONSOLE}/agents/{agent_id}").body.decode()
    data = re.search(r'id="console-data">(.*?)</script>', html)
    assert data, html[:500]
    return str(json.loads(data.group(1))["charts"][0]["key"])


def _urls(setup: Setup) -> list[tuple[str, str]]:
    """Every console route, its parameters filled with real ids (the route list is the console's own)."""
    app = web.Application()
    views.add_routes(app)
    file_id = setup.admin_get(f"/console/agents/{setup.other.id}").body
    m = re.search(rb"/files/(\d+)", file_id)
    assert m, "the agent page links its file"
    values = {
        "agent_id": setup.other.id,
        "tenant": setup.other.tenant,
        "file_id": m.group(1).decode(),
        "name": "plotly.min.js",
        "tail": "no-such-page",
    }
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda g: values[g.group(1)], path)
        method = "GET" if route.method in ("*", "HEAD") else route.method
        if path == "/login":
            continue  # the only page without login: the form (test_login_page_shows_nothing)
        out.append((method, CONSOLE + path))
    extra = [
        (
            "GET",
            f"{CONSOLE}/agents/{setup.other.id}/series?chart={_chart_key(setup, setup.other.id)}&span=all",
        ),
        ("GET", f"{CONSOLE}/static/console.js"),
        ("GET", CONSOLE),
    ]
    return sorted(set(out + extra))


def test_every_console_url_refuses_without_the_admin_token(setup: Setup) -> None:
    urls = _urls(setup)
    assert len(urls) >= 10
    data_words = [b"pump", b"demo-node", b"valve", FILE_BYTES, b"plotly.js v", b"AirTemperature"]
    for method, url in urls:
        for headers in (
            {},
            {"Accept": "text/html"},
            {"Authorization": "Bearer not-the-token"},
            {"Cookie": "southgate_console=forged"},
            {"Authorization": "Bearer " + setup.sg.admin_token + "x"},
        ):
            r = setup.http.request(method, url, b"" if method == "POST" else None, headers)
            assert r.status == 401, (method, url, headers, r.status)
            assert not any(w in r.body for w in data_words), (url, r.body[:300])
        # ... and the admin token opens each of them (the logout answers with the login form)
        r = setup.http.request(method, url, b"" if method == "POST" else None, token=setup.sg.admin_token)
        assert r.status in (200, 404), (method, url, r.status)


def test_login_page_shows_nothing_and_sets_a_strict_cookie(setup: Setup) -> None:
    r = setup.get(f"{CONSOLE}/login")
    assert r.status == 200 and b'name="token"' in r.body
    assert b"demo-node" not in r.body and setup.other.id.encode() not in r.body
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = setup.http.request("POST", f"{CONSOLE}/login", b"token=nope&next=/console/", form)
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    body = f"token={setup.sg.admin_token}&next=https://evil.example/".encode()
    ok = setup.http.request("POST", f"{CONSOLE}/login", body, form)
    assert ok.status == 303 and ok.headers["location"] == "/console/"  # no open redirect
    crlf = f"token={setup.sg.admin_token}&next=/console/%0d%0aX-Evil:1".encode()
    r = setup.http.request("POST", f"{CONSOLE}/login", crlf, form)  # answered, not a dropped connection
    assert r.status == 303 and r.headers["location"] == "/console/" and "x-evil" not in r.headers
    cookie = ok.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/console"):
        assert flag.lower() in cookie.lower(), cookie
    sid = cookie.split(";")[0]
    assert setup.get(f"{CONSOLE}/", headers={"Cookie": sid}).status == 200
    assert setup.http.request("POST", f"{CONSOLE}/logout", b"", {"Cookie": sid}).status == 200
    assert setup.get(f"{CONSOLE}/", headers={"Cookie": sid}).status == 401  # the session is gone


def test_one_time_login_link_works_once(setup: Setup) -> None:
    out = (setup.sg.data_dir / "southgate.out").read_text()
    link = re.search(r"southgate: console (https://\S+/console/login\?key=(\S+))", out)
    assert link, out
    path = link.group(1)[len(setup.sg.base_url) :]
    first = setup.get(path)
    assert first.status == 200 and "set-cookie" in first.headers
    assert b'http-equiv="refresh"' in first.body  # moves on by itself (a same-site navigation)
    sid = first.headers["set-cookie"].split(";")[0]
    assert setup.get(f"{CONSOLE}/agents/{setup.demo_agent}", headers={"Cookie": sid}).status == 200
    again = setup.get(path)
    assert again.status == 401 and "set-cookie" not in again.headers
    assert link.group(2) not in setup.sg.log_tail(10_000)  # the key is printed once, never logged


def test_no_secret_in_any_page_or_answer(setup: Setup) -> None:
    secrets = [
        setup.other.reg["client_secret"],
        setup.other.reg["registration_access_token"],
        setup.other.config["content"]["iat"],
        setup.other.token,
        setup.sg.admin_token,
    ]
    pages = [
        f"{CONSOLE}/",
        f"{CONSOLE}/agents/{setup.other.id}",
        f"{CONSOLE}/agents/{setup.demo_agent}",
        f"{CONSOLE}/tenants/{setup.other.tenant}",
        f"{CONSOLE}/agents/{setup.other.id}/latest",
        f"{CONSOLE}/agents/{setup.other.id}/series?chart={_chart_key(setup, setup.other.id)}&span=all",
    ]
    for url in pages:
        r = setup.admin_get(url)
        assert r.status == 200, url
        assert not any(s.encode() in r.body for s in secrets), url
    assert not any(s in setup.sg.log_tail(10_000) for s in secrets)


def test_agent_names_and_descriptions_are_escaped(setup: Setup) -> None:
    html = setup.admin_get(f"{CONSOLE}/agents/{setup.other.id}").body
    assert b"pump &lt;b&gt;7&lt;/b&gt;" in html and b"<b>7</b>" not in html
    assert b"valve &lt;i&gt;stuck&lt;/i&gt;" in html


def test_downloaded_file_is_an_attachment_never_a_page(setup: Setup) -> None:
    html = setup.admin_get(f"{CONSOLE}/agents/{setup.other.id}").body.decode()
    href = re.search(r'href="(/console/agents/[0-9a-f]+/files/\d+)"', html)
    assert href
    r = setup.admin_get(href.group(1))
    assert r.status == 200 and r.body == FILE_BYTES
    assert r.headers["content-type"].startswith("application/octet-stream")  # stored as text/html
    assert r.headers["content-disposition"].startswith('attachment; filename="cal.html"')
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "query",
    [
        "width=abc",
        "width=0",
        "width=99999999999999999999",
        "span=2y",
        "from=yesterday&to=today",
        "from=10&to=5",
        "from=1",
        "from=-99999999999999999&to=99999999999999999",
        "from=2024-13-45T00:00:00Z&to=2024-01-01T00:00:00Z",
        "chart=nope",
        "chart=%ff%fe",
    ],
)
def test_hostile_chart_queries_get_a_4xx(setup: Setup, query: str) -> None:
    base = f"{CONSOLE}/agents/{setup.other.id}/series?"
    if not query.startswith("chart="):
        base += f"chart={_chart_key(setup, setup.other.id)}&"
    r = setup.admin_get(base + query)
    assert 400 <= r.status < 500, (query, r.status, r.body[:200])


@pytest.mark.parametrize(
    "path",
    [
        "/agents/x",
        "/agents/" + "f" * 32,
        "/agents/" + "f" * 32 + "/series",
        "/agents/{agent}/files/abc",
        "/agents/{agent}/files/99999999999999999999999",
        "/agents/{agent}/files/0",
        "/tenants/%00",
        "/tenants/" + "x" * 5000,
        "/static/../../admin-token",
        "/static/%2e%2e%2fadmin-token",
    ],
)
def test_hostile_paths_get_a_4xx(setup: Setup, path: str) -> None:
    r = setup.admin_get(CONSOLE + path.replace("{agent}", setup.other.id))
    assert 400 <= r.status < 500, (path, r.status, r.body[:200])
    assert setup.sg.admin_token.encode() not in r.body


def test_large_ranges_come_back_downsampled(setup: Setup) -> None:
    """5,000 readings, a chart 100 pixels wide: at most two points per pixel, the extremes kept."""
    sg = setup.sg
    agent = Agent(sg, name="busy").ready()
    t0 = parse_iso("2026-01-01T00:00:00Z")
    rows = []
    for i in range(5000):
        value = 1000.0 if i == 1234 else -1000.0 if i == 3210 else float(i % 100)
        rows.append((iso_ms(t0 + i * 1000), [("DP-temp", repr(value), "0")]))
    ctype, body = strict_body([ts_item("CF-test", rows)])
    assert agent.exchange(ctype, body).status == 200
    url = f"{CONSOLE}/agents/{agent.id}/series?chart={_chart_key(setup, agent.id)}&span=all&width=100"
    answer = setup.admin_get(url).json()
    temp = next(t for t in answer["traces"] if t["id"] == "DP-temp")
    assert temp["count"] == 5000 and temp["downsampled"]
    assert len(temp["x"]) <= 2 * 100 + 2
    assert max(temp["y"]) == 1000.0 and min(temp["y"]) == -1000.0
    assert temp["x"][temp["y"].index(1000.0)] == t0 + 1234 * 1000  # each extreme at its own time
    assert temp["x"] == sorted(temp["x"])
    # a narrow range is sent as stored
    narrow = setup.admin_get(url.replace("span=all", f"from={t0}&to={t0 + 50_000}")).json()
    t = next(t for t in narrow["traces"] if t["id"] == "DP-temp")
    assert not t["downsampled"] and t["x"] == [t0 + i * 1000 for i in range(50)]


# browser ---------------------------------------------------------------------------------------------------
def _plotted(page: Any, index: int = 0) -> list[dict[str, Any]]:
    return page.evaluate(
        "(i) => document.getElementById('chart-' + i).data.map(t => ({name: t.name, x: t.x, y: t.y}))", index
    )


def test_browser_shows_the_demo_agent_with_its_chart_range_and_event(setup: Setup, page: Any) -> None:
    sg = setup.sg
    base = sg.base_url
    page.goto(f"{base}/console/")
    assert page.locator(f"tr[data-agent='{setup.demo_agent}']").count() == 1
    assert "onboarded" in page.inner_text(f"tr[data-agent='{setup.demo_agent}']")
    page.click(f"tr[data-agent='{setup.demo_agent}'] a")
    page.wait_for_url(f"{base}/console/agents/{setup.demo_agent}")
    wait_for_charts(page)
    assert page.get_attribute("#chart-0", "data-state") == "ok"
    assert page.locator("#chart-0 .main-svg").count() >= 1  # Plotly drew its SVG
    stored = sg.timeseries(setup.demo_agent)
    assert stored
    by_point: dict[str, list[tuple[int, float]]] = {}
    for r in stored:
        by_point.setdefault(r["dataPointId"], []).append((parse_iso(r["timestamp"]), float(r["value"])))
    traces = _plotted(page)
    assert {t["name"].split(" (")[0] for t in traces} == {
        "AirTemperature",
        "AirHumidity",
        "AirPressure",
        "PartsPerMinute",
    }
    for t in traces:
        dp = "DP-" + t["name"].split(" (")[0]
        assert list(zip(t["x"], t["y"], strict=True)) == by_point[dp], dp  # every stored point, drawn
    assert page.locator("#chart-0 .scatterlayer .trace path.js-line").count() == 4
    # a custom range with the first half of the readings only
    stamps = sorted({x for x, _ in by_point["DP-AirTemperature"]})
    lo, hi = (stamps[0] - 1000) // 1000 * 1000, stamps[len(stamps) // 2] // 1000 * 1000
    page.uncheck("#auto-refresh")
    page.fill("#range-from", iso_ms(lo)[:19])  # datetime-local fields, seconds, UTC
    page.fill("#range-to", iso_ms(hi)[:19])
    loads = int(page.evaluate("document.body.dataset.chartLoads"))
    page.click("#range-apply")
    wait_for_charts(page, loads + 1)
    for t in _plotted(page):
        dp = "DP-" + t["name"].split(" (")[0]
        expected = [p for p in by_point[dp] if lo <= p[0] < hi]
        assert list(zip(t["x"], t["y"], strict=True)) == expected, dp
        assert 0 < len(t["x"]) < len(by_point[dp])
    # 'all' brings them back; 'last day' too (the demo ran minutes ago)
    for span in ("all", "1d"):
        loads = int(page.evaluate("document.body.dataset.chartLoads"))
        page.click(f"button.span[data-span='{span}']")
        wait_for_charts(page, loads + 1)
        assert sum(len(t["x"]) for t in _plotted(page)) == len(stored), span
    assert "health: PWRON_RESET" in page.inner_text("#events")
    assert page.locator("#latest tr[data-dp]").count() == 4


def test_browser_shows_an_event_and_downloads_a_file(setup: Setup, page: Any) -> None:
    base = setup.sg.base_url
    page.goto(f"{base}/console/agents/{setup.other.id}")
    wait_for_charts(page)
    assert "valve <i>stuck</i>" in page.inner_text("#events")  # shown as text, not markup
    assert page.locator("#events i").count() == 0
    assert "logs/cal.html" in page.inner_text("#files")
    with page.expect_download() as info:
        page.click("#files a")
    download = info.value
    assert Path(download.path()).read_bytes() == FILE_BYTES
    # the tenant page lists the agent and its asset
    page.goto(f"{base}/console/tenants/{setup.other.tenant}")
    assert page.locator(f"tr[data-agent='{setup.other.id}']").count() == 1


def test_browser_auto_refresh_draws_a_reading_that_arrives(setup: Setup, page: Any) -> None:
    other = setup.other
    page.goto(f"{setup.sg.base_url}/console/agents/{other.id}")
    wait_for_charts(page)
    before = sum(len(t["x"]) for t in _plotted(page))
    loads = int(page.evaluate("() => Number(document.body.dataset.chartLoads)"))
    stamp = iso_ms(parse_iso(setup.sg.admin("GET", "/admin/health")["time"]) - 1000)
    ctype, body = strict_body([ts_item("CF-test", [(stamp, [("DP-temp", "-7.25", "0")])])])
    assert other.exchange(ctype, body).status == 200
    for more in (1, 2, 3):  # a refresh already under way may have asked before the reading arrived
        wait_for_charts(page, loads + more, timeout_ms=20000)  # refresh ticks are 5 s apart
        traces = _plotted(page)
        if sum(len(t["x"]) for t in traces) > before:
            break
    assert sum(len(t["x"]) for t in traces) == before + 1
    temp = next(t for t in traces if t["name"].startswith("temp"))
    assert temp["y"][-1] == -7.25 and temp["x"][-1] == parse_iso(stamp)
    page.wait_for_selector("#latest tr[data-dp='DP-temp'] .value:text-is('-7.25')", timeout=10000)


def test_browser_without_login_sees_only_the_login_form(setup: Setup, context: Any) -> None:
    context.clear_cookies()  # a browser that never logged in
    p = context.new_page()
    try:
        for url in (f"/console/agents/{setup.demo_agent}", "/console/static/plotly.min.js", "/console/"):
            resp = p.goto(setup.sg.base_url + url)
            assert resp is not None and resp.status == 401
            assert "demo-node" not in p.content()
        assert p.locator("#token").count() == 1
    finally:
        log_in(p, setup.sg.base_url, setup.sg.admin_token)  # the module's browser stays logged in
        p.close()


def test_demo_console_shot_is_a_png_of_the_agent_page(setup: Setup) -> None:
    _need_browser()
    assert setup.shot is not None and setup.shot.is_file()
    data = setup.shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 1000 and height >= 800 and len(data) > 50_000


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/x-www-form-urlencoded", b"token=%ff%fe&next=%00"),
        ("application/x-www-form-urlencoded", b"\xff\xfe\xfd"),
        ("application/x-www-form-urlencoded", b"token=" + b"a" * 100_000),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--zz--"),
        ("multipart/form-data", b"garbage"),
        ("application/json", b'{"token": 1}'),
        ("text/plain", b""),
    ],
)
def test_hostile_logins_get_a_4xx(setup: Setup, ctype: str, body: bytes) -> None:
    r = setup.http.request("POST", f"{CONSOLE}/login", body, {"Content-Type": ctype})
    assert 400 <= r.status < 500, (ctype, body[:40], r.status, r.body[:200])
    assert "set-cookie" not in r.headers


def test_seeded_garbage_in_console_urls_gets_no_5xx(setup: Setup) -> None:
    """300 seeded mutations of real console URLs (logged in): each answer is below 500."""
    rng = random.Random(20261203)
    key = _chart_key(setup, setup.other.id)
    urls = [u for m, u in _urls(setup) if m == "GET"] + [
        f"{CONSOLE}/agents/{setup.other.id}/series?chart={key}&span=1d&width=200",
        f"{CONSOLE}/agents/{setup.other.id}/series?chart=x&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
    ]
    alphabet = "%/?&=.:-_~+#[]{}\\\"'<>|^` \t0123456789abcdefxyzÄ€😀\x00\x7f"
    for _ in range(300):
        url = list(rng.choice(urls))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(min(len(CONSOLE) + 1, len(url)), len(url) + 1)
            if rng.random() < 0.5 and i < len(url):
                del url[i]
            else:
                url.insert(i, rng.choice(alphabet))
        text = "".join(url)
        target = quote(text, safe="/?&=%:@!$'()*+,;-._~")
        r = setup.http.request("GET", target, token=setup.sg.admin_token)
        assert r.status < 500, (text, r.status, r.body[:200])


def test_no_console_request_was_answered_with_500(setup: Setup) -> None:
    log = setup.sg.log_tail(100_000)
    assert "Traceback" not in log
    assert not re.search(r"^southgate: \w+ /console\S* 5\d\d ", log, re.M), log[-3000:]
