"""One Watch stream per gateway process for every job's events, fanned out to the SSE streams in memory.

Holding a gRPC call per open SSE stream costs tens of KiB each; here an open stream costs an Inbox. The
hub's stream is live-only, so each SSE stream first reads its job's stored events (a short history-only
Watch) and then takes live ones from its queue, skipping what it already sent; every (re)connection of
the hub tells the streams to read the history again (events committed while the hub was away are only in
the table). A stream whose queue overflows is told the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

log = logging.getLogger("gateway.hub")

RESYNC = pb.JobEvent()  # id 0: read the history again
QUEUE_SIZE = 256


class Inbox:
    """One SSE stream's live events: a list and one waiting future. (An asyncio.Queue per stream costs
    several times more memory, and thousands of streams are open at once.) Bounded: a stream that falls
    QUEUE_SIZE events behind drops them and is told to read its history instead."""

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: list[pb.JobEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: pb.JobEvent) -> None:
        if len(self._events) >= QUEUE_SIZE:
            self._events = [RESYNC]
        else:
            self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> pb.JobEvent:
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._events.pop(0)


class EventHub:
    def __init__(self, stub: pb_grpc.JobStoreStub) -> None:
        self._stub = stub
        self._streams: dict[str, set[Inbox]] = {}
        self._task: asyncio.Task[None] | None = None
        self.live = asyncio.Event()  # subscribed at the jobstore: live events flow
        self.connections = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, job_id: str) -> Inbox:
        inbox = Inbox()
        self._streams.setdefault(job_id, set()).add(inbox)
        return inbox

    def unsubscribe(self, job_id: str, queue: Inbox) -> None:
        queues = self._streams.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._streams[job_id]

    @property
    def stream_count(self) -> int:
        return sum(len(q) for q in self._streams.values())

    def _resync_all(self) -> None:
        for inboxes in self._streams.values():
            for inbox in inboxes:
                inbox.put(RESYNC)

    async def _run(self) -> None:
        failures = 0
        while True:
            call = self._stub.Watch(pb.WatchRequest(all_jobs=True))
            try:
                async for event in call:
                    if event.id == 0:  # the marker: subscribed
                        self.connections += 1
                        failures = 0
                        self.live.set()
                        self._resync_all()  # whatever was committed before, the streams read themselves
                        continue
                    for inbox in self._streams.get(event.job_id, ()):
                        inbox.put(event)
            except grpc.aio.AioRpcError as exc:
                if failures == 0:
                    log.warning("event stream from the jobstore lost (%s); reconnecting", exc.code().name)
            except Exception:  # the hub must outlive any error: without it no live event reaches a browser
                log.exception("event hub: unexpected error; reconnecting")
            finally:
                call.cancel()
            self.live.clear()
            failures += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
