"""GET /api/jobs/{jobId}/events: a job's events as Server-Sent Events.

Each event carries the jobstore's event id as its `id:`, so a browser's EventSource resumes with
Last-Event-ID (header, or `lastEventId` in the query) with no loss and no duplicate. A comment line every
DOCJOBS_SSE_HEARTBEAT seconds keeps proxies from closing an idle stream; `X-Accel-Buffering: no` keeps
nginx from buffering it. The stream ends after job-complete or job-failed; a finished job answers with
its history at once.

A stream subscribes to the process's EventHub first, then reads its job's stored events after the
resume id (a short, history-only Watch), then takes live events from its queue, skipping ids it already
sent; when the hub (re)connects to the jobstore, or the stream falls behind, it reads the history again.
So a jobstore restart is invisible to the browser, and an open stream holds no gRPC call of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import grpc
from aiohttp import web

from docjobs.v1 import jobstore_pb2 as pb

from .hub import EventHub
from .payloads import TERMINAL_EVENTS, sse_event

log = logging.getLogger("gateway.sse")

RETRY_MS = 3000
RESUME_ATTEMPTS = 30


def frame(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {name}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or "0"
    try:
        value = int(raw)
    except ValueError:
        return 0
    return max(0, value)


class _Stream:
    __slots__ = ("after", "download_url", "job_id", "response", "stub", "user_id")

    def __init__(self, response: web.StreamResponse, stub: Any, job_id: str, user_id: str,
                 download_url: str, after: int) -> None:
        self.response = response
        self.stub = stub
        self.job_id = job_id
        self.user_id = user_id
        self.download_url = download_url
        self.after = after

    async def send(self, event: pb.JobEvent) -> bool:
        """Write one event; True when it was the terminal one."""
        if event.id <= self.after:
            return False
        name, data = sse_event(event, self.download_url)
        await self.response.write(frame(name, data, event.id))
        self.after = event.id
        return name in TERMINAL_EVENTS

    async def catch_up(self) -> bool:
        """The stored events after the last one sent; True when the terminal one was among them."""
        failures = 0
        while True:
            call = self.stub.Watch(pb.WatchRequest(job_id=self.job_id, user_id=self.user_id,
                                                   after_event_id=self.after, history_only=True))
            try:
                async for event in call:
                    if await self.send(event):
                        return True
                return False
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                failures += 1
                if failures > RESUME_ATTEMPTS:
                    raise
                await asyncio.sleep(min(2.0, 0.1 * failures))  # the jobstore is restarting
            finally:
                call.cancel()


async def stream_job_events(request: web.Request, stub: Any, hub: EventHub, job_id: str, user_id: str,
                            download_url: str, heartbeat_s: float, shutdown: asyncio.Event) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no", "Connection": "keep-alive"})
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    stream = _Stream(response, stub, job_id, user_id, download_url, last_event_id(request))
    queue = hub.subscribe(job_id)  # first: whatever commits from here on reaches the queue
    try:
        if await stream.catch_up():
            return response
        while not shutdown.is_set():
            try:
                async with asyncio.timeout(heartbeat_s):  # no extra task per wait, unlike wait_for
                    event = await queue.get()
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if event.id == 0:  # the hub reconnected, or this stream fell behind
                if await stream.catch_up():
                    return response
            elif await stream.send(event):
                return response
    except grpc.aio.AioRpcError as exc:
        with contextlib.suppress(ConnectionResetError):
            await response.write(frame("error", {"jobId": job_id, "error": {
                "code": exc.code().name.lower(), "message": exc.details() or "the job service is unavailable"}}))
    except ConnectionResetError:
        pass  # the client went away
    finally:
        hub.unsubscribe(job_id, queue)
        # Bounded: a client that stopped reading must not hold the handler (or a shutdown) forever.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await response.write_eof()
    return response
