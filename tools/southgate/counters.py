"""Connection and request counters for benchmarks (connections, TLS handshakes, requests, bytes in).

A TCP accept creates the protocol (counted as a connection); asyncio calls `connection_made` only after
the TLS handshake finished, so that call counts handshakes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connections = 0
        self.tls_handshakes = 0
        self.requests = 0
        self.bytes_in = 0
        self.responses: dict[str, int] = {}
        self.by_path: dict[str, dict[str, int]] = {}
        self.recent_connections: deque[ConnStats] = deque(maxlen=200)
        self.recent_requests: deque[dict[str, Any]] = deque(maxlen=500)
        self._next_conn = 1

    def new_connection(self) -> ConnStats:
        self.connections += 1
        stats = ConnStats(self._next_conn)
        self._next_conn += 1
        self.recent_connections.append(stats)
        return stats

    def record_request(
        self,
        conn: ConnStats | None,
        method: str,
        path: str,
        status: int,
        bytes_in: int,
        ms: float,
        agent_id: str | None,
    ) -> None:
        self.requests += 1
        key = str(status)
        self.responses[key] = self.responses.get(key, 0) + 1
        per = self.by_path.setdefault(path, {"requests": 0, "bytes_in": 0})
        per["requests"] += 1
        per["bytes_in"] += bytes_in
        if conn is not None:
            conn.requests += 1
        self.recent_requests.append(
            {
                "connection": conn.id if conn else None,
                "method": method,
                "path": path,
                "status": status,
                "bytes_in": bytes_in,
                "ms": round(ms, 2),
                "agent": agent_id,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "tls_handshakes": self.tls_handshakes,
            "requests": self.requests,
            "bytes_in": self.bytes_in,
            "responses": dict(self.responses),
            "by_path": {k: dict(v) for k, v in self.by_path.items()},
            "per_connection": [c.to_dict() for c in self.recent_connections],
            "per_request": list(self.recent_requests),
        }


class ConnStats:
    def __init__(self, conn_id: int) -> None:
        self.id = conn_id
        self.tls = False
        self.requests = 0
        self.bytes_in = 0
        self.mark = 0  # bytes_in at the end of the previous request on this connection
        self.open = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tls": self.tls,
            "requests": self.requests,
            "bytes_in": self.bytes_in,
            "open": self.open,
        }


class CountingHandler(RequestHandler):
    """aiohttp's request handler plus byte and handshake counting."""

    def __init__(self, counters: Counters, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sg_counters = counters
        self.sg_stats = counters.new_connection()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object"):
            self.sg_stats.tls = True
            self.sg_counters.tls_handshakes += 1
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.sg_stats.bytes_in += len(data)
        self.sg_counters.bytes_in += len(data)
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.sg_stats.open = False
        super().connection_lost(exc)


def counting_factory(
    server: web.Server, counters: Counters, handler: type[CountingHandler] = CountingHandler
) -> Any:
    """Protocol factory for loop.create_server that builds `handler`s (CountingHandlers) for `server`."""
    kwargs = dict(server._kwargs)  # noqa: SLF001 - aiohttp keeps handler options here

    def factory() -> CountingHandler:
        return handler(counters, server, loop=server._loop, **kwargs)  # noqa: SLF001

    return factory
