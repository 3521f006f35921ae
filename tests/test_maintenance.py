"""Maintenance: retention cleanup and one replica at a time under the advisory lock."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.maintenance import MAINTENANCE_LOCK_KEY

from .helpers import claim, enqueue
from .test_artifacts import upload_requests


async def test_retention_deletes_old_finished_jobs_with_their_events_and_artifacts(jobstore_factory,
                                                                                   database_url) -> None:
    store = await jobstore_factory(retention_s=3600.0, maintenance_interval_s=3600.0)
    stub = store.stub
    old = await enqueue(stub)
    [c] = await claim(stub)
    artifact = await stub.UploadArtifact(upload_requests(old.id, c.lease_token, [b"x" * 3000]))
    await stub.Complete(pb.CompleteRequest(job_id=old.id, lease_token=c.lease_token, artifact_id=artifact.id))
    recent_done = await enqueue(stub)
    [c2] = await claim(stub)
    await stub.Complete(pb.CompleteRequest(job_id=recent_done.id, lease_token=c2.lease_token))
    still_pending = await enqueue(stub)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE document_jobs SET completed_at = now() - interval '2 hours' WHERE id = $1",
                           uuid.UUID(old.id))
        # A pending job that is old is never deleted, whatever its age.
        await conn.execute("UPDATE document_jobs SET created_at = now() - interval '2 days' WHERE id = $1",
                           uuid.UUID(still_pending.id))
        deleted = await store.server.maintenance.cleanup_now()
        assert deleted == 1
        remaining = {str(r["id"]) for r in await conn.fetch("SELECT id FROM document_jobs")}
        assert remaining == {recent_done.id, still_pending.id}
        assert await conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", uuid.UUID(old.id)) == 0
        assert await conn.fetchval("SELECT count(*) FROM artifacts") == 0
        assert await conn.fetchval("SELECT count(*) FROM artifact_chunks") == 0
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
    a = await jobstore_factory(maintenance_interval_s=3600.0)  # never reaps by itself
    await jobstore_factory(maintenance_interval_s=0.1)  # the replica that reaps
    job = await enqueue(a.stub, max_retries=1)
    await claim(a.stub, worker="crashed", lease_ms=1000)
    [again] = await claim(a.stub, worker="healthy", wait_ms=15_000)  # woken by b's reaper through NOTIFY
    assert again.job.id == job.id and again.attempt == 2
