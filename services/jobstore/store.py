"""The job store's domain operations over the database: one method per thing a caller can do.

Transports (service.py) parse requests into the plain arguments taken here and map the results and
JobStoreError subclasses back. After every commit that other parties may wait for, `_committed` rings
the doorbell (other replicas), pokes the local event dispatcher and wakes local waiting claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from docjobs.futures import retrieve

from .batching import Batcher
from .claims import CLAIM_STATEMENTS, FOUND, FOUND_NONE, HANDOFFS, ClaimWaiters, Handoff
from .clock import Clock
from .errors import DATABASE_ERRORS, FailedPrecondition, InvalidArgument, NotFound
from .queries import Q
from .settings import Settings

Row = asyncpg.Record
ARTIFACT_CHUNK_BYTES = 1024 * 1024
FREE_RELEASES = 3
"""Releases of one job that count no attempt. A job whose render keeps bringing its sandbox down (its own
fault, though each release says otherwise) is then counted an attempt per release, and so ends."""


class NewJob(NamedTuple):
    """A job as Enqueue asks for it, checked (validation.py). A tuple: EnqueueMany makes 1,000 of them a
    call, and a frozen dataclass took three times as long to build."""

    job_type: str
    payload_json: str
    title: str
    user_id: str
    session_id: str
    message_id: str
    priority: int
    max_retries: int | None
    run_at: datetime | None
    expires_at: datetime | None
    idempotency_key: str | None
    webhook_url: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    lease_expires_at: datetime | None
    cancelled: bool


@dataclass(frozen=True)
class ArtifactHeader:
    job_id: uuid.UUID
    lease_token: uuid.UUID
    filename: str
    content_type: str


@dataclass(eq=False)
class _Claim:
    """One caller's claim, waiting for the claim connection (and perhaps carried by another's statement)."""

    ring: tuple[str, ...]  # the claimed job types, sorted: claims of the same types may share a statement
    lease_ms: int
    now: datetime | None
    max_jobs: int
    worker_id: str
    future: asyncio.Future[list[Row]]

    def joins(self, other: _Claim) -> bool:
        return (self.ring, self.lease_ms, self.now) == (other.ring, other.lease_ms, other.now)


class CarrierFailed(ConnectionError):
    """The claim statement that carried this claim (another worker's, shared) failed: nothing was claimed
    for it, and it may simply look again (an OSError, so callers retry it as a database hiccup)."""


class ClaimConnection:
    """The one connection a jobstore process claims on, one statement at a time.

    Claims on one connection do not fight over the same index entries with SKIP LOCKED. And the
    connection runs with enable_sort off, so the claim is planned as ordered walks of the index of
    pending jobs by user whatever the table's statistics say: a queue table goes from empty to
    thousands of rows faster than autoanalyze notices, and a plan made for "17 pending rows" that
    sorts them all costs milliseconds per claim once there are 10,000. The plan is generic (made once
    per connection): it does not depend on the arguments, and planning the fair claim statement takes
    longer than running it.

    Claims that wait while a statement runs are made together by the next one, when they claim the same
    job types with the same lease (up to MAX_JOBS_PER_STATEMENT jobs): one statement and one commit for
    all, each worker given its share in claim order. Under load, when several workers' slots free up
    during one claim, this is what keeps one connection from making them wait in line (a statement of
    forty jobs costs the database about what one of ten does); at low load a statement is one claim. A
    claim carried by another's statement returns as soon as that statement has answered, whatever else
    then waits for the connection. If the statement fails, its holder gets the error and each claim it
    carried a CarrierFailed of its own (nothing was claimed for it; it looks again).

    Users take turns (round robin, docs/architecture.md "Claim order"); the ring's position is the user
    the previous claim of the same job types ended with: one ring per set of types, since pools that claim
    different types see different users (with one position for all, a pdf pool's claims always resumed
    after the spreadsheet pool's user and could pass over a pdf user for ever). Each jobstore process keeps
    its own: with several replicas, a user gets at most one job per replica in each round.
    """

    RINGS = 256  # sets of job types remembered; beyond, the longest unused starts again from the first user
    # What one claim may ask for (validation.claim): the statement reads up to users x (jobs - users + 1)
    # index entries to count each user's share, so a statement of 500 cost more than 50 of 10 (282 ms,
    # 64,500 entries, at 250 users); a batch is never a claim larger than one worker's could be.
    MAX_JOBS_PER_STATEMENT = 100

    SETTINGS = {"enable_sort": "off", "plan_cache_mode": "force_generic_plan"}

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiting: list[_Claim] = []
        self._last_user: dict[tuple[str, ...], str] = {}  # per set of job types, most recently used last

    async def claim(self, job_types: list[str], max_jobs: int, lease_ms: int, worker_id: str,
                    now: datetime | None) -> list[Row]:
        request = _Claim(tuple(sorted(set(job_types))), lease_ms, now, max_jobs, worker_id,
                         asyncio.get_running_loop().create_future())
        request.future.add_done_callback(retrieve)  # a carried claim's caller may be gone (loop teardown)
        self._waiting.append(request)
        try:
            # The connection, or an earlier statement that carries this claim, whichever comes first: a
            # carried claim does not then wait for the statements queued behind it.
            acquiring = asyncio.ensure_future(self._lock.acquire())
            try:
                await asyncio.wait((acquiring, request.future), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                self._give_up(acquiring)
                raise
            if not acquiring.done() or acquiring.cancelled():
                self._give_up(acquiring)  # carried: the answer is in
            else:
                try:
                    if not request.future.done():
                        await self._run(request, self._take(request))
                finally:
                    self._lock.release()
        finally:
            if request in self._waiting:  # cancelled while it waited for the connection
                self._waiting.remove(request)
        return await request.future

    def _give_up(self, acquiring: asyncio.Future[Any]) -> None:
        """No statement to run: the lock, if the acquire got it, goes back; a pending acquire is cancelled
        (Lock.acquire then passes the lock to the next waiter)."""
        if acquiring.done() and not acquiring.cancelled():
            self._lock.release()
        else:
            acquiring.cancel()

    def _take(self, first: _Claim) -> list[_Claim]:
        """`first` and the claims waiting that can share its statement, in the order they came."""
        batch, left, jobs = [], [], first.max_jobs
        for request in self._waiting:
            if request is first:
                batch.append(request)
            elif (request.joins(first) and not request.future.done()
                  and jobs + request.max_jobs <= self.MAX_JOBS_PER_STATEMENT):
                batch.append(request)
                jobs += request.max_jobs
            else:
                left.append(request)
        self._waiting = left
        return batch

    async def _run(self, holder: _Claim, batch: list[_Claim]) -> None:
        """One statement for the batch; each claim's future gets its share (the holder's failure is raised)."""
        after = self._last_user.pop(holder.ring, "")
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, server_settings=self.SETTINGS)
            CLAIM_STATEMENTS.inc()
            rows = await self._conn.fetch(
                Q.claim, list(holder.ring), sum(r.max_jobs for r in batch), holder.lease_ms,
                [r.worker_id for r in batch for _ in range(r.max_jobs)], holder.now, after)
        except BaseException as exc:
            if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                                asyncpg.InternalClientError)) and self._conn is not None:
                # A claim that may or may not have committed is safe: its jobs' leases run out.
                self._conn.terminate()
                self._conn = None
            for request in batch:
                if request is not holder and not request.future.done():
                    request.future.set_exception(CarrierFailed(
                        f"the claim statement this claim shared failed ({type(exc).__name__}: {exc})"))
            raise
        finally:
            self._last_user[holder.ring] = after
            if len(self._last_user) > self.RINGS:
                del self._last_user[next(iter(self._last_user))]
        if rows:
            self._last_user[holder.ring] = rows[-1]["user_id"]
        # Rows come in claim order, each with its place in it (1, 2, ...): the k-th claim of the batch has
        # the places after its predecessors' shares, up to its own max_jobs of them.
        upto = 0
        for request in batch:
            share = [row for row in rows if upto < row["claim_place"] <= upto + request.max_jobs]
            upto += request.max_jobs
            request.future.set_result(share)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


# A job that expires sooner is not handed off: a claim would not take it either, and a worker would start
# what the expiry is about to fail.
HANDOFF_MIN_TIME_TO_LIVE = timedelta(seconds=1)


class Store:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, claims: ClaimWaiters, *,
                 on_commit: Callable[[set[str]], None] = lambda _types: None,
                 on_cancel: Callable[[str], None] = lambda _job_id: None,
                 jitter: Callable[[], float] = random.random, clock: Clock | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._claims = claims
        self._on_commit = on_commit
        self._on_cancel = on_cancel
        self._jitter = jitter
        self.clock = clock if clock is not None else Clock()
        self.shutting_down = asyncio.Event()
        self._claims_conn = ClaimConnection(settings.database_url)
        self._completions = Batcher(self._complete_batch, "completions")
        self._heartbeats = Batcher(self._heartbeat_batch, "heartbeats")

    async def close(self) -> None:
        await self._completions.stop()
        await self._heartbeats.stop()
        await self._claims_conn.close()

    def _committed(self, claimable_types: set[str] | None = None) -> None:
        self._on_commit(claimable_types or set())

    # --- clients -------------------------------------------------------------------------------

    async def enqueue(self, job: NewJob) -> tuple[Row, bool]:
        # Due now (and not about to expire), with a worker of its type waiting here: stored claimed by that
        # worker (claims.py).
        handoff = None
        if job.run_at is None and (job.expires_at is None
                                   or job.expires_at - self.clock.now() > HANDOFF_MIN_TIME_TO_LIVE):
            handoff = self._claims.hand_off(job.job_type)
        if handoff is None:
            row = await self._store_new(job, None)
        else:
            # Shielded: once the waiter is reserved, its answer must come whatever this call's caller does.
            stored = asyncio.ensure_future(self._store_new(job, handoff))
            stored.add_done_callback(retrieve)  # its error reached the waiting claim as no job
            row = await asyncio.shield(stored)
        if row is not None:
            if row["status"] == "pending":
                self._committed({job.job_type})
            return row, True
        # The idempotency key matched a job that exists (or is being committed by a racing call, whose
        # unique-index entry made this insert wait until it committed).
        existing = await self._pool.fetchrow(Q.get_job_by_idempotency_key, job.user_id, job.idempotency_key)
        if existing is None:  # pragma: no cover - the conflicting job was deleted in between
            raise FailedPrecondition("idempotency key conflict; retry the call")
        return existing, False

    async def _store_new(self, job: NewJob, handoff: Handoff | None) -> Row | None:
        """The enqueue statement: the job stored pending, or, with a handoff, claimed by its worker (and the
        handoff settled, whatever happens). None: its idempotency key is taken."""
        max_retries = job.max_retries if job.max_retries is not None else self._settings.default_max_retries
        arguments = (uuid.uuid4(), job.user_id, job.session_id, job.message_id, job.job_type, job.title,
                     job.payload_json, job.priority, max_retries, job.run_at, job.expires_at, job.idempotency_key,
                     self.clock.sql_now(), job.webhook_url)
        if handoff is None:
            row: Row | None = await self._pool.fetchrow(Q.enqueue, *arguments)
            return row
        handed = None
        token = uuid.uuid4()  # chosen here: should the statement's outcome be unknown, its claim is given back
        try:
            row = await self._pool.fetchrow(Q.enqueue_claimed, *arguments, handoff.worker_id, handoff.lease_ms,
                                            token)
            handed = row
            if row is not None:
                self._committed()  # here, not in enqueue(): its caller may have gone
            return row
        except BaseException:
            # It may have committed (a connection lost after COMMIT): the job must not wait out a lease
            # for a worker that will never hear of it, nor count an attempt for it.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._give_back([arguments[0]], [token]))
            raise
        finally:
            handoff.result.set_result([handed] if handed is not None else [])

    async def enqueue_many(self, jobs: list[NewJob]) -> list[tuple[Row, bool]]:
        """Store jobs in one statement; (row, created) for each, in order. A job whose idempotency key is
        taken (by a stored job, or by an earlier one of these) answers with the job that holds it."""
        ids = [uuid.uuid4() for _ in jobs]
        default_retries = self._settings.default_max_retries
        column = dict(zip(NewJob._fields, zip(*jobs, strict=True), strict=True))  # each field's values, in order
        rows = await self._pool.fetch(
            Q.enqueue_many, ids, column["user_id"], column["session_id"], column["message_id"], column["job_type"],
            column["title"], column["payload_json"], column["priority"],
            [default_retries if n is None else n for n in column["max_retries"]], column["run_at"],
            column["expires_at"], column["idempotency_key"], column["webhook_url"], self.clock.sql_now())
        if rows:
            self._committed({r["job_type"] for r in rows})
        stored = {r["id"]: r for r in rows}
        taken = [job for job_id, job in zip(ids, jobs, strict=True) if job_id not in stored]
        holders = {}
        if taken:
            found = await self._pool.fetch(Q.get_jobs_by_idempotency_keys, [j.user_id for j in taken],
                                           [j.idempotency_key for j in taken])
            holders = {(r["user_id"], r["idempotency_key"]): r for r in found}
        answers = []
        for job_id, job in zip(ids, jobs, strict=True):
            if job_id in stored:
                answers.append((stored[job_id], True))
                continue
            holder = holders.get((job.user_id, job.idempotency_key))
            if holder is None:  # pragma: no cover - the job holding the key was deleted in between
                raise FailedPrecondition("idempotency key conflict; retry the call")
            answers.append((holder, False))
        return answers

    async def get_job(self, job_id: uuid.UUID, user_id: str | None, *, with_payload: bool = False) -> Row:
        row = await self._pool.fetchrow(Q.get_job, job_id, with_payload)
        if row is None or (user_id is not None and row["user_id"] != user_id):
            raise NotFound(f"job {job_id} not found")
        return row

    async def list_jobs(self, user_id: str | None, session_id: str | None, statuses: list[str],
                        cursor: tuple[datetime, uuid.UUID] | None, limit: int, *,
                        with_payloads: bool = False) -> list[Row]:
        created, job_id = cursor if cursor is not None else (None, None)
        return await self._pool.fetch(Q.list_jobs, user_id, session_id, statuses, created, job_id, limit,
                                      with_payloads)

    async def cancel(self, job_id: uuid.UUID, user_id: str | None, reason: str) -> Row:
        await self.get_job(job_id, user_id)  # NOT_FOUND for an unknown job or another user's
        row = await self._pool.fetchrow(Q.cancel, job_id, reason or "cancelled by request", self.clock.sql_now())
        if row is None:
            current = await self.get_job(job_id, user_id)
            raise FailedPrecondition(f"job {job_id} is already {current['status']}")
        self._committed()
        self._on_cancel(str(job_id))  # a worker holding it on a session hears it now, not at its next heartbeat
        return row

    async def retry(self, job_id: uuid.UUID, user_id: str | None, reason: str) -> Row:
        """Run a failed or cancelled job again: a new attempt, the same id (queries.sql, `retry`)."""
        await self.get_job(job_id, user_id)  # NOT_FOUND for an unknown job or another user's
        row = await self._pool.fetchrow(Q.retry, job_id, reason or "retried by request", self.clock.sql_now())
        if row is None:
            current = await self.get_job(job_id, user_id)
            raise FailedPrecondition(f"job {job_id} is {current['status']}: only a failed or cancelled job "
                                     "can be retried")
        self._committed({row["job_type"]})
        return row

    async def redrive(self, job_type: str | None, failed_after: datetime | None, failed_before: datetime | None,
                      limit: int, reason: str) -> list[Row]:
        """Run failed jobs again, the oldest failures first, at most `limit`: their ids and types."""
        rows = await self._pool.fetch(Q.redrive, job_type, failed_after, failed_before, limit,
                                      reason or "redriven", self.clock.sql_now())
        if rows:
            self._committed({r["job_type"] for r in rows})
        return rows

    async def attempts(self, job_id: uuid.UUID) -> list[Row]:
        """The job's attempts that started or ended, oldest first, read from its events."""
        return await self._pool.fetch(Q.job_attempts, job_id)

    async def stats(self) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            counts = await conn.fetch(Q.stats_counts)
            rates = await conn.fetchrow(Q.stats_rates)
            extra = await conn.fetchrow(Q.stats_extra)
        assert extra is not None  # an aggregate: one row, always
        return {"counts": counts, "rates": rates, "oldest_due_age": extra["oldest_due_age"] or 0.0,
                "delayed": extra["delayed"]}

    # --- workers -------------------------------------------------------------------------------

    async def claim(self, worker_id: str, job_types: list[str], max_jobs: int, wait_s: float,
                    lease_ms: int) -> list[Row]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # The last look found a job due later: waiters that looked before it was made may not know of it.
        knows_due = False
        while True:
            waiter = self._claims.register(job_types, worker_id, lease_ms)
            found = again = failed = handed_off = False
            try:
                query = asyncio.ensure_future(self._claims_conn.claim(job_types, max_jobs, lease_ms, worker_id,
                                                                      self.clock.sql_now()))
                try:
                    rows = await asyncio.shield(query)
                except asyncio.CancelledError:
                    # The caller went away (its call was cancelled) while we were claiming: what the
                    # claim took must not wait for its leases to run out.
                    await asyncio.shield(self._release_after(query))
                    raise
                if rows:
                    FOUND.inc()
                    found = True
                    self._committed()
                    return rows
                FOUND_NONE.inc()
                # Looked and found nothing: from here a new job may be handed to it, while it reads when
                # the next job is due (a second statement, during which a finished worker's next job
                # would otherwise have gone the long way, often to a colder worker: claims.py).
                waiter.looked = True
                remaining = deadline - loop.time()
                if remaining <= 0 or self.shutting_down.is_set():
                    return []
                if not waiter.woken:
                    next_due = await self._pool.fetchval(Q.next_due_in, job_types, self.clock.sql_now())
                    knows_due = next_due is not None
                    timeout = remaining if next_due is None else min(remaining, max(next_due, 0.0) + 0.001)
                    await waiter.wait(timeout)
                else:
                    # Woken while it looked: it looks again at once, without reading when the next job is
                    # due. What woke it may be a job due later, which only it may know of: should its
                    # next look be its last, it passes the wake on.
                    knows_due = True
                if waiter.handoff is not None:
                    handed: list[Row] = await asyncio.shield(waiter.handoff.result)
                    if handed:
                        HANDOFFS.inc()
                        handed_off = True
                        return handed
                again = True  # the next round's query takes the wake, if it was one
            except BaseException:
                failed = True  # cancelled (the caller left), or the claim connection failed
                if waiter.handoff is not None:  # a job handed to a caller that left goes back to the queue
                    await asyncio.shield(self._release_after(waiter.handoff.result))
                raise
            finally:
                self._claims.unregister(waiter)
                if handed_off:
                    # The job came from its enqueue, with nothing more where it came from: only a job due
                    # later that it alone may know of, or a wake that found no other waiter while this one
                    # was reserved (wakes pass a reserved waiter by), is passed on.
                    passes_on = knows_due or (waiter.handoff is not None and waiter.handoff.wake_owed)
                else:
                    # More may be claimable (found); or this claim ends without looking at what woke it
                    # (a wake, or a job due later that it alone may know of): the next waiter of these
                    # types looks instead (claims.py).
                    passes_on = not again and (found or failed or waiter.woken or knows_due)
                if passes_on:
                    self._claims.wake(job_types)

    async def _release_after(self, query: asyncio.Future[list[Row]]) -> None:
        try:
            rows = await query
        except Exception:
            return
        await self.release(rows)

    async def release(self, rows: list[Row]) -> None:
        """Give claimed jobs back (pending, due now, no retry counted): their claim never reached its worker."""
        if rows:
            await self._give_back([r["id"] for r in rows], [r["lease_token"] for r in rows])

    async def _give_back(self, ids: list[uuid.UUID], tokens: list[uuid.UUID]) -> None:
        released = await self._pool.fetch(Q.release, ids, tokens)
        self._committed({r["job_type"] for r in released})

    async def release_worker(self, worker_id: str, keep: list[uuid.UUID]) -> list[uuid.UUID]:
        released = await self._pool.fetch(Q.release_worker, worker_id, keep)
        if released:
            self._committed({r["job_type"] for r in released})
        return [r["job_id"] for r in released]

    async def release_job(self, job_id: uuid.UUID, token: uuid.UUID, code: str, reason: str) -> Row:
        """Give back one claimed job through no fault of its own: pending and due now, no retry counted,
        up to FREE_RELEASES times per job; past that, counted as a failed attempt (as a retryable Fail)."""
        row = await self._pool.fetchrow(
            Q.release_job, job_id, token, code, reason, FREE_RELEASES, self._settings.retry_base_ms,
            self._settings.retry_cap_ms, self._jitter(), self.clock.sql_now())
        if row is None:
            state = await self._lease_state(job_id, token)
            raise FailedPrecondition(f"lease on job {job_id} is no longer held (job is {state}); not released")
        self._committed({row["job_type"]} if row["status"] == "pending" else None)
        return row

    async def _heartbeat_batch(self, batch: Sequence[tuple[Any, ...]]) -> list[Row]:
        ids, tokens, lease_ms, progress, messages = zip(*batch, strict=True)
        return await self._pool.fetch(Q.heartbeat, ids, tokens, lease_ms, progress, messages, self.clock.sql_now())

    async def _complete_batch(self, batch: Sequence[tuple[Any, ...]]) -> list[Row]:
        ids, tokens, results, artifacts = zip(*batch, strict=True)
        return await self._pool.fetch(Q.complete, ids, tokens, results, artifacts, self.clock.sql_now())

    async def heartbeat(self, job_id: uuid.UUID, token: uuid.UUID, progress: int | None,
                        message: str | None, lease_ms: int) -> Heartbeat:
        row = await self._heartbeats.submit(job_id, token, lease_ms, progress, message)
        if row is None:  # a stale lease, or a row another transaction held: this job alone, waiting its turn
            row = await self._pool.fetchrow(Q.heartbeat_waiting, [job_id], [token], [lease_ms], [progress], [message],
                                            self.clock.sql_now())
        if row is not None:
            if row["event_id"] is not None:
                self._committed()
            return Heartbeat(lease_expires_at=row["lease_expires_at"], cancelled=False)
        state = await self._lease_state(job_id, token)
        if state == "cancelled":
            return Heartbeat(lease_expires_at=None, cancelled=True)
        raise FailedPrecondition(f"lease on job {job_id} is no longer held (job is {state})")

    async def complete(self, job_id: uuid.UUID, token: uuid.UUID, result_json: str,
                       artifact_id: uuid.UUID | None) -> Row:
        if artifact_id is not None:
            belongs = await self._pool.fetchval(Q.artifact_belongs_to_job, artifact_id, job_id)
            if not belongs:
                raise InvalidArgument("artifact_id", "no stored artifact with this id for this job")
        row = await self._completions.submit(job_id, token, result_json, artifact_id)
        if row is None:
            raise await self._not_completed(job_id, token)
        self._committed()
        return row

    async def complete_many(self, items: Sequence[tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None]]
                            ) -> list[Row | BaseException]:
        """complete() of each job (CompleteMany, a worker session's completions): each job's row, or the
        error complete() would raise, in order. The jobs without an artifact go to the batcher together,
        a future each rather than a task each (a tenth of the jobstore's time on the queue benchmark went
        to tasks, shields and coroutines of single completions); those with one, alongside, as complete()."""
        answers: dict[int, Row | BaseException] = {}
        plain = [i for i, item in enumerate(items) if item[3] is None]
        linked = [i for i, item in enumerate(items) if item[3] is not None]
        # complete() rings for its own; if this call is cancelled meanwhile, they finish on their own.
        others = (asyncio.gather(*(self.complete(*items[i]) for i in linked), return_exceptions=True)
                  if linked else None)
        rows = await self._completions.submit_many([items[i] for i in plain]) if plain else []
        if any(row is not None and not isinstance(row, BaseException) for row in rows):
            self._committed()  # at once, not after the answers of the others below
        stale = [i for i, row in zip(plain, rows, strict=True) if row is None]
        reasons = await asyncio.gather(*(self._not_completed(items[i][0], items[i][1]) for i in stale),
                                       return_exceptions=True)
        answers.update(zip(stale, reasons, strict=True))
        answers.update((i, row) for i, row in zip(plain, rows, strict=True) if row is not None)
        if others is not None:
            answers.update(zip(linked, await others, strict=True))
        return [answers[i] for i in range(len(items))]

    async def _not_completed(self, job_id: uuid.UUID, token: uuid.UUID) -> FailedPrecondition:
        state = await self._lease_state(job_id, token)
        return FailedPrecondition(f"lease on job {job_id} is no longer held (job is {state}); not completed")

    async def complete_with_artifact(self, header: ArtifactHeader, content: bytes, result_json: str) -> Row:
        """Store a small artifact and complete the job with it in one statement; the result gets the
        artifact's id, size and sha256. With the lease gone nothing is stored."""
        chunks = [content[i:i + ARTIFACT_CHUNK_BYTES] for i in range(0, len(content), ARTIFACT_CHUNK_BYTES)]
        row = await self._pool.fetchrow(
            Q.complete_with_artifact, header.job_id, header.lease_token, result_json, uuid.uuid4(),
            header.filename, header.content_type, len(content), hashlib.sha256(content).hexdigest(), chunks,
            self.clock.sql_now())
        if row is None:
            state = await self._lease_state(header.job_id, header.lease_token)
            raise FailedPrecondition(f"lease on job {header.job_id} is no longer held (job is {state}); "
                                     "nothing stored")
        self._committed()
        return row

    async def fail(self, job_id: uuid.UUID, token: uuid.UUID, code: str, message: str,
                   retryable: bool) -> Row:
        row = await self._pool.fetchrow(
            Q.fail, job_id, token, code, message, retryable, self._settings.retry_base_ms,
            self._settings.retry_cap_ms, self._jitter(), self.clock.sql_now())
        if row is None:
            state = await self._lease_state(job_id, token)
            raise FailedPrecondition(f"lease on job {job_id} is no longer held (job is {state})")
        self._committed({row["job_type"]} if row["will_retry"] else None)
        return row

    async def _lease_state(self, job_id: uuid.UUID, token: uuid.UUID) -> str:
        row = await self._pool.fetchrow(Q.lease_state, job_id, token)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        if row["status"] == "cancelled" and row["token_matches"]:
            return "cancelled"
        if row["status"] == "processing":
            return "processing under another lease"
        return str(row["status"])

    # --- artifacts -----------------------------------------------------------------------------

    async def upload_artifact(self, header: ArtifactHeader, chunks: AsyncIterator[bytes]) -> Row:
        artifact_id = uuid.uuid4()
        created = await self._pool.fetchval(Q.begin_artifact, artifact_id, header.job_id, header.lease_token,
                                            header.filename, header.content_type, self.clock.sql_now())
        if created is None:
            state = await self._lease_state(header.job_id, header.lease_token)
            raise FailedPrecondition(f"lease on job {header.job_id} is no longer held (job is {state})")
        try:
            digest = hashlib.sha256()
            size = 0
            seq = 0
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                digest.update(chunk)
                size += len(chunk)
                while len(buffer) >= ARTIFACT_CHUNK_BYTES:
                    await self._pool.execute(Q.insert_artifact_chunk, artifact_id, seq,
                                             bytes(buffer[:ARTIFACT_CHUNK_BYTES]))
                    del buffer[:ARTIFACT_CHUNK_BYTES]
                    seq += 1
            if buffer:
                await self._pool.execute(Q.insert_artifact_chunk, artifact_id, seq, bytes(buffer))
                seq += 1
            row = await self._pool.fetchrow(Q.finish_artifact, artifact_id, header.job_id,
                                            header.lease_token, size, digest.hexdigest(), seq)
            if row is None:
                raise FailedPrecondition(f"lease on job {header.job_id} was lost during the upload")
            return row
        except BaseException:
            await asyncio.shield(self._discard_artifact(artifact_id))
            raise

    async def _discard_artifact(self, artifact_id: uuid.UUID) -> None:
        try:
            await self._pool.execute(Q.delete_artifact, artifact_id)
        except DATABASE_ERRORS:
            pass  # maintenance deletes abandoned uploads

    async def get_artifact(self, artifact_id: uuid.UUID, user_id: str | None) -> Row:
        row = await self._pool.fetchrow(Q.get_artifact, artifact_id)
        if row is None or (user_id is not None and row["user_id"] != user_id):
            raise NotFound(f"artifact {artifact_id} not found")
        return row

    async def artifact_chunks(self, artifact: Row) -> AsyncIterator[bytes]:
        """The artifact's bytes, one stored chunk at a time (bounded memory)."""
        for seq in range(artifact["chunk_count"]):
            data = await self._pool.fetchval(Q.get_artifact_chunk, artifact["id"], seq)
            if data is None:
                raise NotFound(f"artifact {artifact['id']} was deleted while being read")
            yield data

    # --- event history -------------------------------------------------------------------------

    async def job_events_after(self, job_id: uuid.UUID, after_id: int, limit: int) -> list[Row]:
        return await self._pool.fetch(Q.job_events_after, job_id, after_id, limit)

    async def scope_events_after(self, user_id: str | None, session_id: str | None, after_id: int,
                                 limit: int) -> list[Row]:
        return await self._pool.fetch(Q.scope_events_after, user_id, session_id, after_id, limit)

