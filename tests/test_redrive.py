"""Dead letters and redrive: a job that used all its retries stays failed with every attempt's error
readable; a failed or cancelled job runs again (the same id, a new attempt, its events after the old ones
on every stream); a service redrives failed jobs in bulk. Over HTTP, gRPC and the `docjobs` command,
against a real jobstore and gateway; the test is the worker (Claim, Fail, Complete over gRPC)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from docjobs.v1 import jobstore_pb2 as pb
from gateway.app import HUB
from jobstore.queries import Q

from .conftest import new_user, wait_until
from .gateway_client import SECRET, bearer, read_sse, start_gateway, token
from .helpers import claim, collect_events, enqueue
from .renderers import example


def service() -> dict[str, str]:
    """A service's token, minted now (one minted at import expires before a long suite reaches it)."""
    return {"Authorization": "Bearer " + jwt.encode(
        {"sub": "ops", "scope": "docjobs:service", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")}


async def post_job(http, gateway, user: str, job_type: str = "pdf", **fields: Any) -> dict[str, Any]:
    body = {"documentType": job_type, **example(job_type), **fields}
    async with http.post(gateway.base + "/api/jobs", json=body, headers=bearer(user)) as r:
        assert r.status == 202, await r.text()
        created: dict[str, Any] = await r.json()
        return created


async def call(http, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, **kwargs) as r:
        return r.status, await r.json()


async def fail_attempt(stub, job_type: str, code: str, *, retryable: bool = True,
                       worker: str = "worker-1") -> pb.FailResponse:
    """Claim the one due job of this type (waiting for its backoff) and fail it."""
    claimed = await claim(stub, worker, (job_type,), wait_ms=10_000)
    assert len(claimed) == 1
    return await stub.Fail(pb.FailRequest(job_id=claimed[0].job.id, lease_token=claimed[0].lease_token,
                                          error_code=code, error_message=f"{code} happened", retryable=retryable))


async def complete_next(stub, job_type: str, worker: str = "worker-2") -> pb.ClaimedJob:
    claimed = await claim(stub, worker, (job_type,), wait_ms=10_000)
    assert len(claimed) == 1
    await stub.Complete(pb.CompleteRequest(job_id=claimed[0].job.id, lease_token=claimed[0].lease_token,
                                           result_json='{"filename": "x.pdf"}'))
    return claimed[0]


async def test_a_dead_letter_keeps_every_attempt_and_runs_again_under_its_id(http, gateway, stub) -> None:
    user = new_user()
    created = await post_job(http, gateway, user, maxRetries=1)
    job_url = f"{gateway.base}/api/jobs/{created['jobId']}"
    first = await fail_attempt(stub, "pdf", "boom-1", worker="worker-a")
    assert first.will_retry
    last = await fail_attempt(stub, "pdf", "boom-2", worker="worker-b")
    assert not last.will_retry  # retries spent: a dead letter
    status, job = await call(http, "GET", job_url, bearer(user))
    assert status == 200 and job["status"] == "failed" and job["error"]["code"] == "boom-2"
    history = job["attemptHistory"]
    assert [(a["attempt"], a["outcome"], a["worker"], a["error"]["code"]) for a in history] == [
        (1, "failed", "worker-a", "boom-1"), (2, "failed", "worker-b", "boom-2")]
    assert all(a["startedAt"] <= a["endedAt"] for a in history)
    assert history[0]["error"]["message"] == "boom-1 happened"

    # Listed among the user's failed jobs, for the user and for a service naming the user.
    for headers, query in ((bearer(user), "status=failed"), (service(), f"status=failed&userId={user}")):
        status, listed = await call(http, "GET", f"{gateway.base}/api/jobs?{query}", headers)
        assert status == 200 and [j["jobId"] for j in listed["jobs"]] == [created["jobId"]]
    status, listed = await call(http, "GET", f"{gateway.base}/api/jobs?status=completed", bearer(user))
    assert listed["jobs"] == []

    # Another user's retry: 404, as for any of the job's URLs.
    status, error = await call(http, "POST", job_url + "/retry", bearer(new_user()))
    assert status == 404 and error["error"]["code"] == "not_found"
    status, retried = await call(http, "POST", job_url + "/retry", bearer(user))
    assert status == 202 and retried["jobId"] == created["jobId"] and retried["status"] == "pending"
    assert "error" not in retried
    # Pending again: not retried twice.
    status, error = await call(http, "POST", job_url + "/retry", bearer(user))
    assert status == 409 and error["error"]["code"] == "conflict" and "pending" in error["error"]["message"]

    # The new attempt is the third, with a fresh budget of one retry.
    again = await fail_attempt(stub, "pdf", "boom-3", worker="worker-c")
    assert again.will_retry and again.job.retry_count == 3
    claimed = await complete_next(stub, "pdf")
    assert claimed.attempt == 4
    status, job = await call(http, "GET", job_url, bearer(user))
    assert job["status"] == "completed" and "error" not in job
    assert [(a["attempt"], a["outcome"]) for a in job["attemptHistory"]] == [
        (1, "failed"), (2, "failed"), (3, "failed"), (4, "completed")]
    assert job["attemptHistory"][-1]["error"] is None
    status, error = await call(http, "POST", job_url + "/retry", bearer(user))
    assert status == 409 and set(error["error"]) >= {"code", "message"} and "completed" in error["error"]["message"]


async def test_a_running_job_is_not_retried_and_a_cancelled_one_is(http, gateway, stub) -> None:
    user = new_user()
    created = await post_job(http, gateway, user)
    job_url = f"{gateway.base}/api/jobs/{created['jobId']}"
    claimed = await claim(stub, "worker-1", ("pdf",))
    status, error = await call(http, "POST", job_url + "/retry", bearer(user))
    assert status == 409 and "processing" in error["error"]["message"]
    status, _ = await call(http, "DELETE", job_url, bearer(user))
    assert status == 200
    status, retried = await call(http, "POST", job_url + "/retry", bearer(user))
    assert status == 202 and retried["status"] == "pending"
    # The worker of the cancelled attempt holds a stale lease: it cannot complete the new attempt.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(pb.CompleteRequest(job_id=claimed[0].job.id, lease_token=claimed[0].lease_token))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status, job = await call(http, "GET", job_url, bearer(user))
    assert [(a["attempt"], a["outcome"], a["error"]["code"]) for a in job["attemptHistory"]] == [
        (1, "cancelled", "cancelled")]


async def test_streams_show_the_new_attempt_after_the_old_end(http, gateway, stub) -> None:
    """A stream that ended at the terminal event, resumed from it (Last-Event-ID) or opened anew, shows
    the retried job's new attempt and ends at its new end: over SSE and over a one-job gRPC Watch."""
    user = new_user()
    created = await post_job(http, gateway, user, maxRetries=0)
    events_url = gateway.base + created["eventsUrl"]
    await fail_attempt(stub, "pdf", "boom")
    first = await read_sse(http, events_url)
    assert [e.name for e in first.events] == ["status", "status", "job-failed"]
    failed_at = first.events[-1].id
    assert failed_at is not None
    watched = await collect_events(stub, pb.WatchRequest(job_id=created["jobId"]))
    assert watched[-1].kind == pb.EVENT_KIND_FAILED and watched[-1].id == failed_at

    status, _ = await call(http, "POST", f"{gateway.base}/api/jobs/{created['jobId']}/retry", bearer(user))
    assert status == 202
    # Resumed after the old end, while the new attempt runs: the retry, then live events to the new end.
    resumed_sse = asyncio.ensure_future(read_sse(http, events_url, headers={"Last-Event-ID": str(failed_at)}))
    resumed_watch = asyncio.ensure_future(
        collect_events(stub, pb.WatchRequest(job_id=created["jobId"], after_event_id=failed_at)))
    await asyncio.sleep(0)
    claimed = await claim(stub, "worker-2", ("pdf",), wait_ms=10_000)
    assert claimed[0].attempt == 2
    await wait_until(lambda: gateway.runner.app[HUB].stream_count == 1)
    await stub.Complete(pb.CompleteRequest(job_id=claimed[0].job.id, lease_token=claimed[0].lease_token,
                                           result_json="{}"))
    async with asyncio.timeout(10):
        sse = await resumed_sse
        grpc_events = await resumed_watch
    assert [(e.name, e.data["status"]) for e in sse.events] == [
        ("status", "pending"), ("status", "processing"), ("job-complete", "completed")]
    assert sse.events[0].data["retried"] is True and sse.events[0].data["attempt"] == 2
    assert [e.kind for e in grpc_events] == [pb.EVENT_KIND_STATUS, pb.EVENT_KIND_STATUS, pb.EVENT_KIND_COMPLETED]
    assert grpc_events[0].retried and grpc_events[0].attempt == 2
    assert [e.id for e in grpc_events] == [e.id for e in sse.events]

    # Opened anew: the whole history, through the old end to the new one.
    async with asyncio.timeout(10):
        whole = await read_sse(http, events_url)
        whole_watch = await collect_events(stub, pb.WatchRequest(job_id=created["jobId"]))
        history = await collect_events(stub, pb.WatchRequest(job_id=created["jobId"], history_only=True))
    assert [e.name for e in whole.events] == ["status", "status", "job-failed", "status", "status", "job-complete"]
    assert [e.id for e in whole.events] == [e.id for e in whole_watch] == [e.id for e in history]
    # Resumed at the new end: nothing left.
    async with asyncio.timeout(10):
        after_end = await read_sse(http, events_url, headers={"Last-Event-ID": str(whole.events[-1].id)})
    assert after_end.events == []


async def test_a_retried_job_shows_on_the_session_stream(http, gateway, stub) -> None:
    user = new_user()
    created = await post_job(http, gateway, user, maxRetries=0, sessionId="chat-1")
    await fail_attempt(stub, "pdf", "boom")
    status, _ = await call(http, "POST", f"{gateway.base}/api/jobs/{created['jobId']}/retry", bearer(user))
    assert status == 202
    stream = await read_sse(http, gateway.base + created["sessionEventsUrl"], max_events=4)
    assert [e.name for e in stream.events] == ["status", "status", "job-failed", "status"]
    assert stream.events[-1].data == {"jobId": created["jobId"], "status": "pending", "attempt": 2,
                                      "message": "retried by the user", "retried": True}


async def test_an_expired_job_retried_gets_its_time_to_live_again(http, gateway, stub) -> None:
    user = new_user()
    created = await post_job(http, gateway, user, expiresInSeconds=1)
    job_url = f"{gateway.base}/api/jobs/{created['jobId']}"

    async def status_of() -> dict[str, Any]:
        return (await call(http, "GET", job_url, bearer(user)))[1]

    expired = await wait_until(lambda: _if(status_of(), lambda j: j["status"] == "failed"), timeout=15)
    assert expired["error"]["code"] == "expired"
    status, retried = await call(http, "POST", job_url + "/retry", bearer(user))
    assert status == 202 and retried["status"] == "pending" and retried["expiresAt"] > expired["expiresAt"]
    claimed = await claim(stub, "worker-1", ("pdf",))
    assert len(claimed) == 1 and claimed[0].attempt == 2


async def _if(value: Any, check: Any) -> Any:
    got = await value
    return got if check(got) else None


async def fail_now(http, gateway, stub, user: str, job_type: str) -> dict[str, Any]:
    """A job of user's that fails for good at once; returns it as GET shows it (with its completedAt)."""
    created = await post_job(http, gateway, user, job_type=job_type, maxRetries=0)
    await fail_attempt(stub, job_type, "boom", retryable=False)
    status, job = await call(http, "GET", f"{gateway.base}/api/jobs/{created['jobId']}", bearer(user))
    assert status == 200 and job["status"] == "failed"
    return job


async def test_a_service_redrives_failed_jobs_by_type_and_time(http, gateway, stub) -> None:
    alice, bob = new_user(), new_user()
    a = await fail_now(http, gateway, stub, alice, "pdf")
    b = await fail_now(http, gateway, stub, bob, "pdf")
    c = await fail_now(http, gateway, stub, alice, "spreadsheet")
    cancelled = await post_job(http, gateway, bob)
    assert (await call(http, "DELETE", f"{gateway.base}/api/jobs/{cancelled['jobId']}", bearer(bob)))[0] == 200
    redrive = gateway.base + "/api/jobs/redrive"

    # A user may not: 403, and nothing ran again.
    status, error = await call(http, "POST", redrive, bearer(alice), json={})
    assert status == 403 and error["error"]["code"] == "forbidden"
    status, _ = await call(http, "POST", redrive, {}, json={})
    assert status == 401

    status, answer = await call(http, "POST", redrive, service(),
                                json={"documentType": "pdf", "failedBefore": b["completedAt"]})
    assert status == 200 and answer == {"count": 1, "jobIds": [a["jobId"]], "more": False}
    status, answer = await call(http, "POST", redrive, service(),
                                json={"failedAfter": b["completedAt"], "limit": 1})
    assert status == 200 and answer == {"count": 1, "jobIds": [b["jobId"]], "more": True}
    status, answer = await call(http, "POST", redrive, service(), json={"documentType": "pdf"})
    assert answer == {"count": 0, "jobIds": [], "more": False}
    # No filter, no body: every failed job left (never a cancelled one).
    status, answer = await call(http, "POST", redrive, service())
    assert status == 200 and answer == {"count": 1, "jobIds": [c["jobId"]], "more": False}
    for job, user in ((a, alice), (b, bob), (c, alice)):
        status, now = await call(http, "GET", f"{gateway.base}/api/jobs/{job['jobId']}", bearer(user))
        assert now["status"] == "pending"
    status, still = await call(http, "GET", f"{gateway.base}/api/jobs/{cancelled['jobId']}", bearer(bob))
    assert still["status"] == "cancelled"
    # The redriven jobs run again: claimed as their second attempt.
    claimed = await claim(stub, "worker-9", ("pdf", "spreadsheet"), max_jobs=10)
    assert sorted((c.job.id, c.attempt) for c in claimed) == sorted((j["jobId"], 2) for j in (a, b, c))


BAD_REDRIVES = [
    ({"failedAfter": "yesterday"}, "failedAfter", 422),
    ({"failedBefore": "2026-11-30 10:00"}, "failedBefore", 422),
    ({"failedAfter": "2026-13-40T10:00:00Z"}, "failedAfter", 422),
    ({"failedAfter": 1764500000}, "failedAfter", 422),
    ({"failedAfter": "2026-11-30T10:00:00Z", "failedBefore": "2026-11-30T09:00:00Z"}, "failedBefore", 422),
    ({"documentType": "xls"}, "documentType", 422),
    ({"limit": 0}, "limit", 422),
    ({"limit": 1001}, "limit", 422),
    ({"limit": True}, "limit", 422),
    ({"failedAftr": "2026-11-30T10:00:00Z"}, "failedAftr", 422),
    ([], "body", 400),
]


async def test_bad_redrive_input_is_a_4xx_naming_the_field(http, gateway, stub) -> None:
    user = new_user()
    job = await fail_now(http, gateway, stub, user, "pdf")
    redrive = gateway.base + "/api/jobs/redrive"
    for body, field, status in BAD_REDRIVES:
        got, error = await call(http, "POST", redrive, service(), json=body)
        assert (got, error["error"]["field"]) == (status, field), (body, error)
    got, error = await call(http, "POST", redrive, {**service(), "Content-Type": "text/plain"}, data="{}")
    assert got == 415 and error["error"]["field"] == "Content-Type"
    got, error = await call(http, "POST", redrive, {**service(), "Content-Type": "application/json"}, data="{x")
    assert got == 400 and error["error"]["field"] == "body"
    got, error = await call(http, "POST", gateway.base + "/api/jobs/not-a-job/retry", bearer(user))
    assert got == 404 and error["error"]["field"] == "jobId"
    status_now = (await call(http, "GET", f"{gateway.base}/api/jobs/{job['jobId']}", bearer(user)))[1]["status"]
    assert status_now == "failed"  # nothing was redriven


async def test_retry_and_redrive_over_grpc(stub) -> None:
    job = await enqueue(stub, "grpc-user", "pdf", max_retries=0)
    with pytest.raises(grpc.aio.AioRpcError) as pending:
        await stub.Retry(pb.RetryRequest(job_id=job.id))
    assert pending.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await fail_attempt(stub, "pdf", "boom", retryable=False)
    with pytest.raises(grpc.aio.AioRpcError) as other_user:
        await stub.Retry(pb.RetryRequest(job_id=job.id, user_id="someone-else"))
    assert other_user.value.code() == grpc.StatusCode.NOT_FOUND
    retried = await stub.Retry(pb.RetryRequest(job_id=job.id, user_id="grpc-user", reason="operator"))
    assert retried.status == pb.JOB_STATUS_PENDING and retried.retry_count == 1 and retried.max_retries == 1
    got = await stub.GetJob(pb.GetJobRequest(job_id=job.id, include_attempts=True))
    assert [(a.attempt, a.status, a.error.code) for a in got.attempts] == [(1, pb.JOB_STATUS_FAILED, "boom")]
    assert not (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).attempts  # only when asked for
    events = await collect_events(stub, pb.WatchRequest(job_id=job.id, history_only=True))
    assert events[-1].retried and events[-1].message == "operator" and events[-1].attempt == 2

    await fail_attempt(stub, "pdf", "boom-again", retryable=False)
    other = await enqueue(stub, "grpc-user", "spreadsheet", max_retries=0)
    await fail_attempt(stub, "spreadsheet", "boom", retryable=False)
    answer = await stub.Redrive(pb.RedriveRequest(job_type="pdf"))
    assert list(answer.job_ids) == [job.id] and not answer.more
    answer = await stub.Redrive(pb.RedriveRequest(limit=1))
    assert list(answer.job_ids) == [other.id] and answer.more

    far = Timestamp(seconds=300_000_000_000)  # beyond year 9999
    for request, field in ((pb.RedriveRequest(limit=1001), "limit"), (pb.RedriveRequest(job_type="A B"), "job_type"),
                           (pb.RedriveRequest(failed_after=far), "failed_after"),
                           (pb.RetryRequest(job_id="nope"), "job_id")):
        method = stub.Redrive if isinstance(request, pb.RedriveRequest) else stub.Retry
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await method(request)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(bad.value.trailing_metadata() or ())["docjobs-field"] == field


def docjobs(url: str, bearer_token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "docjobs.cli", "--url", url, "--token", bearer_token, *args],
                          capture_output=True, text=True, timeout=60)


async def test_the_retry_command(http, gateway, stub) -> None:
    user = new_user()
    job = await fail_now(http, gateway, stub, user, "pdf")
    other = await fail_now(http, gateway, stub, user, "spreadsheet")
    done = await asyncio.to_thread(docjobs, gateway.base, token(user), "retry", job["jobId"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "pending"
    again = await asyncio.to_thread(docjobs, gateway.base, token(user), "retry", job["jobId"])
    assert again.returncode == 1 and again.stderr.startswith("docjobs: 409: ")
    refused = await asyncio.to_thread(docjobs, gateway.base, token(user), "retry", "--redrive")
    assert refused.returncode == 1 and refused.stderr.startswith("docjobs: 403: ")
    service_token = service()["Authorization"].split(" ", 1)[1]
    bad = await asyncio.to_thread(docjobs, gateway.base, service_token, "retry", "--redrive",
                                  "--failed-after", "last week")
    assert bad.returncode == 1 and bad.stderr.startswith("docjobs: 422 (failedAfter): ")
    redriven = await asyncio.to_thread(docjobs, gateway.base, service_token, "retry", "--redrive",
                                       "--document-type", "spreadsheet", "--failed-before", "2999-01-01T00:00:00Z")
    assert redriven.returncode == 0, redriven.stderr
    assert json.loads(redriven.stdout) == {"count": 1, "jobIds": [other["jobId"]], "more": False}
    usage = await asyncio.to_thread(docjobs, gateway.base, service_token, "retry", job["jobId"], "--redrive")
    assert usage.returncode == 2 and "one of them" in usage.stderr



async def test_the_local_demo_may_redrive(http, jobstore, stub) -> None:
    """With DOCJOBS_AUTH=none every caller is the one local user, whose jobs are all there are: its
    operator redrives without a service token."""
    gateway = await start_gateway(jobstore.address, auth="none", jwt_secret="")
    try:
        job = await enqueue(stub, "local", "pdf", max_retries=0)
        await fail_attempt(stub, "pdf", "boom", retryable=False)
        status, answer = await call(http, "POST", gateway.base + "/api/jobs/redrive", {}, json={})
        assert status == 200 and answer["jobIds"] == [job.id]
    finally:
        await gateway.stop()


async def test_a_retried_job_ends_again_with_a_webhook_delivery_per_end(stub) -> None:
    job = await enqueue(stub, "hook-user", "pdf", max_retries=0, webhook_url="https://example.com/hook")
    await fail_attempt(stub, "pdf", "boom", retryable=False)
    before = await stub.GetStats(pb.GetStatsRequest())
    await stub.Retry(pb.RetryRequest(job_id=job.id))
    await complete_next(stub, "pdf")
    webhook = await stub.GetJobWebhook(pb.GetJobWebhookRequest(job_id=job.id))
    assert [d.event_type for d in webhook.deliveries] == ["job.failed", "job.completed"]
    # In the last minute's rates a retry is a retry, not a new job.
    after = await stub.GetStats(pb.GetStatsRequest())
    assert after.enqueued_last_minute == before.enqueued_last_minute == 1
    assert after.retried_last_minute == before.retried_last_minute + 1


async def test_a_redrive_reads_the_failed_jobs_only(database_url) -> None:
    """Among 50,000 finished jobs, 50 failed: the redrive walks the index of failed jobs, never the rows
    of the completed ones (through the index of every finished job it read each one to find them)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("""
            INSERT INTO document_jobs (id, user_id, job_type, status, payload, completed_at)
            SELECT gen_random_uuid(), 'u' || (i % 100), 'pdf',
                   CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'completed' END, '{}', now() - i * interval '1 s'
              FROM generate_series(1, 50000) i""")
        await conn.execute("ANALYZE document_jobs")
        for args in ((None, None, None), ("pdf", None, None), (None, datetime.now(UTC) - timedelta(hours=1), None)):
            plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + Q.redrive, *args, 1000, "redriven", None)
            assert "document_jobs_failed" in plan, plan
    finally:
        await conn.close()
