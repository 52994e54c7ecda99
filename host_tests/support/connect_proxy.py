"""A small asyncio HTTP CONNECT proxy for tests (host side, CPython only).

    with ConnectProxy(auth=("user", "pass")) as proxy:
        proxy.url            # "http://127.0.0.1:PORT" (no credentials)
        proxy.url_with_auth  # "http://user:pass@127.0.0.1:PORT"
        proxy.tunnels        # tunnels established so far

Only CONNECT is served, only to loopback targets (it must never become an open proxy). Answers: 200 and a
byte pipe; 407 without/with wrong Basic credentials; 403 for a non-loopback target; 502 when the target
refuses the connection; 405 for other methods.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Any
from urllib.parse import quote

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ConnectProxy:
    def __init__(self, auth: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        self.auth = auth
        self.host = host
        self.port = 0
        self.tunnels = 0
        self.refused = 0
        self.requests = 0
        self.statuses: list[int] = []
        self.targets: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle --

    def start(self) -> ConnectProxy:
        self._thread = threading.Thread(target=self._run, name="connect-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._client, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    def close(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    def __enter__(self) -> ConnectProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- facts --

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url_with_auth(self) -> str:
        if not self.auth:
            return self.url
        user, password = self.auth
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    def stats(self, settle: bool = False) -> dict[str, Any]:
        return {
            "tunnels": self.tunnels,
            "refused": self.refused,
            "requests": self.requests,
            "statuses": list(self.statuses),
            "targets": list(self.targets),
        }

    def reset(self) -> None:
        self.tunnels = self.refused = self.requests = 0
        self.statuses.clear()
        self.targets.clear()

    # -- serving --

    async def _answer(self, writer: asyncio.StreamWriter, status: int, reason: str, extra: str = "") -> None:
        self.statuses.append(status)
        if status != 200:
            self.refused += 1
        if status != 200:  # a 2xx answer to CONNECT carries no Content-Length (RFC 9110 9.3.6)
            extra += "Content-Length: 0\r\n"
        writer.write(f"HTTP/1.1 {status} {reason}\r\n{extra}\r\n".encode())
        await writer.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            self.requests += 1
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k:
                    headers[k.strip().lower()] = v.strip()
            if len(parts) != 3 or parts[0] != "CONNECT":
                await self._answer(writer, 405, "Method Not Allowed")
                return
            target = parts[1]
            self.targets.append(target)
            if self.auth is not None:
                want = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
                if headers.get("proxy-authorization") != want:
                    await self._answer(
                        writer,
                        407,
                        "Proxy Authentication Required",
                        'Proxy-Authenticate: Basic realm="test"\r\n',
                    )
                    return
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            if host not in _LOOPBACK or not port.isdigit():
                await self._answer(writer, 403, "Forbidden")
                return
            try:
                up_reader, upstream = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
            except (OSError, TimeoutError):
                await self._answer(writer, 502, "Bad Gateway")
                return
            await self._answer(writer, 200, "Connection Established")
            self.tunnels += 1
            await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                if dst.can_write_eof():
                    dst.write_eof()
            except (OSError, RuntimeError):
                pass
