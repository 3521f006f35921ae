"""GET /api/jobs/{jobId}/events: a job's events as Server-Sent Events.

Each event carries the jobstore's event id as its `id:`, so a browser's EventSource resumes with
Last-Event-ID (header, or `lastEventId` in the query) with no loss and no duplicate. A comment line every
DOCJOBS_SSE_HEARTBEAT seconds keeps proxies from closing an idle stream; `X-Accel-Buffering: no` keeps
nginx from buffering it. The stream ends after job-complete or job-failed; a finished job answers with
its history at once. If the jobstore restarts, the stream watches again from the last id it sent,
invisibly to the browser. A client that goes away releases its Watch stream at once.
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


async def stream_job_events(request: web.Request, stub: Any, job_id: str, user_id: str, download_url: str,
                            heartbeat_s: float, shutdown: asyncio.Event) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no", "Connection": "keep-alive"})
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    after = last_event_id(request)
    failures = 0
    try:
        while not shutdown.is_set():
            call = stub.Watch(pb.WatchRequest(job_id=job_id, user_id=user_id, after_event_id=after))
            try:
                while True:
                    read = asyncio.ensure_future(call.read())
                    while True:
                        done, _ = await asyncio.wait({read}, timeout=heartbeat_s)
                        if done:
                            break
                        await response.write(b": heartbeat\n\n")
                    event = read.result()
                    if event is grpc.aio.EOF:
                        return response
                    failures = 0
                    name, data = sse_event(event, download_url)
                    await response.write(frame(name, data, event.id))
                    after = event.id
                    if name in TERMINAL_EVENTS:
                        return response
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                      grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
                    await response.write(frame("error", {"jobId": job_id, "error": {
                        "code": exc.code().name.lower(), "message": exc.details() or ""}}))
                    return response
                failures += 1
                if failures > RESUME_ATTEMPTS:
                    await response.write(frame("error", {"jobId": job_id, "error": {
                        "code": "unavailable", "message": "the job service is unavailable"}}))
                    return response
                # The jobstore went away (restart, rollout): watch again from the last id sent.
                await asyncio.sleep(min(2.0, 0.1 * failures))
            finally:
                call.cancel()
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away; the Watch call was cancelled above
    finally:
        with contextlib.suppress(Exception):
            await response.write_eof()
    return response
