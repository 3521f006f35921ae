"""Queue semantics over the real gRPC path and a real Postgres.

Tests of leases, backoff, due and expiry times run the jobstore on a ManualClock (jobstore/clock.py): they
set the time and run maintenance's tick themselves, so they are exact to the microsecond and neither
backdate rows nor sleep."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from docjobs.channels import jobstore_channel
from docjobs.v1 import jobstore_pb2 as pb
from jobstore.clock import ManualClock

from .conftest import GRPC_TOKEN, RunningJobStore, new_user, wait_until
from .helpers import claim, collect_events, enqueue


async def test_eight_concurrent_claimers_take_each_of_2000_jobs_exactly_once(stub) -> None:
    user = new_user()
    ids: set[str] = set()
    for start in range(0, 2000, 200):
        jobs = await asyncio.gather(*(enqueue(stub, user_id=user, priority=i % 5) for i in range(start, start + 200)))
        ids.update(j.id for j in jobs)
    assert len(ids) == 2000
    claimed_by: Counter[str] = Counter()

    async def worker(n: int) -> None:
        while True:
            got = await claim(stub, worker=f"w{n}", max_jobs=10)
            if not got:
                return
            for c in got:
                claimed_by[c.job.id] += 1
            await asyncio.gather(*(stub.Complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
                                   for c in got))

    await asyncio.gather(*(worker(n) for n in range(8)))
    assert set(claimed_by) == ids
    assert max(claimed_by.values()) == 1
    listed = await stub.ListJobs(pb.ListJobsRequest(user_id=user, statuses=[pb.JOB_STATUS_COMPLETED],
                                                    page_size=500))
    assert len(listed.jobs) == 500 and listed.next_page_token


async def test_priority_first_then_oldest(stub) -> None:
    low = await enqueue(stub, priority=0, title="low")
    high = await enqueue(stub, priority=10, title="high")
    low2 = await enqueue(stub, priority=0, title="low2")
    order = [c.job.title for c in await claim(stub, max_jobs=3)]
    assert order == ["high", "low", "low2"]
    del low, high, low2


def at(ts) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


async def on_a_manual_clock(jobstore_factory, **overrides) -> tuple[RunningJobStore, ManualClock]:
    """A jobstore whose time stands still until the test moves it; maintenance runs only when the test
    calls its tick."""
    clock = ManualClock()
    return await jobstore_factory(clock=clock, maintenance_interval_s=3600.0, **overrides), clock


async def test_a_delayed_job_is_due_at_its_run_at_and_not_a_microsecond_before(jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    job = await enqueue(store.stub, delay_ms=1500)
    assert at(job.run_at) == clock.now() + timedelta(milliseconds=1500)
    clock.advance(milliseconds=1500, microseconds=-1)
    assert await claim(store.stub) == []
    clock.advance(microseconds=1)
    [got] = await claim(store.stub)
    assert got.job.id == job.id and at(got.job.started_at) == clock.now()


async def test_a_long_poll_claim_sleeps_until_the_job_is_due_and_takes_it_then(stub) -> None:
    job = await enqueue(stub, delay_ms=500)
    assert await claim(stub) == []
    started = datetime.now(UTC)
    [got] = await claim(stub, wait_ms=10_000)
    assert got.job.id == job.id
    assert datetime.now(UTC) >= at(job.run_at) - timedelta(milliseconds=5)
    assert datetime.now(UTC) - started < timedelta(seconds=9)


async def test_run_at_in_the_future(stub) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    req = pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{}")
    req.run_at.FromDatetime(run_at)
    job = (await stub.Enqueue(req)).job
    assert abs(job.run_at.ToDatetime(tzinfo=UTC) - run_at) < timedelta(milliseconds=1)
    assert await claim(stub) == []


async def test_claim_only_takes_the_requested_types(stub) -> None:
    await enqueue(stub, job_type="pdf")
    assert await claim(stub, types=("spreadsheet",)) == []
    assert len(await claim(stub, types=("pdf",))) == 1


async def test_long_poll_claim_wakes_on_enqueue_through_another_replica(jobstore_factory) -> None:
    a = await jobstore_factory()
    b = await jobstore_factory()
    waiting = asyncio.create_task(claim(a.stub, wait_ms=20_000))
    await wait_until(lambda: len(a.server.claims) == 1)
    job = await enqueue(b.stub)
    # Woken by NOTIFY from the other replica, long before the 20 s wait ends.
    got = await asyncio.wait_for(waiting, 10)
    assert [c.job.id for c in got] == [job.id]


async def test_worker_that_stops_heartbeating_loses_its_job_and_its_late_complete_is_refused(
        jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    stub = store.stub
    job = await enqueue(stub, max_retries=2)
    [first] = await claim(stub, worker="dies", lease_ms=1000)
    assert at(first.lease_expires_at) == clock.now() + timedelta(seconds=1)
    # The lease runs out: at its last instant the job is still the worker's, a microsecond later the
    # reaper puts it back with backoff (base 200 ms, equal jitter: 100 to 200 ms).
    clock.advance(seconds=1)
    await store.server.maintenance.tick()
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_PROCESSING
    clock.advance(microseconds=1)
    assert (await store.server.maintenance.tick()).reaped == 1
    reaped = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert reaped.status == pb.JOB_STATUS_PENDING and reaped.error.code == "lease_expired"
    backoff = at(reaped.run_at) - clock.now()
    assert timedelta(milliseconds=100) <= backoff <= timedelta(milliseconds=200)
    assert await claim(stub, worker="lives") == []
    clock.advance(backoff)
    [second] = await claim(stub, worker="lives")
    assert second.job.id == job.id and second.attempt == 2
    assert second.lease_token != first.lease_token
    assert second.job.error.code == "lease_expired"
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=first.lease_token))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as late_beat:
        await stub.Heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=first.lease_token))
    assert late_beat.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    done = await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=second.lease_token))
    assert done.status == pb.JOB_STATUS_COMPLETED
    # Exactly once: a second Complete with the winning token is refused too.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=second.lease_token))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_heartbeat_extends_the_lease_and_records_progress(jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    stub = store.stub
    job = await enqueue(stub)
    [c] = await claim(stub, lease_ms=1000)
    for progress in (10, 40, 70):
        beat = await stub.Heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=c.lease_token,
                                                        progress=progress, message=f"at {progress}", lease_ms=1000))
        assert not beat.cancelled and at(beat.lease_expires_at) == clock.now() + timedelta(seconds=1)
        clock.advance(milliseconds=400)  # longer than the lease in total, but renewed each time
        await store.server.maintenance.tick()
    current = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert current.status == pb.JOB_STATUS_PROCESSING
    assert (current.progress, current.progress_message) == (70, "at 70")
    # Without the next heartbeat, the lease ends a second after the last one.
    clock.advance(milliseconds=600)
    assert (await store.server.maintenance.tick()).reaped == 0
    clock.advance(microseconds=1)
    assert (await store.server.maintenance.tick()).reaped == 1
    events = await collect_events(stub, pb.WatchRequest(job_id=job.id), count=5)
    assert [e.kind for e in events] == [pb.EVENT_KIND_STATUS, pb.EVENT_KIND_STATUS] + [pb.EVENT_KIND_PROGRESS] * 3
    assert [e.progress for e in events[2:]] == [10, 40, 70]


async def test_retries_back_off_exponentially_and_end_failed_with_the_last_error(jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    stub = store.stub
    job = await enqueue(stub, max_retries=2)
    retry_delays = []
    for attempt in (1, 2, 3):
        [c] = await claim(stub)
        assert c.attempt == attempt
        reply = await stub.Fail(pb.FailRequest(job_id=job.id, lease_token=c.lease_token, error_code="boom",
                                               error_message=f"attempt {attempt} failed", retryable=True))
        if attempt < 3:
            assert reply.will_retry and reply.job.status == pb.JOB_STATUS_PENDING
            delay = at(reply.retry_at) - clock.now()
            retry_delays.append(delay)
            clock.advance(delay - timedelta(microseconds=1))
            assert await claim(stub) == []  # not a microsecond before its time
            clock.advance(microseconds=1)
        else:
            assert not reply.will_retry
            assert reply.job.status == pb.JOB_STATUS_FAILED
            assert at(reply.job.completed_at) == clock.now()
    # base 200 ms with equal jitter: first retry in [0.1, 0.2] s, second in [0.2, 0.4] s.
    assert timedelta(milliseconds=100) <= retry_delays[0] <= timedelta(milliseconds=200)
    assert timedelta(milliseconds=200) <= retry_delays[1] <= timedelta(milliseconds=400)
    final = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert final.status == pb.JOB_STATUS_FAILED
    assert (final.error.code, final.error.message) == ("boom", "attempt 3 failed")
    assert final.retry_count == 2
    # The watcher never saw "failed" before the last attempt: retries are status events back to pending.
    events = await collect_events(stub, pb.WatchRequest(job_id=job.id))
    kinds = [(e.kind, e.status) for e in events]
    assert kinds.count((pb.EVENT_KIND_FAILED, pb.JOB_STATUS_FAILED)) == 1
    assert kinds[-1] == (pb.EVENT_KIND_FAILED, pb.JOB_STATUS_FAILED)
    retry_events = [e for e in events if e.kind == pb.EVENT_KIND_STATUS and e.error.code == "boom"]
    assert len(retry_events) == 2 and all(e.retry_at.seconds > 0 for e in retry_events)


async def test_not_retryable_failure_fails_at_once(stub) -> None:
    job = await enqueue(stub, max_retries=5)
    [c] = await claim(stub)
    reply = await stub.Fail(pb.FailRequest(job_id=job.id, lease_token=c.lease_token, error_code="invalid_spec",
                                           error_message="sheet 1 has no name", retryable=False))
    assert not reply.will_retry and reply.job.status == pb.JOB_STATUS_FAILED
    assert reply.job.error.code == "invalid_spec"


async def test_lease_expiry_with_no_retries_left_fails_the_job(jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    job = await enqueue(store.stub, max_retries=0)
    await claim(store.stub, lease_ms=1000)
    clock.advance(seconds=1, microseconds=1)
    await store.server.maintenance.tick()
    final = await store.stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert final.status == pb.JOB_STATUS_FAILED and final.error.code == "lease_expired"
    assert at(final.completed_at) == clock.now()


async def test_expired_jobs_fail_with_reason_expired(jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    stub = store.stub
    pending = await enqueue(stub, ttl_ms=300, job_type="pdf")
    processing = await enqueue(stub, ttl_ms=600, job_type="document")
    [c] = await claim(stub, types=("document",))
    assert c.job.id == processing.id
    for job in (pending, processing):  # each fails at its expiry time, not before
        clock.advance(milliseconds=300, microseconds=-1)
        assert (await store.server.maintenance.tick()).expired == 0
        clock.advance(microseconds=1)
        assert (await store.server.maintenance.tick()).expired == 1
        final = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
        assert final.status == pb.JOB_STATUS_FAILED and final.error.code == "expired"
        assert at(final.completed_at) == at(final.expires_at) == clock.now()
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.Complete(pb.CompleteRequest(job_id=processing.id, lease_token=c.lease_token))
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    events = await collect_events(stub, pb.WatchRequest(job_id=pending.id))
    assert events[-1].kind == pb.EVENT_KIND_FAILED and events[-1].error.code == "expired"


async def test_an_expired_job_is_never_claimed(jobstore_factory) -> None:
    store, clock = await on_a_manual_clock(jobstore_factory)
    await enqueue(store.stub, ttl_ms=60_000)
    clock.advance(minutes=1)  # expiry passed, but maintenance has not run yet
    assert await claim(store.stub) == []


async def test_cancel_a_pending_job(stub) -> None:
    job = await enqueue(stub)
    cancelled = await stub.Cancel(pb.CancelRequest(job_id=job.id, reason="user closed the tab"))
    assert cancelled.status == pb.JOB_STATUS_CANCELLED
    assert cancelled.error.message == "user closed the tab"
    assert await claim(stub) == []
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.Cancel(pb.CancelRequest(job_id=job.id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    events = await collect_events(stub, pb.WatchRequest(job_id=job.id))
    assert events[-1].kind == pb.EVENT_KIND_CANCELLED


async def test_cancel_a_processing_job_tells_its_worker_and_refuses_its_complete(stub) -> None:
    job = await enqueue(stub)
    [c] = await claim(stub)
    await stub.Cancel(pb.CancelRequest(job_id=job.id))
    beat = await stub.Heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=c.lease_token, progress=50))
    assert beat.cancelled
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=c.lease_token))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_CANCELLED


async def test_another_users_job_is_not_found(stub) -> None:
    job = await enqueue(stub, user_id="alice")
    for call in (stub.GetJob(pb.GetJobRequest(job_id=job.id, user_id="mallory")),
                 stub.Cancel(pb.CancelRequest(job_id=job.id, user_id="mallory"))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect_events(stub, pb.WatchRequest(job_id=job.id, user_id="mallory"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_idempotent_enqueue_under_20_concurrent_calls_makes_one_job(stub) -> None:
    user = new_user()
    requests = [pb.EnqueueRequest(job_type="pdf", user_id=user, payload_json=json.dumps({"n": 1}),
                                  idempotency_key="msg-42") for _ in range(20)]
    replies = await asyncio.gather(*(stub.Enqueue(r) for r in requests))
    assert len({r.job.id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    listed = await stub.ListJobs(pb.ListJobsRequest(user_id=user))
    assert len(listed.jobs) == 1
    # The same key for another user is another job.
    other = await stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id=new_user(), payload_json="{}",
                                                 idempotency_key="msg-42"))
    assert other.created and other.job.id != replies[0].job.id


async def test_list_jobs_pages_newest_first(stub) -> None:
    user = new_user()
    made = [await enqueue(stub, user_id=user, session_id="s1", title=f"t{i}") for i in range(7)]
    await enqueue(stub, user_id=user, session_id="s2")
    seen, token = [], ""
    while True:
        page = await stub.ListJobs(pb.ListJobsRequest(user_id=user, session_id="s1", page_size=3, page_token=token))
        seen += [j.title for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [j.title for j in reversed(made)]


async def test_listings_leave_large_payloads_out_unless_asked(jobstore) -> None:
    """A session of large jobs (specs of 3.5 MB): listing it used to carry every payload, and from five such
    jobs on the reply passed gRPC's 16 MiB message limit (RESOURCE_EXHAUSTED: the gateway's job list of
    that session failed). Payloads are now in a worker's claim, and in GetJob and listings when asked (a
    page then ends before 12 MiB and the next page goes on); no other reply carries them."""
    from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

    user = new_user()
    spec = {"blocks": [{"type": "paragraph", "text": f"paragraph {i} " + "x" * 990} for i in range(3500)]}
    payload = json.dumps({"spec": spec})
    limit = 16 * 1024 * 1024
    options = [("grpc.max_receive_message_length", limit)]
    async with jobstore_channel(jobstore.address, GRPC_TOKEN, options) as channel:
        stub = pb_grpc.JobStoreStub(channel)
        made = [(await stub.Enqueue(pb.EnqueueRequest(job_type="big-payload", user_id=user, session_id="big",
                                                      payload_json=payload))).job for _ in range(5)]
        assert all(job.payload_json == "" for job in made)  # the caller has it
        ids = [job.id for job in made]
        newest_first = ids[::-1]
        listed = await stub.ListJobs(pb.ListJobsRequest(user_id=user, session_id="big"))
        assert [j.id for j in listed.jobs] == newest_first and not listed.next_page_token
        assert all(j.payload_json == "" for j in listed.jobs)
        assert (await stub.GetJob(pb.GetJobRequest(job_id=ids[0]))).payload_json == ""
        asked = await stub.GetJob(pb.GetJobRequest(job_id=ids[0], include_payload=True))
        assert json.loads(asked.payload_json) == {"spec": spec}
        pages, token = [], ""
        while True:
            page = await stub.ListJobs(pb.ListJobsRequest(user_id=user, session_id="big", include_payloads=True,
                                                          page_token=token))
            assert page.ByteSize() < limit
            assert all(json.loads(j.payload_json) == {"spec": spec} for j in page.jobs)
            pages.append([j.id for j in page.jobs])
            token = page.next_page_token
            if not token:
                break
        # The worker gets it with its claim; the completion's reply leaves it out again.
        [claimed] = (await stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["big-payload"]))).jobs
        assert json.loads(claimed.job.payload_json) == {"spec": spec}
        done = await stub.Complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token))
        assert done.status == pb.JOB_STATUS_COMPLETED and done.payload_json == ""
    assert [i for p in pages for i in p] == newest_first and len(pages) > 1


async def test_stats_count_by_type_and_status(stub) -> None:
    await enqueue(stub, job_type="pdf")
    await enqueue(stub, job_type="pdf")
    await enqueue(stub, job_type="document", delay_ms=60_000)
    [c] = await claim(stub, types=("pdf",))
    await stub.Complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
    stats = await stub.GetStats(pb.GetStatsRequest())
    counts = {(c.job_type, c.status): c.count for c in stats.counts}
    assert counts[("pdf", pb.JOB_STATUS_PENDING)] == 1
    assert counts[("pdf", pb.JOB_STATUS_COMPLETED)] == 1
    assert counts[("document", pb.JOB_STATUS_PENDING)] == 1
    assert (stats.due_pending, stats.delayed_pending, stats.processing) == (1, 1, 0)
    assert stats.enqueued_last_minute == 3 and stats.completed_last_minute == 1
    assert stats.oldest_due_pending_age_seconds >= 0


async def test_complete_many_completes_each_job_once_and_says_why_not(stub) -> None:
    for _ in range(4):
        await enqueue(stub, job_type="pdf")
    held = await claim(stub, types=("pdf",), max_jobs=4)
    assert len(held) == 4
    stale = held[3]
    await stub.Cancel(pb.CancelRequest(job_id=stale.job.id))
    items = [pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token, result_json=json.dumps({"n": i}))
             for i, c in enumerate(held)]
    items.append(pb.CompleteRequest(job_id=str(uuid.uuid4()), lease_token=str(uuid.uuid4())))
    reply = await stub.CompleteMany(pb.CompleteManyRequest(jobs=items))
    assert [o.job_id for o in reply.outcomes] == [i.job_id for i in items]
    assert [o.completed for o in reply.outcomes] == [True, True, True, False, False]
    assert reply.outcomes[3].error_code == "FAILED_PRECONDITION"
    assert reply.outcomes[4].error_code == "NOT_FOUND"
    for i, c in enumerate(held[:3]):
        job = await stub.GetJob(pb.GetJobRequest(job_id=c.job.id))
        assert job.status == pb.JOB_STATUS_COMPLETED and json.loads(job.result_json) == {"n": i}
    # A repeated call completes nothing twice.
    again = await stub.CompleteMany(pb.CompleteManyRequest(jobs=items[:3]))
    assert [o.error_code for o in again.outcomes] == ["FAILED_PRECONDITION"] * 3


async def test_complete_many_answers_jobs_with_artifacts_and_a_job_named_twice_in_order(stub) -> None:
    """Completions with an artifact take another path than those without (store.complete_many): each job
    still gets its own outcome, in the order asked, and a job named twice is completed once."""
    from .test_artifacts import upload_requests

    jobs = [await enqueue(stub, job_type="pdf") for _ in range(3)]
    held = {c.job.id: c for c in await claim(stub, types=("pdf",), max_jobs=3)}
    a, b, c = (held[j.id] for j in jobs)
    art_b = await stub.UploadArtifact(upload_requests(b.job.id, b.lease_token, [b"b"]))
    items = [pb.CompleteRequest(job_id=a.job.id, lease_token=a.lease_token, result_json='{"n": 1}'),
             pb.CompleteRequest(job_id=b.job.id, lease_token=b.lease_token, artifact_id=art_b.id),
             pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token, artifact_id=art_b.id),  # b's
             pb.CompleteRequest(job_id=a.job.id, lease_token=a.lease_token, result_json='{"n": 2}')]
    reply = await stub.CompleteMany(pb.CompleteManyRequest(jobs=items))
    assert [(o.job_id, o.completed, o.error_code) for o in reply.outcomes] == [
        (a.job.id, True, ""), (b.job.id, True, ""), (c.job.id, False, "INVALID_ARGUMENT"),
        (a.job.id, False, "FAILED_PRECONDITION")]
    assert json.loads((await stub.GetJob(pb.GetJobRequest(job_id=a.job.id))).result_json) == {"n": 1}
    assert (await stub.GetJob(pb.GetJobRequest(job_id=b.job.id))).artifact_id == art_b.id
    assert (await stub.GetJob(pb.GetJobRequest(job_id=c.job.id))).status == pb.JOB_STATUS_PROCESSING


@pytest.mark.parametrize(("jobs", "field"), [
    ([], "jobs"),
    ([pb.CompleteRequest(job_id=str(uuid.uuid4()), lease_token=str(uuid.uuid4()))] * 501, "jobs"),
    ([pb.CompleteRequest(job_id=str(uuid.uuid4()), lease_token=str(uuid.uuid4())),
      pb.CompleteRequest(job_id="not-a-uuid", lease_token=str(uuid.uuid4()))], "jobs[1].job_id"),
])
async def test_complete_many_refuses_a_bad_request_whole(stub, jobs, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteMany(pb.CompleteManyRequest(jobs=jobs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata())["docjobs-field"] == field


async def test_release_worker_gives_back_what_a_stopping_worker_never_received(stub) -> None:
    for _ in range(3):
        await enqueue(stub, job_type="pdf")
    mine = await claim(stub, worker="stopping", types=("pdf",), max_jobs=2)
    other = await claim(stub, worker="someone-else", types=("pdf",))
    kept, unread = mine
    reply = await stub.ReleaseWorker(pb.ReleaseWorkerRequest(worker_id="stopping", keep_job_ids=[kept.job.id]))
    assert list(reply.released_job_ids) == [unread.job.id]
    released = await stub.GetJob(pb.GetJobRequest(job_id=unread.job.id))
    assert released.status == pb.JOB_STATUS_PENDING and released.retry_count == 0 and not released.worker_id
    for still in (kept, other[0]):
        assert (await stub.GetJob(pb.GetJobRequest(job_id=still.job.id))).status == pb.JOB_STATUS_PROCESSING
    events = await collect_events(stub, pb.WatchRequest(job_id=unread.job.id, history_only=True))
    assert events[-1].status == pb.JOB_STATUS_PENDING and "worker stopped" in events[-1].message
    # Its old lease is dead; the job is claimable again at once.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete(pb.CompleteRequest(job_id=unread.job.id, lease_token=unread.lease_token))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [c.job.id for c in await claim(stub, worker="next", types=("pdf",))] == [unread.job.id]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReleaseWorker(pb.ReleaseWorkerRequest(worker_id=" "))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_claim_answer_holds_what_one_message_can_and_gives_the_rest_back_at_once(stub) -> None:
    """Five jobs of 3.9 MB payloads passed what one answer may hold (16 MiB): the answer failed, and all
    five stayed leased to a worker that never had them, each losing an attempt. Now the answer holds what
    fits, and the others are back in the queue at once, their attempts not counted."""
    user = new_user()
    payload = json.dumps({"text": "x" * 3_900_000})
    ids = {(await stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id=user, payload_json=payload))).job.id
           for _ in range(5)}
    first = (await stub.Claim(pb.ClaimRequest(worker_id="big", job_types=["pdf"], max_jobs=5))).jobs
    assert 1 <= len(first) < 5
    assert all(len(c.job.payload_json) == len(payload) for c in first)

    async def claimable() -> list[pb.ClaimedJob]:
        return list((await stub.Claim(pb.ClaimRequest(worker_id="next", job_types=["pdf"], max_jobs=5))).jobs)

    rest = await wait_until(claimable)  # given back in the background, right after the answer
    assert {c.job.id for c in first} | {c.job.id for c in rest} == ids
    assert {c.attempt for c in (*first, *rest)} == {1}


async def test_a_page_with_payloads_is_read_a_few_jobs_at_a_time(jobstore, monkeypatch) -> None:
    """A page of up to 500 jobs with their payloads (4 MiB each at most) was read whole, up to 2 GB in the
    jobstore's memory, to answer the 12 MiB of it one reply holds. Now it is read a few jobs at a time, and
    the pages still hold every job once, in order, each payload whole."""
    from jobstore.service import LIST_PAYLOAD_BATCH

    store = jobstore.server.store
    asked: list[tuple[int, bool]] = []
    list_jobs = store.list_jobs

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        asked.append((args[4], kwargs.get("with_payloads", False)))
        return await list_jobs(*args, **kwargs)

    monkeypatch.setattr(store, "list_jobs", recorded)
    user = new_user()
    text = "y" * 1_000_000
    ids = [(await jobstore.stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id=user,
                                                          payload_json=json.dumps({"n": i, "text": text})))).job.id
           for i in range(30)]
    pages, token = [], ""
    while True:
        page = await jobstore.stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=500, include_payloads=True,
                                                               page_token=token))
        assert all(json.loads(j.payload_json)["text"] == text for j in page.jobs)
        pages.append([j.id for j in page.jobs])
        token = page.next_page_token
        if not token:
            break
    assert [i for p in pages for i in p] == ids[::-1] and len(pages) > 1
    assert asked and all(with_payloads and limit <= LIST_PAYLOAD_BATCH + 1 for limit, with_payloads in asked)
    # Without payloads, a page is one read, as before.
    asked.clear()
    listed = await jobstore.stub.ListJobs(pb.ListJobsRequest(user_id=user, page_size=500))
    assert len(listed.jobs) == 30 and asked == [(501, False)]
    # Small payloads are read more at a time once the first few show they are small.
    small = new_user()
    for i in range(120):
        await jobstore.stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id=small, payload_json=f'{{"n": {i}}}'))
    asked.clear()
    page = await jobstore.stub.ListJobs(pb.ListJobsRequest(user_id=small, page_size=500, include_payloads=True))
    assert [json.loads(j.payload_json)["n"] for j in page.jobs] == list(range(119, -1, -1))
    assert not page.next_page_token and len(asked) <= 4, asked
