"""The aiohttp application and `serve`: middlewares (log line, counters, faults, rate limit, errors,
Date/Server-Time headers), routes, and the listening socket with TLS."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import time
import traceback
from collections import deque

from aiohttp import web
from aiohttp.typedefs import Handler

from . import faults, tokens
from .counters import ConnStats, Counters, counting_factory
from .errors import ApiError
from .routes_admin import COUNTERS_KEY
from .routes_admin import routes as admin_routes
from .routes_agent import routes as agent_routes
from .routes_data import routes as data_routes
from .routes_data import send_and_close
from .routes_files import routes as file_routes
from .routes_read import routes as read_routes
from .service import Service
from .webutil import SERVICE_KEY

RATE_KEY: web.AppKey[dict[str, deque[float]]] = web.AppKey("rate", dict)
VERSION_KEY: web.AppKey[list[int]] = web.AppKey("data_version", list)

SUCCESS_STATUS = {
    "/api/agentmanagement/v3/register": 201,
    "/api/mindconnect/v3/dataPointMappings": 201,
    "/api/eventmanagement/v3/events": 201,
}


def log(line: str) -> None:
    print("southgate: " + line, file=sys.stderr, flush=True)


def _conn(request: web.Request) -> ConnStats | None:
    return getattr(request.protocol, "sg_stats", None)


def _agent_hint(request: web.Request) -> str | None:
    """Who a request is from, without checking the token (rate-limit bucket, diagnostics of a drop fault)."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        claims = tokens.unverified_claims(auth[7:].strip())
        if claims and isinstance(claims.get("sub"), str):
            return claims["sub"][:64]
    return None


@web.middleware
async def outer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One log line per request; counters; every error as JSON in the service's shape."""
    start = time.perf_counter()
    request["agent_id"] = None
    status = 0
    try:
        try:
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
        except Exception:  # noqa: BLE001 - a bug must answer 500, not kill the connection silently
            traceback.print_exc(file=sys.stderr)
            resp = ApiError(500, "internal error in southgate (see its log)").response()
        status = resp.status
        return resp
    finally:
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
        log(f"{request.method} {request.path} {status} in={bytes_in} agent={who} {ms:.1f}ms")


@web.middleware
async def freshness(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pick up settings changed by another process (the CLI) since the last request."""
    svc = request.app[SERVICE_KEY]
    version = svc.storage.db.execute("PRAGMA data_version").fetchone()[0]
    seen = request.app[VERSION_KEY]
    if version != seen[0]:
        seen[0] = version
        svc.settings.update(svc.storage.load_settings())
        svc.clock.offset_s = svc.settings.clock_offset_s
    return await handler(request)


def _closed(request: web.Request) -> web.Response:
    """The connection was cut on purpose; aiohttp finds the transport gone and sends nothing."""
    if request.protocol is not None:
        request.protocol.force_close()
    return web.Response(status=599)


@web.middleware
async def fault_injection(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/admin/"):
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
    log(f"fault {chosen['id']} ({kind}) on {request.method} {request.path}")
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
            request.headers.get("Correlation-ID", "")[:64] or "-",
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
    if not limit or request.path.startswith("/admin/"):
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


def make_app(service: Service, counters: Counters | None = None) -> web.Application:
    app = web.Application(
        middlewares=[outer, freshness, fault_injection, rate_limit], client_max_size=2 * 1024 * 1024
    )
    app[SERVICE_KEY] = service
    app[COUNTERS_KEY] = counters or Counters()
    app[RATE_KEY] = {}
    app[VERSION_KEY] = [-1]

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = service.clock.http_date()
        response.headers["Server-Time"] = service.clock.iso()
        response.headers["Server"] = "southgate"

    app.on_response_prepare.append(stamp)
    for table in (agent_routes, data_routes, file_routes, read_routes, admin_routes):
        app.add_routes(table)
    return app


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
        counting_factory(runner.server, counters), host, port, ssl=ssl_ctx, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    base = display_base_url(host, bound, plain_http)
    service.remember_base_url(base)
    print(f"southgate: serving {base}", flush=True)
    print(f"southgate: CA certificate {service.keys.ca_pem}", flush=True)
    print("southgate: admin token in %s" % (service.data_dir / "admin-token"), flush=True)
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log("shutting down")
        server.close()
        await runner.cleanup()
        try:
            await asyncio.wait_for(server.wait_closed(), 3)
        except asyncio.TimeoutError:
            pass
        service.close()
        log("stopped")
