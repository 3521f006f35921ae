"""The watch path: one job's, one scope's (user and/or session) or every job's events, stored then live.

Every Watch follows the same order: subscribe to the event dispatcher first, then read the stored events
after the resume id; whatever commits in between arrives on the subscription as well, and the reader skips
it by id. Live events are buffered per subscription, up to a bound (DOCJOBS_WATCH_BUFFER; the all-jobs
stream of a gateway, DOCJOBS_ALL_JOBS_WATCH_BUFFER). A reader that falls behind finds its subscription
marked overflowed (the mark lives beside the buffer, so a full buffer cannot hide it) and then:

* a job watch re-reads the job's stored events after the last one it sent and carries on: one job's
  events commit in id order (each transition holds the job's row lock), so "after the last sent" loses
  nothing and repeats nothing;
* a scope or all-jobs watch ends with UNAVAILABLE, saying to watch again. A gateway's hub watches again at
  once and has each of its streams re-read its own job's events; a gateway's session stream watches its
  scope again from the last id it received.

Events of different jobs commit out of id order (id 9 may commit after id 10). A scope watch therefore
sends an event only once the dispatcher's settled cursor has passed it (jobstore/events.py: every lower
id has been read, or never will be), holding the newer ones meanwhile, so its ids increase strictly and
"after the last id received" loses nothing and repeats nothing. That costs a live scope event one or two
dispatcher reads (SETTLE_READ_S, 20 ms each) of latency; a job watch needs no such wait (one job's events
commit in id order) and an all-jobs watch is the gateway's live fan-out, which resumes by job.

Markers are typed (`WatchMarker`), never an event with a special id: SUBSCRIBED starts an all-jobs
stream, FINISHED answers a history-only watch of a finished job whose terminal event the caller already
has (so a client that reconnects after the end knows there is nothing to wait for).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

from docjobs.v1 import jobstore_pb2 as pb

from . import convert, metrics
from .errors import Unavailable
from .events import Closed, EventDispatcher, FellBehind, Subscription
from .store import Row, Store

log = logging.getLogger(__name__)

HISTORY_PAGE = 500
# One message of WatchAllJobs: at most this many events, and no more bytes than this once one is in (an
# event's result may hold up to 1 MiB, and the channels take messages of up to 16 MiB).
ALL_JOBS_BATCH = 500
ALL_JOBS_BATCH_BYTES = 1 << 20
TERMINAL_EVENT_KINDS = frozenset({pb.EVENT_KIND_COMPLETED, pb.EVENT_KIND_FAILED, pb.EVENT_KIND_CANCELLED})
SUBSCRIBED = pb.JobEvent(marker=pb.WATCH_MARKER_SUBSCRIBED)
FINISHED = pb.JobEvent(marker=pb.WATCH_MARKER_FINISHED)

SHUTTING_DOWN = "the jobstore is shutting down; watch again from the last event id received"
FELL_BEHIND = "this watch fell behind the live events; watch again from the last event id received"


class Watches:
    """Opens watches over the store (stored events) and the dispatcher (live ones)."""

    def __init__(self, store: Store, dispatcher: EventDispatcher, *, buffer: int, all_jobs_buffer: int) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._buffer = buffer
        self._all_jobs_buffer = all_jobs_buffer
        self.open = 0  # live watches open on this process

    async def job(self, job_id: uuid.UUID, user_id: str | None, after_id: int) -> AsyncGenerator[pb.JobEvent, None]:
        """The job's events after after_id, stored then live, until its terminal event (the newest one:
        a retried job's earlier ones are followed by more).
        NotFound (before anything is sent) for a job that is not user_id's."""
        with self._subscribed("job", job_id=str(job_id)) as sub:
            job = await self._store.get_job(job_id, user_id)
            # Whether the job's newest event so far is its terminal one. A retried job has terminal events
            # followed by its new attempt's: only the last event it has can end the stream.
            at_end = _finished_by(job, after_id)
            last = after_id
            while True:
                async for event in self._stored(job_id, last):
                    last = event.id
                    yield event
                    at_end = event.kind in TERMINAL_EVENT_KINDS
                if at_end:
                    return
                try:
                    while True:
                        event = await _next(sub)
                        if event.id <= last:  # also in the stored events just read
                            # Or never sent: after_id was past it (a client's own, made-up cursor). Its
                            # terminal event ends the stream if it is the job's newest; waiting for one
                            # above after_id kept the stream open for ever.
                            if (event.kind in TERMINAL_EVENT_KINDS
                                    and _finished_by(await self._store.get_job(job_id, user_id), last)):
                                return
                            continue
                        last = event.id
                        yield event
                        if event.kind in TERMINAL_EVENT_KINDS:
                            return
                except FellBehind:
                    metrics.WATCH_OVERFLOWS.labels("job").inc()
                    sub.resync()  # live events buffer again from here; the table has the ones dropped

    async def job_history(self, job_id: uuid.UUID, user_id: str | None,
                          after_id: int) -> AsyncGenerator[pb.JobEvent, None]:
        """The job's stored events after after_id, then the end; FINISHED alone when the job is finished
        and nothing is left. (The status is read first: a job finished by then has its terminal event
        stored, so it is either in what follows or at or before after_id; a retry committed since adds
        events after it, and those are read instead.)"""
        job = await self._store.get_job(job_id, user_id)
        sent = False
        async for event in self._stored(job_id, after_id):
            sent = True
            yield event
        if not sent and _finished_by(job, after_id):
            yield FINISHED

    async def scope(self, user_id: str | None, session_id: str | None,
                    after_id: int) -> AsyncGenerator[pb.JobEvent, None]:
        """A user's and/or session's events after after_id, stored then live, without end, in id order:
        an event is sent once every lower id is settled (committed and read, or never to be), so the
        last id a client received is a resume point that loses nothing."""
        with self._subscribed("scope", user_id=user_id, session_id=session_id) as sub:
            held: list[int] = []  # a heap of the ids read but not yet settled
            events: dict[int, pb.JobEvent] = {}
            last = after_id  # the last id sent
            read = after_id  # the last id read from the table
            while True:
                # Every event up to `settled` has committed (so this read sees it) or been delivered to
                # `sub`; those above it may still have lower ids in flight, so they wait in the heap.
                settled = self._dispatcher.settled
                rows = await self._store.scope_events_after(user_id, session_id, read, HISTORY_PAGE)
                for row in rows:
                    event = convert.event(row)
                    read = event.id
                    events[event.id] = event
                    heapq.heappush(held, event.id)
                complete = len(rows) < HISTORY_PAGE
                # A full page may have left lower settled ids for the next one: send no further than it read.
                upto = settled if complete else min(settled, read)
                while held and held[0] <= upto:
                    last = heapq.heappop(held)
                    yield events.pop(last)
                if complete:
                    break
            while True:
                try:
                    live = sub.drain()
                except FellBehind:
                    metrics.WATCH_OVERFLOWS.labels("scope").inc()
                    raise Unavailable(FELL_BEHIND) from None
                except Closed:
                    raise Unavailable(SHUTTING_DOWN) from None
                for event in live:
                    # At or below last: read by the dispatcher only now, but committed before we
                    # subscribed, or already read from the table.
                    if event.id > last and event.id not in events:
                        events[event.id] = event
                        heapq.heappush(held, event.id)
                settled = self._dispatcher.settled
                if held and held[0] <= settled:
                    while held and held[0] <= settled:
                        last = heapq.heappop(held)
                        yield events.pop(last)
                    continue  # the cursor may have moved while they were sent: look again before waiting
                await sub.changed(until_settled=bool(held))

    async def all_jobs(self) -> AsyncGenerator[pb.JobEventBatch, None]:
        """Every job's events from now on: SUBSCRIBED first, then every event committed after it, in
        batches of what the dispatcher delivered together (_batches: bounded in events and bytes). One
        message per event cost a gateway half of its CPU at 900 events/s."""
        with self._subscribed("all_jobs", limit=self._all_jobs_buffer) as sub:
            yield pb.JobEventBatch(events=[SUBSCRIBED])
            while True:
                try:
                    await sub.changed(until_settled=False)
                    events = sub.drain()
                except Closed:
                    raise Unavailable(SHUTTING_DOWN) from None
                except FellBehind:
                    metrics.WATCH_OVERFLOWS.labels("all_jobs").inc()
                    log.warning("an all-jobs watch fell behind (%d events buffered); it must watch again",
                                self._all_jobs_buffer)
                    raise Unavailable(FELL_BEHIND) from None
                for batch in _batches(events):
                    yield batch

    async def all_jobs_one_by_one(self) -> AsyncGenerator[pb.JobEvent, None]:
        """all_jobs one event at a time: Watch(all_jobs), as gateways older than WatchAllJobs ask."""
        async with contextlib.aclosing(self.all_jobs()) as batches:
            async for batch in batches:
                for event in batch.events:
                    yield event

    async def _stored(self, job_id: uuid.UUID, after_id: int) -> AsyncIterator[pb.JobEvent]:
        """A job's stored events after after_id, page by page."""
        while True:
            rows = await self._store.job_events_after(job_id, after_id, HISTORY_PAGE)
            for row in rows:
                yield convert.event(row)
            if len(rows) < HISTORY_PAGE:
                return
            after_id = rows[-1]["id"]

    @contextlib.contextmanager
    def _subscribed(self, kind: str, *, job_id: str | None = None, user_id: str | None = None,
                    session_id: str | None = None, limit: int | None = None) -> Iterator[Subscription]:
        sub = self._dispatcher.subscribe(job_id=job_id, user_id=user_id, session_id=session_id,
                                         limit=self._buffer if limit is None else limit)
        self.open += 1
        metrics.OPEN_WATCHES.inc()
        try:
            yield sub
        finally:
            self.open -= 1
            metrics.OPEN_WATCHES.dec()
            self._dispatcher.unsubscribe(sub)


def _finished_by(job: Row, after_id: int) -> bool:
    """Whether the job, as read, was finished with its terminal event (then its newest) at or before
    after_id. Its status and newest event id are read together: a retry that commits after the read
    adds events above after_id, which the caller then reads."""
    return job["status"] in convert.TERMINAL_STATUSES and (job["last_event_id"] or 0) <= after_id


def _batches(events: list[pb.JobEvent]) -> Iterator[pb.JobEventBatch]:
    """The events in order, as messages of at most ALL_JOBS_BATCH events, each closed once it holds
    ALL_JOBS_BATCH_BYTES (so a message is at most that plus one event)."""
    batch: list[pb.JobEvent] = []
    size = 0
    for event in events:
        batch.append(event)
        size += event.ByteSize()
        if len(batch) >= ALL_JOBS_BATCH or size >= ALL_JOBS_BATCH_BYTES:
            yield pb.JobEventBatch(events=batch)
            batch, size = [], 0
    if batch:
        yield pb.JobEventBatch(events=batch)


async def _next(sub: Subscription) -> pb.JobEvent:
    try:
        return await sub.next()
    except Closed:
        raise Unavailable(SHUTTING_DOWN) from None
