"""Maintenance: retention cleanup and one replica at a time under the advisory lock. Time is a
ManualClock's (jobstore/clock.py): the tests set it, and never backdate rows or sleep."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.clock import ManualClock
from jobstore.maintenance import MAINTENANCE_LOCK_KEY

from .conftest import wait_until
from .helpers import claim, enqueue
from .test_artifacts import upload_requests


async def test_retention_deletes_old_finished_jobs_with_their_events_and_artifacts(jobstore_factory,
                                                                                   database_url) -> None:
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, retention_s=3600.0, maintenance_interval_s=3600.0)
    stub = store.stub
    old = await enqueue(stub)
    [c] = await claim(stub, types=("spreadsheet",))
    artifact = await stub.UploadArtifact(upload_requests(old.id, c.lease_token, [b"x" * 3000]))
    await stub.Complete(pb.CompleteRequest(job_id=old.id, lease_token=c.lease_token, artifact_id=artifact.id))
    still_pending = await enqueue(stub, job_type="pdf")  # nobody claims pdf jobs here
    clock.advance(hours=1)  # the retention period to the microsecond: kept
    assert await store.server.maintenance.cleanup_now() == 0
    recent_done = await enqueue(stub)
    [c2] = await claim(stub, types=("spreadsheet",))
    await stub.Complete(pb.CompleteRequest(job_id=recent_done.id, lease_token=c2.lease_token))
    clock.advance(microseconds=1)
    conn = await asyncpg.connect(database_url)
    try:
        assert await store.server.maintenance.cleanup_now() == 1
        remaining = {str(r["id"]) for r in await conn.fetch("SELECT id FROM document_jobs")}
        assert remaining == {recent_done.id, still_pending.id}
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", uuid.UUID(old.id)) == 0
        assert await conn.fetchval("SELECT count(*) FROM artifacts") == 0
        assert await conn.fetchval("SELECT count(*) FROM artifact_chunks") == 0
        # A pending job is never deleted, whatever its age.
        clock.advance(days=2)
        assert await store.server.maintenance.cleanup_now() == 1
        remaining = {str(r["id"]) for r in await conn.fetch("SELECT id FROM document_jobs")}
        assert remaining == {still_pending.id}
    finally:
        await conn.close()


async def test_a_finished_job_a_retry_makes_pending_meanwhile_is_not_deleted_by_retention(jobstore_factory,
                                                                                        database_url) -> None:
    """Retention picks an old failed job while a retry holds its row and makes it pending again: the job
    stays, with its events. (Before, the DELETE waited for the row and then deleted it all the same: its
    status was asked only by the subquery, whose answer is not asked again when the row changes.)"""
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, retention_s=60.0, maintenance_interval_s=3600.0)
    job = await enqueue(store.stub, max_retries=0)
    [c] = await claim(store.stub, types=("spreadsheet",))
    await store.stub.Fail(pb.FailRequest(job_id=job.id, lease_token=c.lease_token, error_code="boom", error_message="m",
                                         retryable=False))
    clock.advance(hours=1)
    retry = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)
    try:
        async with retry.transaction():  # a retry in flight: the row locked and made pending, not committed
            await retry.execute("UPDATE document_jobs SET status = 'pending', completed_at = NULL WHERE id = $1",
                                uuid.UUID(job.id))
            cleanup = asyncio.create_task(store.server.maintenance.cleanup_now())

            async def waits_for_the_row() -> bool:
                return bool(await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%DELETE%'"))

            await wait_until(lambda: cleanup.done() or waits_for_the_row())
        assert await cleanup == 0
        assert await retry.fetchval("SELECT status FROM document_jobs WHERE id = $1", uuid.UUID(job.id)) == "pending"
        assert await retry.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", uuid.UUID(job.id)) > 0
    finally:
        await retry.close()
        await watcher.close()


async def test_retention_removes_old_events_whose_job_is_gone(jobstore_factory, database_url) -> None:
    """A jobstore older than migration 0009 deleted a job's events through the foreign key's cascade; one
    still running during an upgrade leaves them behind. Retention deletes events past the retention
    period whose job does not exist, and keeps an old pending job's."""
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, retention_s=60.0, maintenance_interval_s=3600.0)
    kept = await enqueue(store.stub, job_type="pdf")  # pending for ever here: its events stay
    conn = await asyncpg.connect(database_url)
    try:
        gone = uuid.uuid4()
        await conn.execute("INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, "
                           "created_at) VALUES ($1, 'u', '', 'pdf', 'status', 'pending', 1, $2)", gone, clock.now())
        clock.advance(seconds=59)
        await store.server.maintenance.cleanup_now()
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", gone) == 1  # not yet
        clock.advance(seconds=2)
        await store.server.maintenance.cleanup_now()
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", gone) == 0
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", uuid.UUID(kept.id)) == 1
    finally:
        await conn.close()


async def test_only_one_replica_runs_maintenance_at_a_time(jobstore_factory, database_url) -> None:
    a = await jobstore_factory(maintenance_interval_s=3600.0)
    b = await jobstore_factory(maintenance_interval_s=3600.0)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # Someone holds the maintenance lock: neither replica does the work nor waits for it.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK_KEY)
            results = await asyncio.wait_for(asyncio.gather(a.server.maintenance.tick(),
                                                            b.server.maintenance.tick()), 5)
            assert [r.ran for r in results] == [False, False]
        results = await asyncio.gather(a.server.maintenance.tick(), b.server.maintenance.tick())
        assert sorted(r.ran for r in results) in ([False, True], [True, True])
    finally:
        await conn.close()


async def test_a_worker_that_crashed_loses_its_job_to_the_reaper_of_another_replica(jobstore_factory) -> None:
    clock = ManualClock()  # one time for both replicas, as the database's clock is in production
    a = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)  # never reaps by itself
    b = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)  # reaps when the test says
    job = await enqueue(a.stub, max_retries=1)
    await claim(a.stub, worker="crashed", lease_ms=1000)
    waiting = asyncio.create_task(claim(a.stub, worker="healthy", wait_ms=15_000))
    await wait_until(lambda: len(a.server.claims) == 1)
    clock.advance(seconds=1, microseconds=1)
    assert (await b.server.maintenance.tick()).reaped == 1
    clock.advance(milliseconds=200)  # past the retry's backoff (base 200 ms: at most 200 ms)
    [again] = await asyncio.wait_for(waiting, 10)  # woken by b's reaper through NOTIFY, not by its 15 s
    assert again.job.id == job.id and again.attempt == 2


async def test_a_job_retried_a_thousand_times_does_not_stop_the_reaper_for_everyone(jobstore_factory) -> None:
    """A user may cancel and retry their own job as often as they like. Its retry delay once overflowed
    (2 to the power of its attempts), and the error failed the reaper's whole tick: no lease ran out and no
    job expired, for anyone."""
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)  # reaps when the test says
    stub = store.stub
    own = await enqueue(stub, user_id="retrier", job_type="pdf", max_retries=3)
    for _ in range(1030):
        await stub.Cancel(pb.CancelRequest(job_id=own.id, user_id="retrier"))
        await stub.Retry(pb.RetryRequest(job_id=own.id, user_id="retrier"))
    victim = await enqueue(stub, user_id="someone-else", job_type="document", max_retries=2)
    expiring = await enqueue(stub, user_id="someone-else", job_type="presentation", ttl_ms=1000)
    [mine] = await claim(stub, worker="retrier's", types=("pdf",), lease_ms=1000)
    [theirs] = await claim(stub, worker="crashed", types=("document",), lease_ms=1000)
    assert mine.attempt == 1031
    clock.advance(seconds=2)
    result = await store.server.maintenance.tick()
    assert result.reaped == 2 and result.expired == 1
    after = {j.id: await stub.GetJob(pb.GetJobRequest(job_id=j.id)) for j in (own, victim, expiring)}
    assert after[victim.id].status == pb.JOB_STATUS_PENDING and after[victim.id].retry_count == 1
    assert after[expiring.id].status == pb.JOB_STATUS_FAILED
    assert after[own.id].status == pb.JOB_STATUS_PENDING  # its next retry waits at most the cap
    # A failed attempt of that job is retried too, rather than refused by the database.
    clock.advance(seconds=3600)
    [again] = await claim(stub, worker="retrier's", types=("pdf",), lease_ms=60_000)
    reply = await stub.Fail(pb.FailRequest(job_id=again.job.id, lease_token=again.lease_token, error_code="flaky",
                                           retryable=True))
    assert reply.will_retry
    assert theirs.job.id == victim.id
