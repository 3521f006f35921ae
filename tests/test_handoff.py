"""A job enqueued while a worker of its type waits for work is handed to that worker by the enqueue
statement itself: stored claimed, with its pending and processing events, and no claim statement of its
own (jobstore/claims.py). What must hold: the worker gets it; nothing is lost when the worker's caller
leaves or the enqueue stores nothing; a job for later, or one with other waiters still looking, takes
the ordinary path."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.claims import FOUND, FOUND_NONE, HANDOFFS, ClaimWaiters

from .conftest import wait_until
from .helpers import claim, collect_events, enqueue
from .test_claim_wakes import count, pdf_job, store_claims_asleep, waiting_claims


async def test_a_job_enqueued_while_a_worker_waits_is_handed_to_it_without_a_claim_statement(jobstore) -> None:
    [waiting] = await waiting_claims(jobstore, 1)
    found, empty, handed = count(FOUND), count(FOUND_NONE), count(HANDOFFS)
    job = await enqueue(jobstore.stub, job_type="pdf")
    [claimed] = await asyncio.wait_for(waiting, 10)
    assert claimed.job.id == job.id and claimed.attempt == 1
    assert (count(FOUND), count(FOUND_NONE), count(HANDOFFS)) == (found, empty, handed + 1)
    # The enqueue's answer is the job as stored: already processing, its last event the claim's.
    assert job.status == pb.JOB_STATUS_PROCESSING and job.worker_id == "w0"
    events = await collect_events(jobstore.stub, pb.WatchRequest(job_id=job.id), count=2)
    assert [(e.status, e.attempt) for e in events] == [(pb.JOB_STATUS_PENDING, 1), (pb.JOB_STATUS_PROCESSING, 1)]
    assert events[0].id < events[1].id == job.last_event_id
    # The lease is the worker's, as a claim gives it.
    done = await jobstore.stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed.lease_token,
                                                           result_json="{}"))
    assert done.status == pb.JOB_STATUS_COMPLETED


async def test_a_job_handed_to_a_claim_whose_caller_left_goes_to_the_next_at_once(jobstore) -> None:
    first, second = await store_claims_asleep(jobstore, 60.0, 60.0)
    enqueued = asyncio.create_task(jobstore.server.store.enqueue(pdf_job()))
    await asyncio.sleep(0)  # the enqueue has reserved the newest claim and sent its statement
    assert [w.handoff is not None for w in jobstore.server.claims._waiters] == [False, True]
    second.cancel()  # its caller goes away while its job is being stored for it
    row, created = await enqueued
    assert created and row["status"] == "processing" and row["worker_id"] == "w1"
    with pytest.raises(asyncio.CancelledError):
        await second
    # Given back at once (not after its 30 s lease), with no retry counted, and taken by the other claim.
    [got] = await asyncio.wait_for(first, 10)
    assert got["id"] == row["id"] and got["worker_id"] == "w0" and got["retry_count"] == 0


async def test_an_enqueue_that_stores_nothing_leaves_the_worker_waiting_for_the_next_job(jobstore) -> None:
    key = uuid.uuid4().hex
    # A job holding the key, due in an hour: nobody can claim it now.
    later = await enqueue(jobstore.stub, job_type="pdf", idempotency_key=key, delay_ms=3_600_000)
    [waiting] = await waiting_claims(jobstore, 1)
    again = await jobstore.stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="user-1", payload_json="{}",
                                                          idempotency_key=key))
    assert not again.created and again.job.id == later.id and again.job.status == pb.JOB_STATUS_PENDING
    # The reserved worker looked again and waits on; the next job goes to it.
    await wait_until(lambda: [w.asleep for w in jobstore.server.claims._waiters] == [True])
    assert not waiting.done()
    job = await enqueue(jobstore.stub, job_type="pdf")
    [claimed] = await asyncio.wait_for(waiting, 10)
    assert claimed.job.id == job.id


async def test_a_handed_off_job_wakes_no_other_claim_through_its_events(jobstore) -> None:
    # A watcher makes the event dispatcher read every event. The job's pending event comes in the same
    # read as its claim's (one transaction), so it is no claimable job for the other waiting claim.
    watch = jobstore.stub.Watch(pb.WatchRequest(all_jobs=True))

    async def first_job_event() -> pb.JobEvent:
        while not (event := await watch.read()).job_id:  # messages that carry no event come first
            pass
        return event

    first_event = asyncio.ensure_future(first_job_event())
    await wait_until(lambda: jobstore.server.dispatcher.subscriber_count == 1)
    tasks = await waiting_claims(jobstore, 2)
    other = jobstore.server.claims._waiters.copy()
    empty, found = count(FOUND_NONE), count(FOUND)
    job = await enqueue(jobstore.stub, job_type="pdf")
    [claimed] = await asyncio.wait_for(next(asyncio.as_completed(tasks)), 10)
    assert claimed.job.id == job.id
    # The read that delivered the events has woken whatever it was going to wake (in the same step).
    assert (await asyncio.wait_for(first_event, 10)).job_id == job.id
    [left] = jobstore.server.claims._waiters
    assert left in other and not left.woken  # the same claim, never woken, never looked again
    assert (count(FOUND_NONE), count(FOUND)) == (empty, found)
    watch.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_job_about_to_expire_is_not_handed_off(jobstore) -> None:
    [waiting] = await waiting_claims(jobstore, 1)
    job = await enqueue(jobstore.stub, job_type="pdf", ttl_ms=900)
    assert job.status == pb.JOB_STATUS_PENDING  # stored pending; the waiting claim is woken and takes it
    [claimed] = await asyncio.wait_for(waiting, 10)
    assert claimed.job.id == job.id


async def test_a_job_for_later_is_stored_pending_and_wakes_nobody(jobstore) -> None:
    [waiting] = await waiting_claims(jobstore, 1)
    job = await enqueue(jobstore.stub, job_type="pdf", delay_ms=3_600_000)
    assert job.status == pb.JOB_STATUS_PENDING
    assert [w.handoff for w in jobstore.server.claims._waiters] == [None]
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_a_worker_of_another_type_is_not_handed_the_job(jobstore) -> None:
    [sheets] = await waiting_claims(jobstore, 1, ("spreadsheet",))
    job = await enqueue(jobstore.stub, job_type="pdf")
    assert job.status == pb.JOB_STATUS_PENDING
    [claimed] = await claim(jobstore.stub, worker="pdf-worker", types=("pdf",))
    assert claimed.job.id == job.id
    sheets.cancel()
    await asyncio.gather(sheets, return_exceptions=True)


def asleep(waiters: ClaimWaiters, *job_types: str) -> Any:
    waiter = waiters.register(job_types, "w", 1000)
    waiter.looked = True  # as Store.claim marks it once its look found nothing
    return waiter


async def test_the_handoff_goes_to_the_newest_of_the_waiters_taking_fewest_types_and_never_past_a_looker() -> None:
    waiters = ClaimWaiters()
    first, versatile, newest = asleep(waiters, "pdf"), asleep(waiters, "pdf", "docx"), asleep(waiters, "pdf")
    looking = waiters.register(["docx"], "w", 1000)  # registered, its claim statement running
    # A worker mid-look may be about to take an older docx job: a new one must queue behind it.
    assert waiters.hand_off("docx") is None
    # The newest pdf-only waiter (the warmest worker; the versatile one is kept for docx jobs).
    handoff = waiters.hand_off("pdf")
    assert handoff is not None and newest.handoff is handoff and newest.woken
    assert not first.woken and not versatile.woken
    assert waiters.hand_off("pdf") is None  # a waiter of the type is reserved: the next job takes the usual path
    # A wake passes the reserved waiter by, and goes where a hand-off would: the pdf-only one.
    waiters.wake({"pdf"})
    assert first.woken and not versatile.woken and not handoff.wake_owed
    waiters.unregister(looking)


async def test_a_wake_that_finds_only_a_reserved_waiter_is_passed_on_by_it() -> None:
    waiters = ClaimWaiters()
    only = asleep(waiters, "pdf")
    handoff = waiters.hand_off("pdf")
    assert handoff is not None and only.handoff is handoff
    # Another job of the type committed meanwhile (elsewhere): nobody else can look, so the reserved
    # waiter's claim owes the wake (Store.claim passes it on once it has returned its job).
    waiters.wake({"pdf"})
    assert handoff.wake_owed


async def test_a_worker_that_has_looked_is_handed_the_job_while_it_reads_when_the_next_is_due(jobstore) -> None:
    # After a look that finds nothing, a claim reads when the next job is due before its wait. A worker
    # that has just finished a job spends that read there; a job enqueued meanwhile went the long way
    # before (stored pending, a wake, a claim statement), often to a colder worker (bench/scale.py).
    # Every connection of the pool held: the claim's look (on its own connection) ends, its read waits.
    store, pool = jobstore.server.store, jobstore.server.store._pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        looked = count(FOUND_NONE)
        waiting = asyncio.create_task(store.claim("warm", ["pdf"], 1, 60.0, 30_000))
        await wait_until(lambda: count(FOUND_NONE) == looked + 1)
        [waiter] = jobstore.server.claims._waiters
        assert waiter.looked and not waiter.asleep  # reading when the next job is due
        enqueued = asyncio.create_task(store.enqueue(pdf_job()))
        await wait_until(lambda: waiter.handoff is not None)
    finally:
        for conn in held:
            await pool.release(conn)
    row, created = await asyncio.wait_for(enqueued, 10)
    assert created and row["status"] == "processing" and row["worker_id"] == "warm"
    [got] = await asyncio.wait_for(waiting, 10)
    assert got["id"] == row["id"]


async def test_a_commit_wakes_a_worker_still_looking_before_any_asleep(jobstore) -> None:
    # The worker that has just finished a job asks for the next one with its completion: its look is
    # under way when the next job commits. It looks again; a worker idle for long is left asleep.
    store, claims_conn = jobstore.server.store, jobstore.server.store._claims_conn
    [idle] = await store_claims_asleep(jobstore, 60.0)
    async with claims_conn._lock:  # the claim connection busy: the warm worker's look waits for it
        warm = asyncio.create_task(store.claim("warm", ["pdf"], 1, 60.0, 30_000))
        await wait_until(lambda: len(jobstore.server.claims) == 2)
        [(row, _)] = await store.enqueue_many([pdf_job()])  # a batch: never handed off
        sleeper, looker = jobstore.server.claims._waiters
        assert looker.woken and not sleeper.woken
    [got] = await asyncio.wait_for(warm, 10)
    assert got["id"] == row["id"] and got["worker_id"] == "warm"
    idle.cancel()
    await asyncio.gather(idle, return_exceptions=True)


def test_with_nobody_looking_a_wake_goes_to_the_newest_sleeper_of_the_fewest_types() -> None:
    waiters = ClaimWaiters()
    first, newest, versatile = asleep(waiters, "pdf"), asleep(waiters, "pdf"), asleep(waiters, "pdf", "docx")
    waiters.wake({"pdf"})
    assert newest.woken and not first.woken and not versatile.woken
    waiters.wake({"pdf"})  # one woken and yet to look: enough
    assert not first.woken and not versatile.woken
