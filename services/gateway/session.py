"""GET /api/events: every event of one user's jobs (in one session, or all of them) as one SSE stream.

A chat page shows several documents at once; a stream per job runs into the browser's 6 connections per
origin and the per-user cap. This stream carries them all: the per-job stream's event names and data
(each with `jobId`), an `id:` on every event (the jobstore's event id), increasing along the stream, and
resume by one Last-Event-ID. It never ends because a job ended; jobs created after it opened are in it.

The one decision: each session stream holds a scope Watch of its own at the jobstore (`user_id` and
`session_id`), rather than riding the EventHub's one all-jobs stream. Event ids commit out of order
across jobs (id 9 may commit after id 10), so a stream that sent 10 and then 9 could not be resumed by one
id: "after 10" loses 9 if the client had not read it. Only the jobstore knows when no lower id can still
commit (its dispatcher's settled cursor), and its scope Watch delivers in that order: stored then live
events, ids strictly increasing, each one once settled (jobstore/watch.py). The hub's stream is live
events as the dispatcher reads them, with no such order and no history of a scope; riding it would mean
carrying the settled cursor to every gateway and reading a scope's history another way. The cost is one
gRPC stream per open session stream (an HTTP/2 stream on the gateway's one channel, and a subscription in
the jobstore's dispatcher); a page needs one such stream where it needed one per job. Its opening counts
against DOCJOBS_JOBSTORE_MAX_INFLIGHT until the jobstore has taken the call; the open Watch does not (a
few hundred idle chats must not hold every slot).

Resume: whatever ended the Watch (the jobstore restarting, or this watcher falling behind, both
UNAVAILABLE), the stream watches again after the last id it read, with backoff, without end, sending its
heartbeats meanwhile; the browser sees nothing. A gateway restart ends the stream, and EventSource
reconnects with Last-Event-ID to the new process, which watches from there. Heartbeats and the shutdown
come from the hub, as for a job's stream. A client that reads slowly is not buffered for: at QUEUE_SIZE
events read and not yet sent the stream stops reading its Watch, whose jobstore buffer then fills, and it
watches again from where it stopped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from docjobs.v1 import jobstore_pb2 as pb

from .hub import CLOSE, HEARTBEAT, QUEUE_SIZE
from .payloads import sse_event
from .sse import HEADERS, RETRY_MS, expired, frame

if TYPE_CHECKING:
    from .sse import Streams

log = logging.getLogger("gateway.session")

# Codes after which the Watch is opened again: the jobstore restarting, away, or ending a watcher that
# fell behind. Any other code is a fault that watching again would only repeat.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})


def open_session(streams: Streams, user_id: str, session_id: str, after: int,
                 expires: int | None = None) -> SessionStream:
    """A session stream, counted against its user's open streams (429 at the cap), told the hub's
    heartbeats and shutdown, and ended when its credential expires (`expires`)."""
    streams.admit(user_id)
    stream = SessionStream(streams, user_id, session_id, after, expires)
    streams.hub.attach(stream)
    return stream


class SessionStream(web.StreamResponse):
    """One open session stream: the response, the events read from its Watch and not yet sent, and the
    hub's markers (heartbeat, close)."""

    def __init__(self, streams: Streams, user_id: str, session_id: str, after: int,
                 expires: int | None = None) -> None:
        super().__init__(headers=HEADERS)
        self.streams: Streams | None = streams  # None once closed
        self.user_id = user_id
        self.session_id = session_id
        self.after = after  # the id of the last event sent (or the resume id)
        self.expires = expires  # when the credential it was opened with expires (None: never)
        self.read_upto = after  # the id of the last event read from the Watch
        self._events: collections.deque[pb.JobEvent] = collections.deque()
        self._beat = False
        self._closing = False
        self._failure: grpc.aio.AioRpcError | None = None
        self._wake_writer: asyncio.Future[None] | None = None
        self._wake_reader: asyncio.Future[None] | None = None
        self.reconnects = 0  # Watches opened again after the first

    # The hub's side: its markers only (this stream's events come from its own Watch).
    def put(self, event: pb.JobEvent) -> None:
        if event is CLOSE:
            self._closing = True
        elif event is HEARTBEAT:
            self._beat = True
        else:
            return  # RESYNC: the hub's own stream reconnected; this stream's Watch looks after itself
        _wake(self._wake_writer)

    async def start(self, request: web.Request) -> SessionStream:
        """Start the response; the handler returns it, and aiohttp's call of write_eof runs the stream."""
        try:
            await self.prepare(request)
        except BaseException:
            self.leave()
            raise
        return self

    async def write_eof(self, data: bytes = b"") -> None:
        if not self.prepared or self._eof_sent:
            await super().write_eof(data)
            return
        reader = asyncio.create_task(self._read(), name="session-watch")
        try:
            await self._write()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.leave()
        # Bounded: a client that stopped reading must not hold the handler (or a shutdown) forever.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await super().write_eof(data)

    async def _write(self) -> None:
        await self.write(f"retry: {RETRY_MS}\n\n".encode())
        while True:
            if self._closing:
                return  # the gateway is shutting down: the browser reconnects with Last-Event-ID
            if (self._events or self._beat) and expired(self.expires):
                return  # sends nothing more: the client reconnects with a fresh credential and Last-Event-ID
            if self._events:
                event = self._events.popleft()
                _wake(self._wake_reader)
                self._beat = False  # an event keeps the stream alive itself
                if event.id > self.after:
                    link = ""
                    if event.kind == pb.EVENT_KIND_COMPLETED:
                        link = self._streams.download_url(event.job_id, self.user_id)
                    name, data = sse_event(event, link)
                    await self.write(frame(name, data, event.id))
                    self.after = event.id
            elif self._failure is not None:
                exc = self._failure
                await self.write(frame("error", {"error": {
                    "code": exc.code().name.lower(), "message": exc.details() or "the job service failed"}}))
                return
            elif self._beat:
                self._beat = False
                await self.write(b": heartbeat\n\n")
            else:
                self._wake_writer = asyncio.get_running_loop().create_future()
                try:
                    await self._wake_writer
                finally:
                    self._wake_writer = None

    async def _read(self) -> None:
        """Read the scope's events from the jobstore into the queue, watching again whenever the Watch
        ends, until the stream ends (this task is cancelled) or the jobstore answers a fault."""
        failures = 0
        while True:
            request = pb.WatchRequest(user_id=self.user_id, session_id=self.session_id, after_event_id=self.read_upto)
            try:
                call = await self._streams.stub.open_watch(request)
                try:
                    failures = 0
                    while isinstance(event := await call.read(), pb.JobEvent):
                        if event.marker != pb.WATCH_MARKER_UNSPECIFIED or event.id <= self.read_upto:
                            continue
                        while len(self._events) >= QUEUE_SIZE:
                            self._wake_reader = asyncio.get_running_loop().create_future()
                            try:
                                await self._wake_reader
                            finally:
                                self._wake_reader = None
                        self._events.append(event)
                        self.read_upto = event.id
                        _wake(self._wake_writer)
                finally:
                    call.cancel()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT:
                    log.warning("a session stream's Watch failed: %s: %s", exc.code().name, exc.details())
                    self._failure = exc
                    _wake(self._wake_writer)
                    return
                if failures == 0:
                    log.info("a session stream's Watch ended (%s: %s); watching again from event %d",
                             exc.code().name, exc.details(), self.read_upto)
            failures += 1
            self.reconnects += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))

    def leave(self) -> None:
        """Leave the hub and the gateway's count of open streams (once)."""
        if self.streams is not None:
            streams, self.streams = self.streams, None
            streams.hub.detach(self)
            streams.release(self.user_id)

    @property
    def _streams(self) -> Streams:
        assert self.streams is not None, "the stream is closed"
        return self.streams


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
