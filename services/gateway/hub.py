"""One Watch stream per gateway process for every job's events, fanned out to the SSE streams in memory.

Holding a gRPC call per open SSE stream costs tens of KiB each; here an open stream costs a queue. The
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


class EventHub:
    def __init__(self, stub: pb_grpc.JobStoreStub) -> None:
        self._stub = stub
        self._streams: dict[str, set[asyncio.Queue[pb.JobEvent]]] = {}
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

    def subscribe(self, job_id: str) -> asyncio.Queue[pb.JobEvent]:
        queue: asyncio.Queue[pb.JobEvent] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._streams.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[pb.JobEvent]) -> None:
        queues = self._streams.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._streams[job_id]

    @property
    def stream_count(self) -> int:
        return sum(len(q) for q in self._streams.values())

    def _resync_all(self) -> None:
        for queues in self._streams.values():
            for queue in queues:
                self._put(queue, RESYNC)

    @staticmethod
    def _put(queue: asyncio.Queue[pb.JobEvent], event: pb.JobEvent) -> None:
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            # Behind: drop what is queued and make it read the history instead.
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(RESYNC)

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
                    for queue in self._streams.get(event.job_id, ()):
                        self._put(queue, event)
            except grpc.aio.AioRpcError as exc:
                if failures == 0:
                    log.warning("event stream from the jobstore lost (%s); reconnecting", exc.code().name)
            finally:
                call.cancel()
            self.live.clear()
            failures += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
