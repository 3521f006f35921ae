"""Heartbeats and completions arriving together share one statement (jobstore/batching.py), and each
caller still gets its own answer: its lease renewed and its progress event, or its refusal."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .conftest import wait_until
from .helpers import claim, collect_events, enqueue, lock_waits


async def test_concurrent_heartbeats_share_statements_and_each_gets_its_answer(jobstore) -> None:
    stub = jobstore.stub
    jobs = [await enqueue(stub, user_id=f"user-{i}", job_type="pdf") for i in range(40)]
    claimed = await claim(stub, types=("pdf",), max_jobs=40, lease_ms=5_000)
    assert len(claimed) == 40
    before = jobstore.server.store._heartbeats.batches

    async def beat(c: pb.ClaimedJob, progress: int) -> pb.HeartbeatResponse:
        return await stub.Heartbeat(pb.HeartbeatRequest(job_id=c.job.id, lease_token=c.lease_token,
                                                        progress=progress, message=f"step {progress}",
                                                        lease_ms=60_000))

    # Forty jobs at once, and a second beat for the first job in the same burst (a later batch takes it).
    answers = await asyncio.gather(*(beat(c, 10 + i) for i, c in enumerate(claimed)), beat(claimed[0], 90))
    assert all(a.lease_expires_at.seconds > 0 and not a.cancelled for a in answers)
    assert jobstore.server.store._heartbeats.batches - before < 41  # some shared a statement

    for i, c in enumerate(claimed):
        job = await stub.GetJob(pb.GetJobRequest(job_id=c.job.id))
        renewed = answers[i].lease_expires_at.ToDatetime() - c.lease_expires_at.ToDatetime()
        assert renewed.total_seconds() > 50  # a 60 s lease asked where the claim's was 5 s
        events = await collect_events(stub, pb.WatchRequest(job_id=c.job.id, history_only=True))
        progress = [e.progress for e in events if e.kind == pb.EVENT_KIND_PROGRESS]
        # One event per beat, and the job shows the last: the first job's two beats in either order.
        assert sorted(progress) == ([10, 90] if i == 0 else [10 + i])
        assert job.progress == progress[-1]
    assert {j.id for j in jobs} == {c.job.id for c in claimed}


async def test_a_stale_heartbeat_in_a_batch_is_refused_alone(jobstore) -> None:
    stub = jobstore.stub
    for i in range(10):
        await enqueue(stub, user_id=f"user-{i}", job_type="pdf")
    claimed = await claim(stub, types=("pdf",), max_jobs=10)
    stale = pb.HeartbeatRequest(job_id=claimed[0].job.id, lease_token="00000000-0000-4000-8000-000000000000",
                                progress=50)
    results = await asyncio.gather(
        stub.Heartbeat(stale),
        *(stub.Heartbeat(pb.HeartbeatRequest(job_id=c.job.id, lease_token=c.lease_token, progress=50))
          for c in claimed), return_exceptions=True)
    refused, *accepted = results
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert all(isinstance(a, pb.HeartbeatResponse) for a in accepted), accepted


async def test_a_locked_job_holds_up_only_its_own_heartbeat(jobstore, database_url) -> None:
    # The maintenance tick may hold a job's row locked for as long as its transaction runs; the other
    # jobs' heartbeats, batched with it, must not wait for it.
    stub = jobstore.stub
    for i in range(8):
        await enqueue(stub, user_id=f"user-{i}", job_type="pdf")
    claimed = await claim(stub, types=("pdf",), max_jobs=8)
    held, others = claimed[0], claimed[1:]
    conn = await asyncpg.connect(database_url)
    try:
        locking = conn.transaction()
        await locking.start()
        await conn.execute("SELECT 1 FROM document_jobs WHERE id = $1 FOR UPDATE", uuid.UUID(held.job.id))

        def beat(c: pb.ClaimedJob) -> Any:
            return stub.Heartbeat(pb.HeartbeatRequest(job_id=c.job.id, lease_token=c.lease_token, progress=30))

        waiting = asyncio.ensure_future(beat(held))
        answers = await asyncio.wait_for(asyncio.gather(*(beat(c) for c in others)), 10)
        assert all(not a.cancelled for a in answers)
        assert not waiting.done()  # its row is still locked
        await locking.rollback()
        answer = await asyncio.wait_for(waiting, 10)  # then it is renewed like the others
        assert not answer.cancelled and answer.lease_expires_at.seconds > 0
    finally:
        await conn.close()


async def test_a_complete_many_whose_caller_goes_away_mid_statement_completes_each_job_once(
        jobstore, database_url) -> None:
    """A worker cancels its CompleteMany while the statement waits on a locked row (or dies with the call in
    flight): no job is left half-done. Each job it named ends completed, with one completed event, and the
    worker's retry is told so (FAILED_PRECONDITION), not given a second completion."""
    stub = jobstore.stub
    for i in range(5):
        await enqueue(stub, user_id=f"user-{i}", job_type="pdf")
    claimed = await claim(stub, types=("pdf",), max_jobs=5)
    assert len(claimed) == 5
    items = [pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token, result_json=f'{{"n": {i}}}')
             for i, c in enumerate(claimed)]
    store = jobstore.server.store
    conn = await asyncpg.connect(database_url)
    try:
        locking = conn.transaction()
        await locking.start()
        await conn.execute("SELECT 1 FROM document_jobs WHERE id = $1 FOR UPDATE", uuid.UUID(claimed[2].job.id))
        before = store._completions.batches
        call = stub.CompleteMany(pb.CompleteManyRequest(jobs=items))
        # The statement has started, and waits for the locked row.
        await wait_until(lambda: store._completions.batches > before)
        await wait_until(lambda: lock_waits(database_url))
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for c in claimed:  # nothing committed yet
            assert (await stub.GetJob(pb.GetJobRequest(job_id=c.job.id))).status == pb.JOB_STATUS_PROCESSING
        await locking.rollback()
    finally:
        await conn.close()

    async def all_completed() -> bool:
        jobs = [await stub.GetJob(pb.GetJobRequest(job_id=c.job.id)) for c in claimed]
        return all(j.status == pb.JOB_STATUS_COMPLETED for j in jobs)

    await wait_until(all_completed)
    for i, c in enumerate(claimed):
        job = await stub.GetJob(pb.GetJobRequest(job_id=c.job.id))
        assert json.loads(job.result_json) == {"n": i}
        events = await collect_events(stub, pb.WatchRequest(job_id=c.job.id, history_only=True))
        assert [e.kind for e in events].count(pb.EVENT_KIND_COMPLETED) == 1
    again = await stub.CompleteMany(pb.CompleteManyRequest(jobs=items))
    assert [(o.completed, o.error_code) for o in again.outcomes] == [(False, "FAILED_PRECONDITION")] * 5
