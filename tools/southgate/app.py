"""The aiohttp application and `serve`: middlewares (log line, counters, faults, rate limit, errors,
Date/Server-Time headers), routes, and the listening socket with TLS."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from . import console, faults, importjobs, tokens
from .counters import ConnStats, Counters, CountingHandler, counting_factory
from .errors import ApiError
from .routes_admin import COUNTERS_KEY
from .routes_admin import routes as admin_routes
from .routes_agent import routes as agent_routes
from .routes_assets import routes as asset_routes
from .routes_data import routes as data_routes
from .routes_data import send_and_close
from .routes_events import routes as event_routes
from .routes_files import routes as file_routes
from .routes_read import routes as read_routes
from .service import HEX32, Service
from .webutil import SERVICE_KEY, header_text

RATE_KEY: web.AppKey[dict[str, deque[float]]] = web.AppKey("rate", dict)
VERSION_KEY: web.AppKey[list[int]] = web.AppKey("data_version", list)


def _env_seconds(name: str, default: float) -> float:
    """A timeout from the environment (tests shorten them), else the default."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


# Read timeouts. Not Settings (settings.py) because they apply to the listening socket as a whole.
HEADER_TIMEOUT_S = _env_seconds("SOUTHGATE_HEADER_TIMEOUT_S", 20.0)  # first byte -> end of headers
BODY_IDLE_TIMEOUT_S = _env_seconds("SOUTHGATE_BODY_IDLE_TIMEOUT_S", 30.0)  # longest gap in a body
BODY_TIMEOUT_S = _env_seconds("SOUTHGATE_BODY_TIMEOUT_S", 600.0)  # whole body, authenticated endpoints
UNAUTH_BODY_TIMEOUT_S = _env_seconds("SOUTHGATE_UNAUTH_BODY_TIMEOUT_S", 10.0)  # token, register
NOT_AGENT_PREFIXES = ("/admin/", console.PREFIX)  # no faults, no rate limit: not the agents' API
UNAUTHENTICATED_PREFIXES = ("/api/agentmanagement/v3/oauth/", "/api/agentmanagement/v3/register")

SUCCESS_STATUS = {
    "/api/agentmanagement/v3/register": 201,
    "/api/mindconnect/v3/dataPointMappings": 201,
    "/api/eventmanagement/v3/events": 201,
}


def log(line: str) -> None:
    print("southgate: " + line, file=sys.stderr, flush=True)


def logged_path(request: web.Request) -> str:
    """The path as the client sent it (percent-encoded, so a %0a or a space cannot forge or split a log
    line), without the query (a console login key never reaches the log)."""
    return request.raw_path.split("?", 1)[0]


def _conn(request: web.Request) -> ConnStats | None:
    return getattr(request.protocol, "sg_stats", None)


def _agent_hint(request: web.Request) -> str | None:
    """Who a request is from (rate-limit bucket, diagnostics of a drop fault): the subject of a token this
    server signed, expired or not, before any handler looked at it. Only a signed one: a forged `sub` would
    let anyone use up another agent's requests or write into its diagnostics."""
    auth = header_text(request.headers.get("Authorization", "")) or ""
    if auth[:7].lower() == "bearer ":
        keys = request.app[SERVICE_KEY].keys
        try:
            claims = tokens.verify_rs256(auth[7:].strip(), keys.token_key, keys.token_kid)
        except ValueError:  # TokenError, or whatever a malformed signature raises
            return None
        sub = claims.get("sub")
        if isinstance(sub, str) and HEX32.match(sub):
            return sub
    return None


@web.middleware
async def outer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One log line per request; counters; every error as JSON in the service's shape."""
    start = time.perf_counter()
    request["agent_id"] = None
    status = 0
    proto = request.protocol
    if isinstance(proto, GuardedHandler):
        proto.headers_done()
    try:
        try:
            _check_headers(request)
            resp = await handler(request)
        except ApiError as exc:
            resp = exc.response()
            if exc.close:
                resp = await send_and_close(request, resp)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
            api = ApiError(exc.status, message or exc.reason)
            resp = api.response()
            for name in ("Allow", "Retry-After"):
                if name in exc.headers:
                    resp.headers[name] = exc.headers[name]
        except (asyncio.CancelledError, ConnectionError):
            status = 499
            raise
        except RecursionError:  # hostile nesting that slipped past a parser: the client's fault, not ours
            log(f"{request.method} {logged_path(request)}: input nested too deeply")
            resp = ApiError(400, "request input is nested too deeply").response()
        except Exception:  # noqa: BLE001 - a bug must answer 500, not kill the connection silently
            traceback.print_exc(file=sys.stderr)
            resp = ApiError(500, "internal error in southgate (see its log)").response()
        status = resp.status
        return resp
    finally:
        if isinstance(proto, GuardedHandler):
            proto.request_done()
        ms = (time.perf_counter() - start) * 1000
        conn = _conn(request)
        bytes_in = 0
        if conn is not None:
            bytes_in = conn.bytes_in - conn.mark
            conn.mark = conn.bytes_in
        cut = request.get("closed_by_fault")
        if cut:
            status = 0 if cut == "cut" else cut  # 0: connection cut before any answer
        counters: Counters = request.app[COUNTERS_KEY]
        counters.record_request(conn, request.method, request.path, status, bytes_in, ms, request["agent_id"])
        who = request["agent_id"] or "-"
        log(f"{request.method} {logged_path(request)} {status} in={bytes_in} agent={who} {ms:.1f}ms")


def _check_headers(request: web.Request) -> None:
    """Header values must be valid UTF-8 (aiohttp passes other bytes through as lone surrogates, which break
    token checks, logging and SQLite); the Authorization header must be ASCII (401, it is a credential)."""
    for name, value in request.headers.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            if name.lower() == "authorization":
                raise ApiError(
                    401,
                    "Authorization header must be printable ASCII",
                    headers={"WWW-Authenticate": 'Bearer realm="southgate"'},
                ) from None
            raise ApiError(400, f"header {name[:40]!r} is not valid UTF-8") from None


class BodyTimeout(asyncio.TimeoutError):
    """Set on a request's body stream when the body stops arriving; reads then raise it."""


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """408 (and close) for a request body that stops arriving or takes too long.

    A watchdog checks progress while the body is incomplete; on a timeout it sets BodyTimeout on the body
    stream, so the handler's pending or next read raises it (no task cancellation needed). Unauthenticated
    endpoints (token, register) get a short total limit, everything else a long one; a gap of more than
    BODY_IDLE_TIMEOUT_S without a byte ends any body."""
    content = request.content
    if content.is_eof():
        return await handler(request)
    unauth = request.path.startswith(UNAUTHENTICATED_PREFIXES)
    total = UNAUTH_BODY_TIMEOUT_S if unauth else BODY_TIMEOUT_S
    idle = BODY_IDLE_TIMEOUT_S
    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = max(0.05, min(1.0, idle / 4, total / 4))
    state: dict[str, float] = {"seen": float(content.total_bytes), "last": start}
    fired: list[str] = []
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal handle
        handle = None
        if content.is_eof():
            return
        now = loop.time()
        if content.total_bytes != state["seen"]:
            state["seen"], state["last"] = float(content.total_bytes), now
        if now - start >= total:
            fired.append(f"request body not complete within {total:g} s")
        elif now - state["last"] >= idle:
            fired.append(f"request body stalled: no data for {idle:g} s")
        if fired:
            content.set_exception(BodyTimeout(fired[0]))
            return
        handle = loop.call_later(tick, check)

    handle = loop.call_later(tick, check)
    try:
        return await handler(request)
    except BodyTimeout:
        if not fired:
            raise
        log(f"{request.method} {logged_path(request)}: {fired[0]}")
        raise ApiError(408, fired[0], close=True) from None
    finally:
        if handle is not None:
            handle.cancel()


@web.middleware
async def freshness(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pick up settings changed by another process (the CLI) since the last request."""
    svc = request.app[SERVICE_KEY]
    version = svc.storage.data_version()
    seen = request.app[VERSION_KEY]
    if version != seen[0]:
        seen[0] = version
        svc.reload_settings()
    return await handler(request)


def _closed(request: web.Request) -> web.Response:
    """The connection was cut on purpose; aiohttp finds the transport gone and sends nothing."""
    if request.protocol is not None:
        request.protocol.force_close()
    return web.Response(status=599)


@web.middleware
async def fault_injection(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(NOT_AGENT_PREFIXES):
        return await handler(request)
    svc = request.app[SERVICE_KEY]
    chosen = None
    for fault in svc.storage.faults():
        if faults.matches(fault, request.method, request.path) and svc.storage.consume_fault(fault["id"]):
            chosen = fault
            break
    if chosen is None:
        return await handler(request)
    kind, params = chosen["kind"], chosen["params"]
    request["agent_id"] = _agent_hint(request)
    log(f"fault {chosen['id']} ({kind}) on {request.method} {logged_path(request)}")
    message = params.get("message") or f"injected fault ({kind})"
    if kind == "status":
        status = params["status"]
        headers = {}
        if "retry_after" in params:
            headers["Retry-After"] = str(params["retry_after"])
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="southgate"'
        raise ApiError(status, message, headers=headers, close=status == 413)
    if kind == "stall":
        await asyncio.sleep(params["seconds"])
        return await handler(request)
    if kind == "close_after_bytes":
        remaining = params["bytes"]
        while remaining > 0:
            chunk = await request.content.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        request["closed_by_fault"] = "cut"
        if request.transport is not None:
            request.transport.abort()
        return _closed(request)
    if kind == "close_after_status":
        request["closed_by_fault"] = params["status"]
        if request.transport is not None:
            request.transport.write(faults.status_line(params["status"]))
        return _closed(request)
    # drop: accept everything, store nothing, say so in diagnostics.
    while await request.content.readany():
        pass
    agent = request["agent_id"]
    if agent:
        svc.storage.add_diagnostic(
            agent,
            header_text(request.headers.get("Correlation-ID", "")[:64]) or "-",
            "WARN",
            f"request to {request.path} accepted and dropped (fault injection)",
            "fault",
            "DROPPED",
            svc.clock.now_ms(),
        )
    status = SUCCESS_STATUS.get(request.path, 200)
    if request.method == "PUT" and request.path.startswith("/api/iotfile/"):
        status = 201
    return web.Response(status=status)


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    svc = request.app[SERVICE_KEY]
    limit = svc.settings.rate_limit
    if not limit or request.path.startswith(NOT_AGENT_PREFIXES):
        return await handler(request)
    window = svc.settings.rate_window_s
    key = _agent_hint(request) or (request.remote or "-")
    hits = request.app[RATE_KEY].setdefault(key, deque())
    now = time.monotonic()
    while hits and hits[0] <= now - window:
        hits.popleft()
    if len(hits) >= limit:
        retry = max(1, math.ceil(hits[0] + window - now))
        raise ApiError(
            429,
            f"rate limit of {limit} requests per {window:g} s exceeded",
            headers={"Retry-After": str(retry)},
        )
    hits.append(now)
    return await handler(request)


async def _service_lifetime(app: web.Application) -> AsyncIterator[None]:
    """The Service lives as long as the application: whoever runs the app (serve, a test's runner) gets
    the shutdown right without knowing its parts. Settings are read fresh at startup (the CLI may have
    changed them since the Service was made); at shutdown background import jobs are cancelled (they would
    write into a closed database), then the database is closed."""
    svc = app[SERVICE_KEY]
    svc.reload_settings()
    app[VERSION_KEY][0] = svc.storage.data_version()
    try:
        yield
    finally:
        await importjobs.cancel_running()
        svc.close()


def make_app(service: Service, counters: Counters | None = None) -> web.Application:
    app = web.Application(
        middlewares=[outer, freshness, fault_injection, rate_limit, body_deadline],
        client_max_size=2 * 1024 * 1024,
    )
    app[SERVICE_KEY] = service
    app[COUNTERS_KEY] = counters or Counters()
    app[RATE_KEY] = {}
    app[VERSION_KEY] = [-1]
    app.cleanup_ctx.append(_service_lifetime)

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = service.clock.http_date()
        response.headers["Server-Time"] = service.clock.iso()
        response.headers["Server"] = "southgate"

    app.on_response_prepare.append(stamp)
    for table in (
        agent_routes,
        data_routes,
        file_routes,
        read_routes,
        event_routes,
        asset_routes,
        admin_routes,
    ):
        app.add_routes(table)
    console.setup(app)
    return app


class GuardedHandler(CountingHandler):
    """The counting request handler plus a header read timeout: once the first byte of a request arrives,
    its headers must be complete within HEADER_TIMEOUT_S, else the connection gets a 408 and is closed
    (aiohttp itself only times out idle connections)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sg_header_timer: asyncio.TimerHandle | None = None
        self.sg_busy = 0

    def _awaiting_request(self) -> bool:
        """aiohttp waits for the next request (not inside one, not draining an unread body)."""
        waiter = self._waiter  # noqa: SLF001 - set by RequestHandler.start while it waits for a message
        return not self.sg_busy and waiter is not None and not waiter.done()

    def data_received(self, data: bytes) -> None:
        if data and self.sg_header_timer is None and self._awaiting_request():
            self.sg_header_timer = asyncio.get_running_loop().call_later(
                HEADER_TIMEOUT_S, self._headers_timed_out
            )
        super().data_received(data)

    def headers_done(self) -> None:
        self.sg_busy += 1
        if self.sg_header_timer is not None:
            self.sg_header_timer.cancel()
            self.sg_header_timer = None

    def request_done(self) -> None:
        self.sg_busy = max(0, self.sg_busy - 1)

    def _headers_timed_out(self) -> None:
        self.sg_header_timer = None
        if self.transport is None or not self._awaiting_request():
            return
        log(f"closing a connection: request headers not complete within {HEADER_TIMEOUT_S:g} s")
        body = b'{"message": "request headers not complete in time"}'
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A request aiohttp could not parse (bad header bytes, line too long ...) is the client's error:
        one log line with the reason, no traceback. Anything else is logged as aiohttp does."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            first = str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else ""
            log(f"bad HTTP request ({exc.code} {type(exc).__name__}: {first[:120]})")
            return
        super().log_exception(*args, **kw)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.sg_header_timer is not None:
            self.sg_header_timer.cancel()
            self.sg_header_timer = None
        super().connection_lost(exc)


def display_base_url(host: str, port: int, plain_http: bool) -> str:
    scheme = "http" if plain_http else "https"
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "::1") or ":" in host:
        host = "[::1]" if host == "::" else f"[{host}]"
    return f"{scheme}://{host}:{port}"


async def serve(
    service: Service,
    host: str = "127.0.0.1",
    port: int = 8443,
    plain_http: bool = False,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop`), then shut down cleanly."""
    counters = Counters()
    app = make_app(service, counters)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=2.0, keepalive_timeout=75.0
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    ssl_ctx = None if plain_http else service.keys.server_ssl_context()
    assert runner.server is not None
    server = await loop.create_server(
        counting_factory(runner.server, counters, GuardedHandler), host, port, ssl=ssl_ctx, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    base = display_base_url(service.public_host or host, bound, plain_http)
    service.remember_base_url(base)
    # The handlers before the lines that say we are up: whoever reads them may stop us at once.
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    print(f"southgate: serving {base}", flush=True)
    # absolute paths: they are copied into commands run from other directories (mcagent deploy --ca ...)
    print(f"southgate: CA certificate {service.keys.ca_pem.resolve()}", flush=True)
    print(f"southgate: admin token in {(service.data_dir / 'admin-token').resolve()}", flush=True)
    print(f"southgate: console {console.login_link(app, base)} (one-time login link)", flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log("shutting down")
        server.close()
        await runner.cleanup()  # runs _service_lifetime's shutdown: the Service is closed
        try:
            await asyncio.wait_for(server.wait_closed(), 3)
        except asyncio.TimeoutError:
            pass
        log("stopped")
