"""GET /api/jobs/{jobId}/events: a job's events as Server-Sent Events.

Each event carries the jobstore's event id as its `id:`, so a browser's EventSource resumes with
Last-Event-ID (header, or `lastEventId` in the query) with no loss and no duplicate. A comment line every
DOCJOBS_SSE_HEARTBEAT seconds keeps proxies from closing an idle stream; `X-Accel-Buffering: no` keeps
nginx from buffering it. The stream ends after job-complete or job-failed; a finished job answers with
its history at once.

A stream does not outlive the credential it was opened with (a bearer token's or a URL token's `exp`):
it is checked at every event and heartbeat, and once expired the stream ends, sending nothing more, so
a revoked user's stream stops within a heartbeat and a link handed out for an hour works for an hour.
The client reconnects with a fresh credential and Last-Event-ID, and loses nothing.

A stream subscribes to the process's EventHub first, then reads its job's stored events after the
resume id (a short, history-only Watch, which also answers 404 for a job that is not the caller's), then
takes live events from its inbox, skipping ids it already sent; when the hub (re)connects to the
jobstore, or the stream falls behind, it reads the history again. So a jobstore restart is invisible to
the browser, and an open stream holds no gRPC call of its own.

Memory: thousands of streams stay open for minutes each, so an open stream is kept small. It is one
object, `EventStream`, the response itself and its inbox at once, and nothing else waits per stream: the
request handler returns the prepared response, and the live part runs where aiohttp finishes a
response, in `write_eof` (so the handler's frames and the middleware chain are gone while the stream
is open); heartbeats come from the hub's one timer, not a timer per stream; the download link of the
final event is signed when that event is written.

The session stream (GET /api/events, every job of a session on one stream) is built differently, in
gateway/session.py: each holds a scope Watch of its own rather than riding the hub, because events of
different jobs commit out of id order and only the jobstore's settled cursor puts them in an order that
one Last-Event-ID resumes without loss. Both kinds count against DOCJOBS_SSE_STREAMS_PER_USER here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, TypeAlias

import grpc
from aiohttp import web
from prometheus_client import Gauge

from docjobs.v1 import jobstore_pb2 as pb

from .auth import Auth
from .errors import ApiError
from .hub import CLOSE, HEARTBEAT, QUEUE_SIZE, RESYNC, EventHub
from .inflight import BoundedStub
from .payloads import TERMINAL_EVENTS, artifact_url, sse_event
from .peruser import PerUserCount

log = logging.getLogger("gateway.sse")

TERMINAL_EVENT_KINDS = frozenset({pb.EVENT_KIND_COMPLETED, pb.EVENT_KIND_FAILED, pb.EVENT_KIND_CANCELLED})
TERMINAL_STATUSES = frozenset({pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED})

# A Watch of a job's stored events; and one whose first event was read before the response started.
WatchCall: TypeAlias = grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.JobEvent]
History: TypeAlias = tuple[WatchCall, AsyncIterator[pb.JobEvent], pb.JobEvent | None]

RETRY_MS = 3000
RESUME_ATTEMPTS = 30
HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache, no-transform",
           "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def frame(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {name}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


MAX_EVENT_ID = 2**63 - 1  # event ids are Postgres bigints


class CredentialExpired(Exception):
    """The token a stream was opened with has expired: the stream ends, sending nothing more."""


def expired(expires: int | None) -> bool:
    """Whether a stream's credential (its caller's `expires`) has expired: the stream then ends, at its
    next event (which is not sent) or heartbeat, and the client reconnects with a fresh credential."""
    return expires is not None and time.time() >= expires


def last_event_id(request: web.Request) -> int:
    """The resume id: the Last-Event-ID header (EventSource sends back the last `id:` it got), or
    `lastEventId` in the query. It must be one of our event ids: a whole number from 0 to 2^63-1."""
    field = "Last-Event-ID" if request.headers.get("Last-Event-ID") else "lastEventId"
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or "0"
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_EVENT_ID:
        raise ApiError(400, "invalid_last_event_id", "must be an event id: a whole number from 0 to 2^63-1", field)
    return int(raw)


class Streams:
    """What the open streams of a gateway process share: the jobstore, the hub, the signer of download
    links, and the count of open streams per user (at most DOCJOBS_SSE_STREAMS_PER_USER each)."""

    def __init__(self, stub: BoundedStub, hub: EventHub, auth: Auth, per_user: int, gauge: Gauge) -> None:
        self.stub = stub
        self.hub = hub
        self.auth = auth
        self.per_user = per_user
        self.gauge = gauge
        self.open_by_user = PerUserCount(per_user)

    def admit(self, user_id: str) -> None:
        """Count one more open stream of the user's (a job's or a session's); 429 at the cap."""
        if not self.open_by_user.admit(user_id):
            raise ApiError(429, "too_many_streams", f"at most {self.per_user} open event streams per user; close "
                           "one (a page needs one stream at a time, not one per job: /api/events carries every "
                           "job of a session)", "events")
        self.gauge.inc()

    def release(self, user_id: str) -> None:
        self.gauge.dec()
        self.open_by_user.release(user_id)

    def open(self, job_id: str, user_id: str, after: int, expires: int | None = None) -> EventStream:
        self.admit(user_id)
        return EventStream(self, job_id, user_id, after, expires)

    def closed(self, stream: EventStream) -> None:
        self.hub.unsubscribe(stream.job_id, stream)
        self.release(stream.user_id)

    def download_url(self, job_id: str, user_id: str) -> str:
        return artifact_url(job_id, self.auth.job_url_token(user_id, job_id))


class EventStream(web.StreamResponse):
    """One open SSE stream: the response, its inbox of live events from the hub, and where it stands."""

    def __init__(self, streams: Streams, job_id: str, user_id: str, after: int, expires: int | None = None) -> None:
        super().__init__(headers=HEADERS)
        self.streams: Streams | None = streams  # None once closed
        self.job_id = job_id
        self.user_id = user_id
        self.after = after  # the id of the last event sent (or the resume id)
        self.expires = expires  # when the credential it was opened with expires (None: never)
        self._inbox: list[pb.JobEvent] = []
        self._waiter: asyncio.Future[None] | None = None
        self._history: History | None = None
        self.finished = False  # the terminal event was sent

    # The hub's side: called for each live event of this job, and for its markers.
    def put(self, event: pb.JobEvent) -> None:
        if event is CLOSE:
            self._inbox = [CLOSE]  # ends the stream next; the browser resumes what was pending, by id
        elif len(self._inbox) >= QUEUE_SIZE:
            self._inbox = [RESYNC]  # fell behind: read the history instead of what was dropped
        elif event is HEARTBEAT and self._inbox:
            return  # events are waiting: they keep the stream alive themselves
        else:
            self._inbox.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _next(self) -> pb.JobEvent:
        while not self._inbox:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.pop(0)

    async def send(self, event: pb.JobEvent) -> None:
        if event.id <= self.after:
            # Sent already, or never: the client's Last-Event-ID was past it (made up). Its terminal event
            # then ends the stream if the job is finished with it (waiting for one above Last-Event-ID
            # kept the stream open for ever).
            if event.kind in TERMINAL_EVENT_KINDS and await self._finished_by_now():
                self.finished = True
            return
        if expired(self.expires):
            raise CredentialExpired
        link = self._streams.download_url(self.job_id, self.user_id) if event.kind == pb.EVENT_KIND_COMPLETED else ""
        name, data = sse_event(event, link)
        await self.write(frame(name, data, event.id))
        self.after = event.id
        self.finished = name in TERMINAL_EVENTS

    async def send_all(self, events: AsyncIterable[pb.JobEvent]) -> None:
        """Send a history to its end: a retried job's terminal event is followed by its new attempt's
        events, so only the last event sent says whether the job is finished."""
        async for event in events:
            if event.marker == pb.WATCH_MARKER_FINISHED:  # a finished job: nothing is left to send
                self.finished = True
            else:
                await self.send(event)

    async def catch_up(self) -> None:
        """Send the stored events after the last one sent (a jobstore that restarts is waited for)."""
        failures = 0
        while True:
            call = await self._history_call()
            try:
                await self.send_all(call)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                failures += 1
                if failures > RESUME_ATTEMPTS:
                    raise
                await asyncio.sleep(min(2.0, 0.1 * failures))  # the jobstore is restarting
            finally:
                call.cancel()

    async def start(self, request: web.Request) -> EventStream:
        """Subscribe, start reading the job's stored events and start the response. The handler returns the
        stream to aiohttp, whose call of write_eof then sends the history and the live events. Until the
        response starts, a job that is not the caller's (or a jobstore that is away) raises as in any
        handler: a JSON error with its HTTP status."""
        self._streams.hub.subscribe(self.job_id, self)  # first: whatever commits from here on reaches the inbox
        try:
            call = await self._history_call()
        except BaseException:
            self.leave()
            raise
        try:
            history = aiter(call)
            first = await anext(history, None)  # NOT_FOUND (another user's job, or none) raises here
            await self.prepare(request)
        except BaseException:
            call.cancel()
            self.leave()
            raise
        self._history = (call, history, first)
        return self

    async def _finished_by_now(self) -> bool:
        """Whether the job is finished, with no event after the last one this stream counts as sent."""
        job = await self._streams.stub.GetJob(pb.GetJobRequest(job_id=self.job_id, user_id=self.user_id))
        return job.status in TERMINAL_STATUSES and job.last_event_id <= self.after

    async def _history_call(self) -> WatchCall:
        """A short Watch of the job's stored events after the last one sent (it waits for a call slot)."""
        return await self._streams.stub.Watch(pb.WatchRequest(job_id=self.job_id, user_id=self.user_id,
                                                              after_event_id=self.after, history_only=True))

    async def _send_history(self, started: History) -> None:
        """The rest of the history whose first event was read before the response started."""
        call, history, first = started
        self._history = None
        try:
            await self.send_all(history if first is None else _prepend(first, history))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await self.catch_up()  # the jobstore went away meanwhile: read it again from there
        finally:
            call.cancel()

    async def _live(self) -> None:
        await self.write(f"retry: {RETRY_MS}\n\n".encode())
        if self._history is not None:
            await self._send_history(self._history)  # (its own frame: the call is not held while the stream is open)
        while not self.finished:
            event = await self._next()
            if event is HEARTBEAT:
                if expired(self.expires):
                    return  # the client reconnects with a fresh credential, and Last-Event-ID
                await self.write(b": heartbeat\n\n")
            elif event is CLOSE:
                return  # the gateway is shutting down: the browser reconnects with Last-Event-ID
            elif event is RESYNC:  # the hub reconnected, or this stream fell behind
                await self.catch_up()
            else:
                await self.send(event)

    async def write_eof(self, data: bytes = b"") -> None:
        """aiohttp calls this once the handler has returned the response: the stream's live part runs
        here, then the response ends."""
        if not self.prepared or self._eof_sent:
            await super().write_eof(data)
            return
        try:
            await self._live()
        except CredentialExpired:
            pass  # ends as at a heartbeat after the expiry
        except grpc.aio.AioRpcError as exc:
            with contextlib.suppress(ConnectionResetError):
                await self.write(frame("error", {"jobId": self.job_id, "error": {
                    "code": exc.code().name.lower(), "message": exc.details() or "the job service is unavailable"}}))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self.leave()
        # Bounded: a client that stopped reading must not hold the handler (or a shutdown) forever.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await super().write_eof(data)

    def leave(self) -> None:
        """Leave the hub and the gateway's count of open streams (once)."""
        if self.streams is not None:
            streams, self.streams = self.streams, None
            streams.closed(self)

    @property
    def _streams(self) -> Streams:
        assert self.streams is not None, "the stream is closed"
        return self.streams


async def _prepend(first: pb.JobEvent, rest: AsyncIterator[pb.JobEvent]) -> AsyncIterator[pb.JobEvent]:
    yield first
    async for event in rest:
        yield event
