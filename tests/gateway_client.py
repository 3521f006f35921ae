"""Running the gateway on a loopback port for tests, and reading Server-Sent Events like a browser."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from docjobs.pgserver import free_port
from gateway.app import SERVER_OPTIONS, create_app
from gateway.settings import Settings

from .conftest import GRPC_TOKEN

SECRET = "test-secret-0123456789abcdef-0123456789"


def token(user: str, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600, **claims}, secret, algorithm="HS256")


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


@dataclass
class RunningGateway:
    runner: web.AppRunner
    base: str

    async def stop(self) -> None:
        # Bounded, and loud: a gateway that cannot stop within 15 s is a bug to see, not a test to hang.
        try:
            async with asyncio.timeout(15):
                await self.runner.cleanup()
        except TimeoutError:
            raise AssertionError("the gateway did not stop within 15 s") from None


async def start_gateway(jobstore_address: str, **overrides: Any) -> RunningGateway:
    """overrides: the gateway's settings, and `sock`: a socket bound already (its port held from the moment
    it was chosen), to serve on."""
    sock: socket.socket | None = overrides.pop("sock", None)
    port = sock.getsockname()[1] if sock is not None else free_port()
    options: dict[str, Any] = {"auth": "jwt", "jwt_secret": SECRET, "sse_heartbeat_s": 0.5, "grpc_token": GRPC_TOKEN,
                               "http_port": port, **overrides}
    settings = Settings(jobstore_address=jobstore_address, **options)
    runner = web.AppRunner(create_app(settings), shutdown_timeout=2, **SERVER_OPTIONS)
    await runner.setup()
    site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, "127.0.0.1", settings.http_port)
    await site.start()
    return RunningGateway(runner, f"http://127.0.0.1:{settings.http_port}")


@dataclass
class SseEvent:
    name: str
    data: dict[str, Any]
    id: int | None


@dataclass
class SseStream:
    events: list[SseEvent] = field(default_factory=list)
    comments: int = 0
    retry: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def sse_events(response: aiohttp.ClientResponse, stream: SseStream | None = None) -> AsyncIterator[SseEvent]:
    """Events as EventSource parses them from a response; comments and retry hints go to stream."""
    name, event_id = "message", None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line == "":
            if data:
                yield SseEvent(name, json.loads("\n".join(data)), event_id)
            name, data, event_id = "message", [], None
        elif line.startswith(":"):
            if stream is not None:
                stream.comments += 1
        elif line.startswith("retry:"):
            if stream is not None:
                stream.retry = int(line[6:])
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("id:"):
            event_id = int(line[3:])


async def read_sse(session: aiohttp.ClientSession, url: str, *, headers: dict[str, str] | None = None,
                   max_events: int | None = None, stream: SseStream | None = None) -> SseStream:
    """Read a stream until it ends (or max_events arrived), as EventSource would parse it. Events are
    appended to `stream` as they arrive, for a test that watches them while the read goes on."""
    stream = stream if stream is not None else SseStream()
    async with session.get(url, headers=headers or {}) as response:
        stream.headers = dict(response.headers)
        if response.status != 200:
            raise AssertionError(f"{response.status}: {await response.text()}")
        async for event in sse_events(response, stream):
            stream.events.append(event)
            if max_events is not None and len(stream.events) >= max_events:
                break
    return stream


async def read_sse_like_eventsource(session: aiohttp.ClientSession, url_of: Any, *, attempts: int = 50,
                                    on_event: Any = None) -> list[SseEvent]:
    """What a browser's EventSource does: read; when the connection ends before the terminal event,
    reconnect (to url_of(), which may change with a restarted server) with Last-Event-ID."""
    events: list[SseEvent] = []
    last_id: int | None = None
    for _ in range(attempts):
        headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
        try:
            async with session.get(url_of(), headers=headers) as response:
                if response.status != 200:
                    raise aiohttp.ClientError(f"status {response.status}")
                async for event in sse_events(response):
                    events.append(event)
                    if event.id is not None:
                        last_id = event.id
                    if on_event is not None:
                        await on_event(event)
                    if event.name in ("job-complete", "job-failed"):
                        return events
        except (aiohttp.ClientError, ConnectionError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the stream never reached its terminal event")
