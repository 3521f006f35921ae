"""One stream per gateway process for every job's events (WatchAllJobs: several events to a message),
fanned out to the SSE streams in memory.

Holding a gRPC call per open SSE stream costs tens of KiB each; here a stream is an entry in a dict. The
hub's stream is live-only, so each SSE stream first reads its job's stored events (a short history-only
Watch) and then takes live ones from its queue, skipping what it already sent; every (re)connection of
the hub tells the streams to read the history again (events committed while the hub was away are only in
the table). A stream whose inbox overflows reads its history too. When the hub's own stream falls behind
(the jobstore's buffer for it fills), the jobstore ends it with UNAVAILABLE: the hub watches again, and
its SUBSCRIBED marker has every stream read its history, which holds whatever was dropped. The hub also
keeps the one timer that sends every stream its heartbeat, and tells every stream to end when the gateway
shuts down; a session's stream (gateway/session.py) reads its events from a Watch of its own and takes
only these markers from the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any, Protocol

import grpc

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

log = logging.getLogger("gateway.hub")

# Markers a stream finds among its events (compared by identity; all have id 0):
RESYNC = pb.JobEvent()  # read the history again
HEARTBEAT = pb.JobEvent()  # write a comment line: the stream is idle but alive
CLOSE = pb.JobEvent()  # end the stream: the gateway is shutting down
QUEUE_SIZE = 256  # live events a stream may hold unsent; beyond, it reads its history instead
BEAT_CHUNK = 200  # streams told their heartbeat in one turn of the event loop
# A heartbeat period's turns: each stream beats in one of them, every period. A prime: streams are placed
# by their address, and addresses step by their objects' size, which a prime number of turns spreads evenly.
BEAT_SLICES = 17


class Subscriber(Protocol):
    def put(self, event: pb.JobEvent) -> None: ...


class EventHub:
    def __init__(self, stub: pb_grpc.JobStoreAsyncStub, heartbeat_s: float) -> None:
        self._stub = stub
        self._heartbeat_s = heartbeat_s
        self._streams: dict[str, list[Subscriber]] = {}  # a list: most jobs have one stream, a set costs 4x
        self._listeners: set[Subscriber] = set()  # streams that want only the markers (gateway/session.py)
        self._tasks: list[asyncio.Task[None]] = []
        self.live = asyncio.Event()  # subscribed at the jobstore: live events flow
        self.connections = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="event-hub"),
                       asyncio.create_task(self._beat(), name="event-hub-heartbeat")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def subscribe(self, job_id: str, stream: Subscriber) -> None:
        self._streams.setdefault(job_id, []).append(stream)

    def unsubscribe(self, job_id: str, stream: Subscriber) -> None:
        streams = self._streams.get(job_id)
        if streams is not None:
            streams[:] = [s for s in streams if s is not stream]  # by identity: a stream is not a value
            if not streams:
                del self._streams[job_id]

    def attach(self, stream: Subscriber) -> None:
        """A stream with events of its own (a session's) that takes the heartbeats and the shutdown."""
        self._listeners.add(stream)

    def detach(self, stream: Subscriber) -> None:
        self._listeners.discard(stream)

    @property
    def stream_count(self) -> int:
        return sum(len(s) for s in self._streams.values()) + len(self._listeners)

    def _everyone(self) -> list[Subscriber]:
        """Every open stream, at this moment: the job streams, then the listeners."""
        return [stream for streams in self._streams.values() for stream in streams] + list(self._listeners)

    def _tell_all(self, marker: pb.JobEvent) -> None:
        for stream in self._everyone():
            stream.put(marker)

    def close_all(self) -> None:
        """Shutting down: every open stream ends (its browser reconnects elsewhere with Last-Event-ID)."""
        self._tell_all(CLOSE)

    async def _beat(self) -> None:
        """One timer for every stream's heartbeat comment (a timer per stream costs ~1 KiB each). The
        period is cut in BEAT_SLICES turns and each stream beats in its own (by its address), so a
        stream still hears every `heartbeat_s`, and the first time within that of its start; and each
        turn's streams are told BEAT_CHUNK at a time (each writes its comment at the loop's next turn).
        Every stream at once held every live event back: ten thousand writes in one turn by a few hundred
        milliseconds; and with two gateways of 1,000 streams on two cores, the bursts every 15 s were the
        slowest 1% of jobs end to end (bench/scale.py: p99 28 ms without heartbeats, 46-85 ms with them
        all at once)."""
        loop = asyncio.get_running_loop()
        # Each turn looks at every stream to find its own (~0.1 us each): next to the comments it writes
        # (~20 us each, a seventeenth of the streams), little, however short the period.
        turn_s = self._heartbeat_s / BEAT_SLICES
        next_turn = loop.time()
        for turn in itertools.cycle(range(BEAT_SLICES)):
            next_turn += turn_s
            if next_turn < loop.time() - turn_s:  # after a stall the turns go on from now, one at a time,
                next_turn = loop.time()       # not all those missed at once
            await asyncio.sleep(max(next_turn - loop.time(), 0))  # turns do not drift by their own work
            told = 0
            for stream in self._everyone():
                if (id(stream) >> 4) % BEAT_SLICES == turn:
                    stream.put(HEARTBEAT)
                    told += 1
                    if told % BEAT_CHUNK == 0:
                        await asyncio.sleep(0)  # these write now, between live events

    async def _run(self) -> None:
        failures = 0
        batched = True  # WatchAllJobs; a jobstore older than it has only Watch(all_jobs), one event a message
        while True:
            call: Any = (self._stub.WatchAllJobs(pb.WatchAllJobsRequest()) if batched
                         else self._stub.Watch(pb.WatchRequest(all_jobs=True)))
            try:
                async for message in call:
                    for event in (message.events if batched else (message,)):
                        if event.marker == pb.WATCH_MARKER_SUBSCRIBED:
                            self.connections += 1
                            failures = 0
                            self.live.set()
                            self._tell_all(RESYNC)  # whatever was committed before, the streams read themselves
                            continue
                        for stream in self._streams.get(event.job_id, ()):
                            stream.put(event)
            except grpc.aio.AioRpcError as exc:
                if batched and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("the jobstore has no WatchAllJobs (it is older than this gateway): watching every "
                             "job's events one to a message")
                    batched = False
                    continue
                if failures == 0:
                    log.warning("event stream from the jobstore lost (%s: %s); reconnecting", exc.code().name,
                                exc.details())
            except Exception:  # the hub must outlive any error: without it no live event reaches a browser
                log.exception("event hub: unexpected error; reconnecting")
            finally:
                call.cancel()
            self.live.clear()
            batched = True  # the jobstore may have been upgraded meanwhile
            failures += 1
            await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
