"""Release: a worker gives back one claimed job that could not be worked on through no fault of its own
(its sandbox died, it is stopping). Over the real gRPC path, a real Postgres and a ManualClock."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.clock import ManualClock
from jobstore.store import FREE_RELEASES

from .conftest import new_user
from .helpers import claim, collect_events, enqueue


async def _release(stub, claimed: pb.ClaimedJob, code: str = "sandbox_restarted",
                   reason: str = "the render sandbox died") -> pb.ReleaseResponse:
    return await stub.Release(pb.ReleaseRequest(job_id=claimed.job.id, lease_token=claimed.lease_token, code=code,
                                                reason=reason))


async def test_a_released_job_is_pending_at_once_with_no_retry_counted_and_its_event_says_so(
        jobstore_factory) -> None:
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)
    job = await enqueue(store.stub, user_id=new_user(), max_retries=1)
    [held] = await claim(store.stub, worker="renderer-a")
    reply = await _release(store.stub, held)
    assert not reply.attempt_counted and not reply.HasField("retry_at")
    released = reply.job
    assert released.status == pb.JOB_STATUS_PENDING and released.retry_count == 0 and released.release_count == 1
    assert not released.worker_id and not released.HasField("error")
    assert released.run_at.ToDatetime(tzinfo=UTC) == clock.now()  # due now: no backoff
    events = await collect_events(store.stub, pb.WatchRequest(job_id=job.id, history_only=True))
    assert [(e.kind, e.status) for e in events] == [
        (pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PENDING), (pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PROCESSING),
        (pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PENDING)]
    assert events[-1].message == "released: the render sandbox died" and events[-1].attempt == 1
    assert not events[-1].error.code
    # Claimable again at once, as the same attempt; the old lease is dead.
    [again] = await claim(store.stub, worker="renderer-b")
    assert again.job.id == job.id and again.attempt == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await store.stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=held.lease_token))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Not an enqueue in the statistics.
    assert (await store.stub.GetStats(pb.GetStatsRequest())).enqueued_last_minute == 1


async def test_a_stale_lease_token_is_refused_and_changes_nothing(stub) -> None:
    job = await enqueue(stub, user_id=new_user())
    [first] = await claim(stub)
    await _release(stub, first)
    [second] = await claim(stub)
    for stale in (first, pb.ClaimedJob(job=second.job, lease_token=first.lease_token)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _release(stub, stale)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no longer held" in (err.value.details() or "")
    now = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert now.status == pb.JOB_STATUS_PROCESSING and now.release_count == 1
    await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=second.lease_token))
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a finished job cannot be released
        await _release(stub, second)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _release(stub, pb.ClaimedJob(job=pb.Job(id=str(uuid.uuid4())), lease_token=second.lease_token))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_past_the_bound_a_release_counts_as_an_attempt_so_a_job_cannot_go_round_forever(
        jobstore_factory) -> None:
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)
    job = await enqueue(store.stub, user_id=new_user(), max_retries=1)
    for n in range(1, FREE_RELEASES + 1):
        [held] = await claim(store.stub)
        reply = await _release(store.stub, held)
        assert not reply.attempt_counted and reply.job.release_count == n and reply.job.retry_count == 0
    # The next release is counted: a retry with backoff, the code as its error.
    [held] = await claim(store.stub)
    reply = await _release(store.stub, held, code="sandbox_restarted", reason="the render sandbox died again")
    assert reply.attempt_counted and reply.job.status == pb.JOB_STATUS_PENDING and reply.job.retry_count == 1
    assert reply.job.error.code == "sandbox_restarted" and reply.job.error.retryable
    retry_at = reply.retry_at.ToDatetime(tzinfo=UTC)
    assert clock.now() + timedelta(milliseconds=100) <= retry_at <= clock.now() + timedelta(milliseconds=200)
    assert await claim(store.stub) == []  # not before its backoff
    clock.advance(milliseconds=200)
    # And with no retry left, the counted release fails the job for good.
    [held] = await claim(store.stub)
    assert held.attempt == 2
    reply = await _release(store.stub, held)
    assert reply.attempt_counted and reply.job.status == pb.JOB_STATUS_FAILED
    assert reply.job.error.code == "sandbox_restarted" and not reply.job.error.retryable
    assert reply.job.release_count == FREE_RELEASES + 2
    events = await collect_events(store.stub, pb.WatchRequest(job_id=job.id))  # ends: the job is finished
    assert events[-1].kind == pb.EVENT_KIND_FAILED and events[-1].error.code == "sandbox_restarted"


@pytest.mark.parametrize(("fields", "field"), [
    ({"job_id": "nope", "lease_token": "00000000-0000-0000-0000-000000000000", "code": "x"}, "job_id"),
    ({"job_id": "00000000-0000-0000-0000-000000000000", "code": "x"}, "lease_token"),
    ({"job_id": "00000000-0000-0000-0000-000000000000", "lease_token": "00000000-0000-0000-0000-000000000000"},
     "code"),
    ({"job_id": "00000000-0000-0000-0000-000000000000", "lease_token": "00000000-0000-0000-0000-000000000000",
      "code": "x", "reason": "r" * 501}, "reason"),
])
async def test_a_bad_release_request_names_its_field(stub, fields, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Release(pb.ReleaseRequest(**fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata())["docjobs-field"] == field
