"""The event dispatcher: one reader of the events table per jobstore process, fanning out to Watch
streams in memory and waking waiting Claims.

Event ids come from a sequence, so concurrent transactions can commit them out of order: id 10 may be
visible before id 9 commits. Reading "id > last seen" would then skip 9 for ever. The dispatcher keeps a
settled cursor instead:

* every read notes A, the highest id handed out so far, and then takes a fresh transaction id X. A
  transaction holding an event id <= A already had its own xid when it took that id (events are written
  after the job row), so its xid is < X;
* it reads (one statement, one snapshot) the events after the cursor and the snapshot's xmin;
* once a read's snapshot has xmin >= X, every such transaction has ended and is visible to it, so
  nothing <= A can still appear: after delivering what that read found, the cursor moves to A (no
  further than the read got, if it stopped at READ_BATCH events);
* while a scope watch is open (it sends an event only once the cursor has passed it: watch.py), the
  mark is a statement of its own before the read, whose snapshot can then settle it at once; otherwise
  the mark is taken in the read's own statement, after its snapshot (one round trip before a job's or
  the all-jobs watch has its event, not two), and a later read settles it unless no xid was running at
  the read's snapshot nor taken between its snapshot and its X;
* events above the cursor that were already delivered are remembered (and skipped) until then;
* a mark still unsettled after STALLED_AFTER_S is settled by the xmin of the transactions that may hold
  event ids (docjobs_events_xmin, migration 0011), not of every transaction in the cluster: one left open
  in another database held every scope watch for as long as it stayed open.

So every committed event is delivered exactly once, in id order per job, however commits interleave,
and a LISTEN reconnect needs nothing but another read. While no stream subscribes, nothing needs
delivering: the dispatcher then only moves its cursor (one small query, rate-limited), so a stream that
subscribes later does not make it read a backlog. Reads are coalesced: however many bells ring, at most
one read runs at a time, and on average at most one per ACTIVE_MIN_INTERVAL_S (up to READ_BURST in a row
after a quiet spell: a pause after every read made a job's next event, a small document's completion
most often, wait out the pause left by the read before it).

Subscribers get bounded buffers. One that falls behind is marked overflowed beside its buffer, never by a
message in it (the buffer is the thing that is full): its reader finds the mark before anything else,
and re-reads the table or ends its stream (jobstore/watch.py decides which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

import asyncpg

from docjobs.v1 import jobstore_pb2 as pb

from . import convert
from .errors import DATABASE_ERRORS
from .queries import Q

log = logging.getLogger(__name__)

READ_BATCH = 2000
IDLE_READ_S = 1.0  # a safety read when no bell rang; costs one small query
SETTLE_READ_S = 0.02  # re-read soon while delivered events are not yet settled
ACTIVE_MIN_INTERVAL_S = 0.002  # with subscribers: at most one read per 2 ms on average, however often bells ring
READ_BURST = 4  # reads that may follow one another at once after a quiet spell
IDLE_MIN_INTERVAL_S = 0.05  # without subscribers: only the cursor moves, at most every 50 ms
STALLED_AFTER_S = 0.1  # a mark this old settles by the transactions that may hold event ids, not all of them


class FellBehind(Exception):
    """The subscription's buffer filled and live events were dropped: the reader must re-read the table."""


class Closed(Exception):
    """The jobstore is stopping: the stream ends and its client watches again from its last event id."""


class Subscription:
    """One stream's live events: a bounded buffer, the overflow mark beside it, and the reader's wake-up."""

    __slots__ = ("_events", "_limit", "_settle_waiters", "_waiter", "closed", "job_id", "overflowed", "session_id",
                 "user_id")

    def __init__(self, *, job_id: str | None = None, user_id: str | None = None, session_id: str | None = None,
                 limit: int = 1024, settle_waiters: set[Subscription] | None = None) -> None:
        self.job_id = job_id
        self.user_id = user_id
        self.session_id = session_id
        self._limit = limit
        self._events: deque[pb.JobEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # The dispatcher's set of subscriptions to wake when the settled cursor moves (see changed()).
        self._settle_waiters = settle_waiters if settle_waiters is not None else set()
        self.overflowed = False
        self.closed = False

    def matches(self, event: pb.JobEvent) -> bool:
        if self.job_id is not None:
            return event.job_id == self.job_id
        if self.user_id is not None and event.user_id != self.user_id:
            return False
        return not (self.session_id is not None and event.session_id != self.session_id)

    def put(self, event: pb.JobEvent) -> bool:
        """Buffer a live event; False when the buffer was full (the subscription is now overflowed)."""
        if self.overflowed or self.closed:
            return not self.overflowed
        if len(self._events) >= self._limit:
            self.overflowed = True
            self._events.clear()  # the reader re-reads the table: what is buffered is of no more use
        else:
            self._events.append(event)
        self._wake()
        return not self.overflowed

    def close(self) -> None:
        self.closed = True
        self._wake()

    def resync(self) -> None:
        """The reader is about to re-read the table: buffer live events again from now on."""
        self.overflowed = False
        self._events.clear()

    async def next(self) -> pb.JobEvent:
        """The next live event. Raises FellBehind when events were dropped, Closed when the jobstore stops."""
        while True:
            if self.overflowed:
                raise FellBehind
            if self.closed:
                raise Closed
            if self._events:
                return self._events.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def drain(self) -> list[pb.JobEvent]:
        """The live events buffered now, taken. Raises as next() does."""
        if self.overflowed:
            raise FellBehind
        if self.closed:
            raise Closed
        events = list(self._events)
        self._events.clear()
        return events

    async def changed(self, *, until_settled: bool) -> None:
        """Until an event arrives, the subscription is overflowed or closed, or (until_settled: the reader
        holds events that wait for it) the settled cursor moves. Only readers that hold events are woken
        by the cursor: with thousands of scope watches open, waking all of them at every move costs the
        jobstore's loop more than the events do."""
        if self._events or self.overflowed or self.closed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        if until_settled:
            self._settle_waiters.add(self)
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._settle_waiters.discard(self)

    def wake(self) -> None:
        """End a wait in changed() (the settled cursor moved)."""
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class EventDispatcher:
    def __init__(self, pool: asyncpg.Pool, *, on_claimable: Callable[[set[str]], None]) -> None:
        self._pool = pool
        self._on_claimable = on_claimable
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()  # ends an idle pause: a new stream wants its events now
        self._stopping = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._cursor = 0
        self._read_allowance = float(READ_BURST)  # reads that may start now without a pause (a token bucket)
        self._allowance_at = 0.0  # when the allowance was last counted (the loop's clock)
        self._delivered: set[int] = set()
        self._checkpoints: deque[tuple[int, int, float]] = deque()  # (position, horizon, when it was taken)
        # Subscriptions by what they follow, so that an event is offered only to those it may concern:
        # a job's; a user's (and maybe one session of theirs); a session's, of any user; every event.
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_user: dict[str, set[Subscription]] = {}
        self._by_session: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._settle_waiters: set[Subscription] = set()
        self._epoch = 0  # counts subscriptions, so an idle round can tell that one happened meanwhile
        self._idle_epoch = 0
        self.reads = 0
        self.stalled_reads = 0  # reads that asked for the event writers' xmin (_stalled)
        self.delivered_total = 0
        self.overflows = 0  # live events dropped by full buffers
        self.healthy = True

    @property
    def settled(self) -> int:
        """Every event with an id up to this one has been handed to the subscribers of its time."""
        return self._cursor

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._all_subscriptions())

    def _all_subscriptions(self) -> list[set[Subscription]]:
        return [*self._by_job.values(), *self._by_user.values(), *self._by_session.values(), self._everything]

    def _index(self, sub: Subscription) -> tuple[dict[str, set[Subscription]] | None, str]:
        """Where a subscription is kept: an index and its key, or None for the set of every event's."""
        if sub.job_id is not None:
            return self._by_job, sub.job_id
        if sub.user_id is not None:
            return self._by_user, sub.user_id
        if sub.session_id is not None:
            return self._by_session, sub.session_id
        return None, ""

    async def start(self) -> None:
        mark = await self._pool.fetchrow(Q.events_sequence_position)
        assert mark is not None  # one row, always
        self._cursor = mark["position"]
        self._task = asyncio.create_task(self._run(), name="event-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self) -> None:
        """Something was committed (here or, per NOTIFY, elsewhere): read again soon."""
        self._wake.set()

    def subscribe(self, *, job_id: str | None = None, user_id: str | None = None,
                  session_id: str | None = None, limit: int = 1024) -> Subscription:
        """No job, user or session: every event (a gateway's all-jobs stream). Once the dispatcher is
        closing, a new subscription is closed from the start."""
        self._epoch += 1
        self._subscribed.set()
        sub = Subscription(job_id=job_id, user_id=user_id, session_id=session_id, limit=limit,
                           settle_waiters=self._settle_waiters)
        if self._closing:
            sub.close()
        index, key = self._index(sub)
        if index is None:
            self._everything.add(sub)
        else:
            index.setdefault(key, set()).add(sub)
        return sub

    def close_subscriptions(self) -> None:
        """The jobstore is stopping: every subscriber's stream ends now (its client resumes elsewhere)."""
        self._closing = True
        for subs in self._all_subscriptions():
            for sub in subs:
                sub.close()

    def unsubscribe(self, sub: Subscription) -> None:
        index, key = self._index(sub)
        if index is None:
            self._everything.discard(sub)
            return
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            timeout = SETTLE_READ_S if self._checkpoints else IDLE_READ_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                if self.subscriber_count or self._epoch != self._idle_epoch:
                    self._idle_epoch = self._epoch
                    started = asyncio.get_running_loop().time()
                    await self._read()
                    idle = False
                else:
                    self._subscribed.clear()
                    await self._advance_idle()
                    idle = True
                if failures:
                    log.warning("event dispatcher reads the database again")
                failures = 0
                self.healthy = True
                if not idle:
                    await self._pace(started)
                elif not self._subscribed.is_set():
                    # Idle reads are rate-limited, but a stream that subscribes meanwhile must not wait
                    # out the pause for its first live events (that cost each new Watch up to 50 ms).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_MIN_INTERVAL_S):
                            await self._subscribed.wait()
            except Exception as exc:  # the loop must outlive any error: without it no live event flows
                if not isinstance(exc, DATABASE_ERRORS):
                    log.exception("event dispatcher: unexpected error; reading again")
                elif failures == 0:
                    log.warning("event dispatcher cannot read events: %s", exc)
                failures += 1
                self.healthy = False
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                self._wake.set()

    async def _pace(self, started: float) -> None:
        """After an active read (begun at `started`): a pause of ACTIVE_MIN_INTERVAL_S only once READ_BURST
        reads have followed one another with less than that between them. The allowance grows with the
        time between reads, never with a read's own time: under a steady stream of bells each read is
        followed by the whole pause, as it always was (the rate the benchmarks load it at)."""
        earned = (started - self._allowance_at) / ACTIVE_MIN_INTERVAL_S
        self._read_allowance = min(float(READ_BURST), self._read_allowance + earned) - 1
        if self._read_allowance < 0:
            await asyncio.sleep(-self._read_allowance * ACTIVE_MIN_INTERVAL_S)
            self._read_allowance = 0.0  # the pause has paid for this read
        self._allowance_at = asyncio.get_running_loop().time()

    def _stalled(self) -> bool:
        """Whether the oldest mark has waited past STALLED_AFTER_S: the snapshots' xmin, the oldest
        transaction running anywhere in the cluster, may be one that never writes an event (a write left
        open in another database, or on other tables of this one), and would hold the cursor, and every
        scope watch, for as long as it stays open. The reads then ask for the xmin of the transactions
        that may hold event ids (docjobs_events_xmin): a look at the lock table, so not on every read."""
        if not self._checkpoints:
            return False
        return asyncio.get_running_loop().time() - self._checkpoints[0][2] > STALLED_AFTER_S

    async def _read(self) -> None:
        while True:
            self.reads += 1
            stalled = self._stalled()
            self.stalled_reads += stalled
            async with self._pool.acquire() as conn:
                if self._by_user or self._by_session:
                    # Scope watches wait for the cursor: the mark in a statement of its own, before the
                    # read, so that the read's snapshot can settle it at once.
                    mark = await conn.fetchrow(Q.events_sequence_position)
                    rows = await conn.fetch(Q.events_after, self._cursor, READ_BATCH, list(self._delivered),
                                            stalled)
                    assert mark is not None  # one row, always
                    position, horizon = mark["position"], mark["horizon"]
                else:
                    rows = await conn.fetch(Q.events_after_marked, self._cursor, READ_BATCH, list(self._delivered),
                                            stalled)
                    position, horizon = rows[0]["position"], rows[0]["horizon"]  # at least one row, always
            xmin = rows[0]["xmin"]
            # The jobs left pending by this batch's events, and their types: a job whose pending event is
            # followed by its claim in the same batch (a hand-off at enqueue writes both) wakes nobody.
            pending: dict[object, str] = {}
            last_read = self._cursor
            count = 0
            for row in rows:
                event_id = row["id"]
                if event_id is None:
                    continue
                count += 1
                last_read = event_id
                self._delivered.add(event_id)
                if row["kind"] == "status":
                    if row["status"] == "pending":
                        pending[row["job_id"]] = row["job_type"]
                    else:
                        pending.pop(row["job_id"], None)
                self._deliver(convert.event(row))
            full = count >= READ_BATCH
            # A full batch may have left events unread above last_read: settle no further than that.
            self._checkpoints.append((min(position, last_read) if full else position, horizon,
                                      asyncio.get_running_loop().time()))
            self._settle(xmin, last_read if full else None)
            if pending:
                self._on_claimable(set(pending.values()))
            if not full:
                return

    async def _advance_idle(self) -> None:
        """No subscriber: settle the cursor without reading events (none would be delivered).

        Only if nobody subscribed while this ran: a stream that subscribed and read its history before
        some event committed must get that event from the next (active) read, so the cursor must not
        pass it here. The checkpoint stays, and an active read settles it."""
        self.reads += 1
        epoch = self._epoch
        stalled = self._stalled()
        async with self._pool.acquire() as conn:
            mark = await conn.fetchrow(Q.events_sequence_position)
            xmin = await conn.fetchval(Q.snapshot_xmin, stalled)
        assert mark is not None  # one row, always
        self._checkpoints.append((mark["position"], mark["horizon"], asyncio.get_running_loop().time()))
        if self._epoch == epoch and not self.subscriber_count:
            self._settle(xmin)

    def _settle(self, xmin: int, read_to: int | None = None) -> None:
        """Move the cursor to the marks whose xid is below xmin, the xmin of a snapshot whose events were
        all delivered: up to read_to only, if that read stopped there (a full batch; the marks above it
        wait for the reads that follow, which read the rest of that snapshot's events and more)."""
        before = self._cursor
        while (self._checkpoints and self._checkpoints[0][1] <= xmin
               and (read_to is None or self._checkpoints[0][0] <= read_to)):
            settled, _, _ = self._checkpoints.popleft()
            if settled > self._cursor:
                self._cursor = settled
        if self._delivered:
            self._delivered = {i for i in self._delivered if i > self._cursor}
        if self._cursor > before:
            for sub in list(self._settle_waiters):  # scope watches holding events until they settle (watch.py)
                sub.wake()

    def _deliver(self, event: pb.JobEvent) -> None:
        self.delivered_total += 1
        for subs in (self._by_job.get(event.job_id, ()), self._by_user.get(event.user_id, ()),
                     self._by_session.get(event.session_id, ()), self._everything):
            for sub in subs:
                if sub.matches(event) and not sub.put(event):
                    self.overflows += 1
