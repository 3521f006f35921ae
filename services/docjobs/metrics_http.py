"""A small HTTP endpoint for processes that do not speak HTTP otherwise (the jobstore, the renderer):
`GET /metrics` in the Prometheus text format and `GET /healthz` (200 while the event loop answers and the
process says it is healthy; 503 with its reason when it says it is not: a renderer whose sandbox is down).

It is a few lines over asyncio streams rather than a web framework, so that neither process imports one
(the jobstore must not import aiohttp). prometheus-client's own server would do the HTTP, but it answers
from a thread; this one runs on the process's event loop, so a scrape can first refresh gauges with an
async call (the jobstore reads its queue gauges from the database at scrape time). Each connection
serves one request and is closed: all a scraper or a probe needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8 * 1024  # request line and headers; a scrape sends a few hundred bytes
REQUEST_TIMEOUT_S = 10.0
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class MetricsServer:
    """Serves /metrics and /healthz on host:port until stopped."""

    def __init__(self, registry: CollectorRegistry,
                 before_scrape: Callable[[], Awaitable[None]] | None = None,
                 unhealthy: Callable[[], str | None] | None = None) -> None:
        self._registry = registry
        self._before_scrape = before_scrape
        self._unhealthy = unhealthy  # why the process is not healthy now, or None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_REQUEST_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                await self._respond(writer, 431, "text/plain; charset=utf-8", b"request head too large\n")
                return
            except (asyncio.IncompleteReadError, TimeoutError):
                return  # the client went away or never finished its request: nobody to answer
            method, path = _request_line(head)
            if path is None:
                await self._respond(writer, 400, "text/plain; charset=utf-8", b"malformed request line\n")
            elif path not in ("/metrics", "/healthz"):
                await self._respond(writer, 404, "text/plain; charset=utf-8", b"not found\n")
            elif method not in ("GET", "HEAD"):
                await self._respond(writer, 405, "text/plain; charset=utf-8", b"only GET and HEAD\n",
                                    extra={"Allow": "GET, HEAD"})
            elif path == "/healthz":
                reason = self._unhealthy() if self._unhealthy is not None else None
                body = {"status": "ok"} if reason is None else {"status": "unavailable", "reason": reason}
                await self._respond(writer, 200 if reason is None else 503, "application/json",
                                    json.dumps(body).encode(), head_only=method == "HEAD")
            else:
                await self._metrics(writer, head_only=method == "HEAD")
        except ConnectionError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _metrics(self, writer: asyncio.StreamWriter, *, head_only: bool) -> None:
        try:
            if self._before_scrape is not None:
                await self._before_scrape()
            body = generate_latest(self._registry)
        except Exception:
            log.exception("metrics scrape failed")
            await self._respond(writer, 500, "text/plain; charset=utf-8", b"scrape failed\n")
            return
        await self._respond(writer, 200, CONTENT_TYPE_LATEST, body, head_only=head_only)

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes, *,
                       head_only: bool = False, extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), "Connection": "close",
                   **(extra or {})}
        head = f"HTTP/1.1 {status} {REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
        await writer.drain()


def _request_line(head: bytes) -> tuple[str, str | None]:
    """(method, path without the query), or path None for a request line that is not HTTP."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return "", None
    return parts[0].decode("latin-1"), parts[1].split(b"?", 1)[0].decode("latin-1")


async def start_metrics_server(host: str, port: int, registry: CollectorRegistry,
                               before_scrape: Callable[[], Awaitable[None]] | None = None,
                               unhealthy: Callable[[], str | None] | None = None) -> MetricsServer:
    server = MetricsServer(registry, before_scrape, unhealthy)
    await server.start(host, port)
    return server
