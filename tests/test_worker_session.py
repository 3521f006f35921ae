"""The worker session (Work): claims, heartbeats, completions and cancels as messages on one stream, over a
real jobstore and Postgres; a renderer process on it across a jobstore restart; hostile messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import uuid
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from docjobs.worksession import SessionError, WorkSession
from jobstore.clock import ManualClock
from jobstore.session import MAX_CREDIT

from .conftest import GRPC_TOKEN, RunningJobStore, jobstore_settings, new_user, start_jobstore, wait_until
from .helpers import collect_events, enqueue, lock_waits
from .renderers import RendererProcess, example, submit, wait_finished

TYPES = ("spreadsheet", "document", "pdf", "presentation")
ROOT = Path(__file__).resolve().parent.parent


class Held:
    """What a WorkSession hands its worker: the jobs pushed, and the cancels."""

    def __init__(self) -> None:
        self.jobs: list[pb.ClaimedJob] = []
        self.cancels: list[str] = []


def session(stub: pb_grpc.JobStoreAsyncStub, held: Held, worker: str = "", lease_ms: int = 30_000) -> WorkSession:
    work = WorkSession(stub, worker or f"w-{uuid.uuid4().hex[:8]}", TYPES, lease_ms, on_jobs=held.jobs.extend,
                       on_cancel=held.cancels.append)
    work.start()
    return work


async def processing(stub: pb_grpc.JobStoreAsyncStub) -> int:
    return (await stub.GetStats(pb.GetStatsRequest())).processing


async def test_pushes_never_pass_the_credit_granted(stub) -> None:
    user = new_user()
    for _ in range(12):
        await enqueue(stub, user_id=user)
    held = Held()
    work = session(stub, held)
    try:
        work.grant(3)
        await wait_until(lambda: len(held.jobs) == 3)
        # A round trip on the stream: anything claimed beyond the credit would be processing by now.
        await work.heartbeat(pb.HeartbeatRequest(job_id=held.jobs[0].job.id, lease_token=held.jobs[0].lease_token))
        assert await processing(stub) == 3 and work.outstanding == 0
        first = held.jobs[0]
        await work.complete(pb.CompleteRequest(job_id=first.job.id, lease_token=first.lease_token))
        work.grant(2)
        await wait_until(lambda: len(held.jobs) == 5)
        await work.heartbeat(pb.HeartbeatRequest(job_id=held.jobs[1].job.id, lease_token=held.jobs[1].lease_token))
        assert await processing(stub) == 4
        assert len({c.job.id for c in held.jobs}) == 5
    finally:
        await work.stop()


async def test_a_job_pushed_on_the_session_completes_and_its_events_stream(stub) -> None:
    held = Held()
    work = session(stub, held)
    try:
        work.grant(1)
        job = await enqueue(stub, user_id=new_user())
        events = asyncio.ensure_future(collect_events(stub, pb.WatchRequest(job_id=job.id)))
        await wait_until(lambda: held.jobs)
        [claimed] = held.jobs
        assert claimed.job.id == job.id and claimed.attempt == 1 and claimed.job.payload_json
        beat = await work.heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=claimed.lease_token, progress=40,
                                                        message="halfway"))
        assert not beat.cancelled
        await work.complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed.lease_token,
                                               result_json='{"ok": true}'))
        kinds = [(e.kind, e.status) for e in await asyncio.wait_for(events, 10)]
        assert kinds == [(pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PENDING),
                         (pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PROCESSING),
                         (pb.EVENT_KIND_PROGRESS, pb.JOB_STATUS_PROCESSING),
                         (pb.EVENT_KIND_COMPLETED, pb.JOB_STATUS_COMPLETED)]
        # Completed once: the same completion again is refused, and the stream goes on.
        with pytest.raises(SessionError) as again:
            await work.complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed.lease_token))
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        small = await enqueue(stub, user_id=new_user())
        work.grant(1)
        await wait_until(lambda: len(held.jobs) == 2)
        await work.complete_with_artifact(pb.CompleteWithArtifactRequest(
            job_id=small.id, lease_token=held.jobs[1].lease_token, filename="a.txt", content_type="text/plain",
            content=b"hello", result_json="{}"))
        done = await stub.GetJob(pb.GetJobRequest(job_id=small.id))
        assert done.status == pb.JOB_STATUS_COMPLETED and done.artifact_id
    finally:
        await work.stop()


async def test_a_heartbeat_on_the_session_extends_the_lease(jobstore_factory) -> None:
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)
    held = Held()
    work = session(store.stub, held, lease_ms=1000)
    try:
        job = await enqueue(store.stub)
        work.grant(1)
        await wait_until(lambda: held.jobs)
        [claimed] = held.jobs
        assert claimed.lease_expires_at.ToDatetime(tzinfo=UTC) == clock.now() + timedelta(seconds=1)
        beat = await work.heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=claimed.lease_token,
                                                        lease_ms=5000))
        assert beat.lease_expires_at.ToDatetime(tzinfo=UTC) == clock.now() + timedelta(seconds=5)
        clock.advance(seconds=4)  # past the first lease, within the second
        assert (await store.server.maintenance.tick()).reaped == 0
        assert (await store.stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_PROCESSING
        clock.advance(seconds=1, microseconds=1)
        assert (await store.server.maintenance.tick()).reaped == 1
        with pytest.raises(SessionError) as late:
            await work.heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=claimed.lease_token))
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await work.stop()


async def test_a_cancel_is_pushed_to_the_worker_holding_the_job_on_any_replica(jobstore_factory) -> None:
    first = await jobstore_factory()
    second = await jobstore_factory()  # the same database: a cancel there reaches the session here by the bell
    held = Held()
    work = session(first.stub, held)
    try:
        here = await enqueue(first.stub)
        there = await enqueue(first.stub)
        work.grant(2)
        await wait_until(lambda: len(held.jobs) == 2)
        await first.stub.Cancel(pb.CancelRequest(job_id=here.id))
        await wait_until(lambda: held.cancels == [here.id])
        await second.stub.Cancel(pb.CancelRequest(job_id=there.id))
        await wait_until(lambda: held.cancels == [here.id, there.id], timeout=15)
        token = {c.job.id: c.lease_token for c in held.jobs}
        with pytest.raises(SessionError) as refused:
            await work.complete(pb.CompleteRequest(job_id=here.id, lease_token=token[here.id]))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await work.stop()


WORKER = textwrap.dedent("""
    import asyncio, sys
    import uvloop
    from docjobs.channels import jobstore_channel
    from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
    from docjobs.worksession import WorkSession

    async def main():
        channel = jobstore_channel(sys.argv[1], sys.argv[2])
        def took(jobs):
            for c in jobs:
                print("JOB", c.job.id, flush=True)
        work = WorkSession(pb_grpc.JobStoreStub(channel), "doomed", ["spreadsheet"], 60_000, on_jobs=took)
        work.start()
        work.grant(1)
        await asyncio.Event().wait()

    uvloop.run(main())
""")


async def test_a_worker_killed_mid_job_leaves_it_leased_until_the_reaper_takes_it_back(jobstore_factory) -> None:
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)
    job = await enqueue(store.stub, max_retries=2)
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", WORKER, store.address, GRPC_TOKEN,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   env={**os.environ, "PYTHONPATH": str(ROOT / "services")})
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.decode().split() == ["JOB", job.id]
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await wait_until(lambda: store.server.sessions.open == 0)
        # Its lease holds: the job is the dead worker's until it runs out, then retried after a backoff.
        assert (await store.server.maintenance.tick()).reaped == 0
        assert (await store.stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_PROCESSING
        clock.advance(seconds=60, microseconds=1)
        assert (await store.server.maintenance.tick()).reaped == 1
        reaped = await store.stub.GetJob(pb.GetJobRequest(job_id=job.id))
        assert reaped.status == pb.JOB_STATUS_PENDING and reaped.error.code == "lease_expired"
        assert reaped.retry_count == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_goodbye_gives_back_at_once_what_the_worker_does_not_keep(stub) -> None:
    user = new_user()
    for _ in range(3):
        await enqueue(stub, user_id=user)
    held = Held()
    work = session(stub, held)
    work.grant(3)
    await wait_until(lambda: len(held.jobs) == 3)
    kept = held.jobs[0]
    released = await work.close(keep=[kept.job.id])
    assert sorted(released) == sorted(c.job.id for c in held.jobs[1:])
    for claimed in held.jobs[1:]:
        job = await stub.GetJob(pb.GetJobRequest(job_id=claimed.job.id))
        assert job.status == pb.JOB_STATUS_PENDING and job.retry_count == 0
    # The kept job is still the worker's: it finishes it without a session.
    done = await stub.Complete(pb.CompleteRequest(job_id=kept.job.id, lease_token=kept.lease_token))
    assert done.status == pb.JOB_STATUS_COMPLETED


async def test_a_renderer_rides_out_a_jobstore_restart_on_its_session(database_url, tmp_path) -> None:
    port = free_port()
    store = await start_jobstore(jobstore_settings(database_url, grpc_port=port))
    renderer = RendererProcess(store.address, tmp_path / "r").start()
    try:
        body = example("document")
        job = await submit(store.stub, "document", {"spec": body["spec"]}, title=body["title"])
        final, _ = await wait_finished(store.stub, job.id, timeout=60)
        assert final.status == pb.JOB_STATUS_COMPLETED
        await store.channel.close()
        await store.server.stop()
        store = await start_jobstore(jobstore_settings(database_url, grpc_port=port))
        job = await submit(store.stub, "document", {"spec": body["spec"]}, title=body["title"])
        final, _ = await wait_finished(store.stub, job.id, timeout=60)
        assert final.status == pb.JOB_STATUS_COMPLETED, renderer.log
        assert store.server.sessions.open == 1
        await renderer.shutdown()
    finally:
        renderer.kill()
        await store.channel.close()
        await store.server.stop()
    assert "jobstore reachable again" in renderer.log


# --- hostile messages ------------------------------------------------------------------------------------

def hello(credit: int = 0, **fields: Any) -> pb.WorkRequest:
    return pb.WorkRequest(hello=pb.WorkHello(worker_id=fields.pop("worker_id", "hostile"), job_types=["pdf"],
                                             **fields), credit=credit)


ANY_ID = str(uuid.uuid4())
BAD_STREAMS = {
    "no hello": ([pb.WorkRequest(request_id=1, heartbeat=pb.HeartbeatRequest(job_id=ANY_ID, lease_token=ANY_ID))],
                 "hello"),
    "a hello without a worker id": ([hello(worker_id="")], "worker_id"),
    "a second hello": ([hello(), hello()], "hello"),
    "an empty message": ([hello(), pb.WorkRequest()], "kind"),
    "no request id": ([hello(), pb.WorkRequest(heartbeat=pb.HeartbeatRequest(job_id=ANY_ID, lease_token=ANY_ID))],
                      "request_id"),
    "a request id past 2^53": ([hello(), pb.WorkRequest(request_id=2**53 + 1, heartbeat=pb.HeartbeatRequest(
        job_id=ANY_ID, lease_token=ANY_ID))], "request_id"),
    "negative credit": ([hello(credit=-1)], "credit"),
    "credit past its bound": ([hello(credit=MAX_CREDIT), pb.WorkRequest(credit=1)], "credit"),
    "progress out of range": ([hello(), pb.WorkRequest(request_id=1, heartbeat=pb.HeartbeatRequest(
        job_id=ANY_ID, lease_token=ANY_ID, progress=101))], "heartbeat.progress"),
    "a lease token that is no uuid": ([hello(), pb.WorkRequest(request_id=1, complete=pb.CompleteRequest(
        job_id=ANY_ID, lease_token="x"))], "complete.lease_token"),
    "a lease past its bound": ([hello(lease_ms=10**9)], "lease_ms"),
    "a batch with a bad item": ([hello(), pb.WorkRequest(request_id=1, complete_many=pb.CompleteManyRequest(jobs=[
        pb.CompleteRequest(job_id=ANY_ID, lease_token=ANY_ID), pb.CompleteRequest(job_id=ANY_ID, lease_token="x")]))],
        "complete_many.jobs[1].lease_token"),
    "a pause keeping a bad id": ([hello(), pb.WorkRequest(request_id=1, pause=pb.WorkPause(keep_job_ids=["?"]))],
                                 "pause.keep_job_ids[0]"),
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
async def test_a_bad_message_ends_its_stream_with_invalid_argument_and_hurts_nobody_else(stub, name) -> None:
    held = Held()
    bystander = session(stub, held)
    try:
        messages, field = BAD_STREAMS[name]
        call = stub.Work(None)
        for message in messages:
            await call.write(message)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in call:
                pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(f"{field}:"), refused.value.details()
        # The other stream and the jobstore go on.
        job = await enqueue(stub, user_id=new_user())
        bystander.grant(1)
        await wait_until(lambda: held.jobs)
        assert held.jobs[0].job.id == job.id
    finally:
        await bystander.stop()


async def test_bytes_that_are_no_message_end_the_stream_with_invalid_argument(jobstore: RunningJobStore) -> None:
    raw = jobstore.channel.stream_stream("/docjobs.v1.JobStore/Work", request_serializer=lambda b: b,
                                         response_deserializer=pb.WorkResponse.FromString)
    call = raw(None)
    await call.write(hello(credit=1).SerializeToString())
    await call.write(b"\xff\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in call:
            pass
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid WorkRequest" in (refused.value.details() or "")


async def test_unknown_jobs_and_stale_attempts_are_answered_and_a_flood_is_held_back(stub) -> None:
    job = await enqueue(stub, user_id=new_user())
    [first] = (await stub.Claim(pb.ClaimRequest(worker_id="old", job_types=["spreadsheet"], lease_ms=30_000))).jobs
    await stub.Release(pb.ReleaseRequest(job_id=job.id, lease_token=first.lease_token, code="test"))
    held = Held()
    work = session(stub, held)
    try:
        work.grant(1)
        await wait_until(lambda: held.jobs)
        second = held.jobs[0]
        assert second.job.id == job.id and second.lease_token != first.lease_token
        # The first attempt's token: refused, the stream goes on.
        with pytest.raises(SessionError) as stale:
            await work.complete(pb.CompleteRequest(job_id=job.id, lease_token=first.lease_token))
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(SessionError) as unknown:
            await work.heartbeat(pb.HeartbeatRequest(job_id=str(uuid.uuid4()), lease_token=str(uuid.uuid4())))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # A flood on a raw stream that never reads: the jobstore stops reading it (flow control), and
        # answers every request once it is read again.
        flood = stub.Work(None)
        await flood.write(hello())
        count = 1500
        writes = asyncio.ensure_future(_write_many(flood, count))
        answers = 0
        async for response in flood:
            assert response.ack.code == "NOT_FOUND"
            answers += 1
            if answers == count:
                break
        await writes
        flood.cancel()
        await work.complete(pb.CompleteRequest(job_id=job.id, lease_token=second.lease_token))
    finally:
        await work.stop()


async def _write_many(call: Any, count: int) -> None:
    for i in range(count):
        await call.write(pb.WorkRequest(request_id=i + 1, heartbeat=pb.HeartbeatRequest(
            job_id=str(uuid.uuid4()), lease_token=str(uuid.uuid4()))))


async def test_a_stopping_jobstore_ends_its_sessions_with_unavailable_even_without_credit(database_url) -> None:
    store = await start_jobstore(jobstore_settings(database_url))
    try:
        idle = store.stub.Work(None)
        await idle.write(hello())  # no credit: its push waits for some
        await wait_until(lambda: store.server.sessions.open == 1)
        stopping = asyncio.ensure_future(store.server.stop())
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in idle:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the jobstore is stopping" in (ended.value.details() or "")
        await stopping
    finally:
        await store.channel.close()


async def test_a_session_without_the_shared_secret_is_refused(jobstore: RunningJobStore) -> None:
    async with grpc.aio.insecure_channel(jobstore.address) as channel:
        call = pb_grpc.JobStoreStub(channel).Work(None)
        # The refusal may come before the first write is sent: the write then raises it.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.write(hello(credit=5))
            async for _ in call:
                pass
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert jobstore.server.sessions.open == 0


async def test_completions_asked_together_go_as_one_message_each_answered_as_complete_would(stub) -> None:
    user = new_user()
    for _ in range(4):
        await enqueue(stub, user_id=user)
    held = Held()
    work = session(stub, held)
    try:
        work.grant(4)
        await wait_until(lambda: len(held.jobs) == 4)
        first = held.jobs[0]
        await work.complete(pb.CompleteRequest(job_id=first.job.id, lease_token=first.lease_token))
        results = await asyncio.gather(*(work.complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
                                         for c in held.jobs), return_exceptions=True)
        assert isinstance(results[0], SessionError) and results[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        assert all(isinstance(r, pb.WorkAck) for r in results[1:]), results
        for claimed in held.jobs:
            job = await stub.GetJob(pb.GetJobRequest(job_id=claimed.job.id))
            assert job.status == pb.JOB_STATUS_COMPLETED
    finally:
        await work.stop()


async def test_a_stream_cut_while_its_completions_wait_on_a_locked_row_completes_each_job_once(
        jobstore: RunningJobStore, database_url: str) -> None:
    """A worker dies with a complete_many in flight, its statement waiting on a row another transaction
    holds: the completions taken in are finished (each job completed once, one completed event), none is
    left half-done, and nothing it held is given back to run again."""
    stub = jobstore.stub
    user = new_user()
    for _ in range(5):
        await enqueue(stub, user_id=user)
    held = Held()
    work = session(stub, held)
    store = jobstore.server.store
    conn = await asyncpg.connect(database_url)
    try:
        work.grant(5)
        await wait_until(lambda: len(held.jobs) == 5)
        locking = conn.transaction()
        await locking.start()
        await conn.execute("SELECT 1 FROM document_jobs WHERE id = $1 FOR UPDATE", uuid.UUID(held.jobs[2].job.id))
        before = store._completions.batches
        completing = asyncio.gather(*(work.complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
                                      for c in held.jobs), return_exceptions=True)
        await wait_until(lambda: store._completions.batches > before)
        await wait_until(lambda: lock_waits(database_url))
        await work.stop()  # the stream is cut: no goodbye, no answer read
        results = await completing
        assert all(isinstance(r, SessionError) for r in results), results
        await wait_until(lambda: jobstore.server.sessions.open == 0)
        for c in held.jobs:  # nothing committed yet
            assert (await stub.GetJob(pb.GetJobRequest(job_id=c.job.id))).status == pb.JOB_STATUS_PROCESSING
        await locking.rollback()
    finally:
        await conn.close()
        await work.stop()

    async def all_completed() -> bool:
        jobs = [await stub.GetJob(pb.GetJobRequest(job_id=c.job.id)) for c in held.jobs]
        return all(j.status == pb.JOB_STATUS_COMPLETED for j in jobs)

    await wait_until(all_completed)
    for c in held.jobs:
        events = await collect_events(stub, pb.WatchRequest(job_id=c.job.id, history_only=True))
        assert [e.kind for e in events].count(pb.EVENT_KIND_COMPLETED) == 1
        assert [e.status for e in events].count(pb.JOB_STATUS_PROCESSING) == 1  # never given back and re-run


async def test_jobs_too_large_for_one_push_together_come_in_several(stub) -> None:
    """Five payloads of 3.9 MB claimed at once pass what one message holds (16 MiB): they are pushed in
    several messages, each job once, none lost to a write that failed with the jobs leased."""
    user = new_user()
    text = "x" * 3_900_000
    ids = {(await enqueue(stub, user_id=user, payload={"text": text})).id for _ in range(5)}
    held = Held()
    work = session(stub, held)
    try:
        work.grant(8)
        await wait_until(lambda: len(held.jobs) == 5)
        assert {c.job.id for c in held.jobs} == ids and {c.attempt for c in held.jobs} == {1}
        assert all(json.loads(c.job.payload_json)["text"] == text for c in held.jobs)
        for c in held.jobs:
            await work.complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
    finally:
        await work.stop()


async def test_a_push_whose_write_fails_gives_its_jobs_back_at_once(stub, monkeypatch) -> None:
    """Should a push's write fail (here: one message made larger than gRPC sends, the split above turned
    off), its jobs go back to the queue as the stream ends, no attempt counted: the worker never had them.
    They did wait for their leases to run out, each losing an attempt."""
    import jobstore.session

    monkeypatch.setattr(jobstore.session, "MESSAGE_BUDGET_BYTES", 1 << 40)
    user = new_user()
    ids = {(await enqueue(stub, user_id=user, payload={"text": "x" * 3_900_000})).id for _ in range(5)}
    held = Held()
    work = session(stub, held, lease_ms=3_600_000)
    try:
        work.grant(8)

        async def given_back() -> bool:
            # Each job claimed for the stream (processing) and then pending again, the claim undone.
            for job_id in ids:
                events = await collect_events(stub, pb.WatchRequest(job_id=job_id, history_only=True))
                statuses = [e.status for e in events if e.kind == pb.EVENT_KIND_STATUS]
                if pb.JOB_STATUS_PROCESSING not in statuses or statuses[-1] != pb.JOB_STATUS_PENDING:
                    return False
            return True

        # Pushed, refused by gRPC, given back (and pushed again on the next stream, and given back...).
        await wait_until(given_back)
    finally:
        await work.stop()
    assert not held.jobs
    for job_id in ids:
        assert (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).retry_count == 0


async def test_slots_freed_as_their_jobs_complete_send_their_credit_with_the_completions(stub, monkeypatch) -> None:
    """A worker that frees each slot and completes its job in the same turn (a no-op job, the queue's fast
    path) sends one message: its completions, the credit with them. A bare credit message ahead of them
    cost the jobstore a read per batch for nothing (bench/compare.py: ~10% of its CPU per job)."""
    from jobstore.session import WorkSession as ServerSession

    user = new_user()
    for _ in range(6):
        await enqueue(stub, user_id=user)
    held = Held()
    work = session(stub, held)
    taken: list[tuple[str | None, int]] = []
    take = ServerSession._take

    async def recording(self: ServerSession, request: Any) -> None:
        taken.append((request.WhichOneof("kind"), request.credit))
        await take(self, request)

    try:
        work.grant(3)
        await wait_until(lambda: len(held.jobs) == 3)
        monkeypatch.setattr(ServerSession, "_take", recording)

        async def finish(claimed: pb.ClaimedJob) -> pb.WorkAck:
            work.grant(1)
            return await work.complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token))

        await asyncio.gather(*(finish(c) for c in list(held.jobs)))
        assert taken == [("complete_many", 3)]
        await wait_until(lambda: len(held.jobs) == 6)  # and the credit was honoured
    finally:
        await work.stop()


async def _refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        while await call.read() is not grpc.aio.EOF:
            pass
    return refused.value


async def test_a_stream_that_never_reads_cannot_take_more_jobs_than_its_credit_bound(stub) -> None:
    """grpc takes pushed jobs off the jobstore's hands whether or not the worker reads them: credit granted
    again and again on an unread stream once took the whole queue, each job then costing an attempt when
    its lease ran out. Jobs held unfinished count against the bound as credit does."""
    for _ in range(2):
        await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[
            pb.EnqueueRequest(job_type="pdf", user_id=f"flood-{i % 20}", payload_json='{"spec": {"blocks": []}}')
            for i in range(1000)]))
    call = stub.Work(None)
    await call.write(hello(credit=MAX_CREDIT, worker_id="never-reads"))

    async def all_credit_taken() -> bool:
        return await processing(stub) >= MAX_CREDIT

    await wait_until(all_credit_taken, timeout=60)
    await call.write(pb.WorkRequest(credit=MAX_CREDIT))  # nothing read, nothing finished
    refused = await _refusal(call)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.details() or "").startswith("credit:"), refused.details()
    assert await processing(stub) <= MAX_CREDIT


async def test_a_message_refused_for_its_credit_does_nothing_else_it_asked(stub) -> None:
    """A complete riding with credit past the bound: the stream is refused, and the job is not completed
    behind the worker's back (it was, before the credit was checked first)."""
    job = await enqueue(stub, user_id=new_user(), job_type="pdf")
    call = stub.Work(None)
    await call.write(hello(credit=1))
    pushed = await call.read()
    assert isinstance(pushed, pb.WorkResponse)
    [claimed] = pushed.jobs.jobs
    assert claimed.job.id == job.id
    await call.write(pb.WorkRequest(request_id=1, credit=MAX_CREDIT + 1, complete=pb.CompleteRequest(
        job_id=job.id, lease_token=claimed.lease_token, result_json="{}")))
    refused = await _refusal(call)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.details() or "").startswith("credit:"), refused.details()
    # The jobstore runs in this process: once no request of a session is being handled, whatever the
    # refused message might have started is done.
    await wait_until(lambda: not any(getattr(task.get_coro(), "__qualname__", "") == "WorkSession._answer"
                                     for task in asyncio.all_tasks()))
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_PROCESSING


async def test_a_stream_cut_while_heartbeats_are_answered_leaves_no_session_behind(jobstore: RunningJobStore) -> None:
    """Heartbeats answered after their stream ended registered the dead session again as the holder of
    their jobs, where nothing but a cancel removed it (each kept a whole session alive)."""
    stub = jobstore.stub
    sessions = jobstore.server.sessions
    for round_ in range(3):
        for _ in range(20):
            await enqueue(stub, user_id=new_user(), job_type="pdf")
        call = stub.Work(None)
        await call.write(hello(credit=20, worker_id=f"cut-{round_}"))
        jobs: list[pb.ClaimedJob] = []
        while len(jobs) < 20:
            message = await call.read()
            assert isinstance(message, pb.WorkResponse)
            jobs.extend(message.jobs.jobs)
        for n, claimed in enumerate(jobs, start=1):
            await call.write(pb.WorkRequest(request_id=n, heartbeat=pb.HeartbeatRequest(
                job_id=claimed.job.id, lease_token=claimed.lease_token)))
        call.cancel()
        await wait_until(lambda: sessions.open == 0)
        for claimed in jobs:  # their worker finishes them by other means
            await stub.Complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token))
    # Every heartbeat taken in has been answered once its job could be completed (the row lock orders them).
    assert not sessions.holding(), "jobs still name a session that has ended"


async def test_a_request_cancelled_while_it_is_written_leaves_the_session_working(stub) -> None:
    """A job's heartbeat task is stopped as its job ends, maybe in the middle of writing a heartbeat; grpc
    answers a write cancelled mid-way by cancelling the whole call. The session's one stream then died
    without a word and every later request of the renderer waited out its timeout (its jobs' leases ran
    out; seen under load in tests/faults). The write now finishes whoever stops waiting for it."""
    held = Held()
    work = session(stub, held)
    try:
        job = await enqueue(stub)
        work.grant(1)
        await wait_until(lambda: held.jobs)
        [claimed] = held.jobs
        connects = work.connects
        for attempt in range(60):
            beat = asyncio.ensure_future(work.heartbeat(pb.HeartbeatRequest(
                job_id=job.id, lease_token=claimed.lease_token, progress=1 + attempt % 90)))
            for _ in range(attempt % 3):  # cancelled at different points of its way out
                await asyncio.sleep(0)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, SessionError):
                await beat
        answer = await work.heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=claimed.lease_token,
                                                          progress=95), timeout=5)
        assert answer.lease_expires_at.seconds > 0
        assert work.connects == connects  # the same stream all along: nothing broke it
    finally:
        await work.stop()


async def test_a_session_whose_call_is_cancelled_under_it_opens_another(stub) -> None:
    """Whatever ends the session's call, a CancelledError from grpc included, the session opens a new
    stream: it never ends by itself while its worker runs."""
    held = Held()
    work = session(stub, held)
    try:
        await wait_until(lambda: work.connected.is_set())
        connects = work.connects
        work._call.cancel()  # what grpc does to a call whose write was cancelled
        await wait_until(lambda: work.connects > connects and work.connected.is_set())
        job = await enqueue(stub)
        work.grant(1)
        await wait_until(lambda: held.jobs)
        assert held.jobs[0].job.id == job.id
    finally:
        await work.stop()
