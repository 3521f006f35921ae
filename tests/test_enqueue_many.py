"""EnqueueMany: up to 1,000 jobs in one call and one statement, each stored as Enqueue stores one, every
job checked before any is stored, idempotency keys honoured."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb

from .gateway_client import bearer
from .helpers import claim, collect_events, query_value
from .test_gateway_service import service_token


def job(user: str = "bulk", **fields: object) -> pb.EnqueueRequest:
    defaults: dict[str, object] = {"job_type": "pdf", "user_id": user, "payload_json": json.dumps({"spec": {}})}
    return pb.EnqueueRequest(**{**defaults, **fields})  # type: ignore[arg-type]


async def test_a_thousand_jobs_in_one_call_are_stored_in_order_each_with_its_event(stub, database_url) -> None:
    requests = [job(title=f"report {i}", session_id=f"s{i % 3}", priority=i % 5) for i in range(1000)]
    reply = await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=requests))
    assert [r.job.title for r in reply.jobs] == [f"report {i}" for i in range(1000)]
    assert all(r.created and r.job.status == pb.JOB_STATUS_PENDING for r in reply.jobs)
    assert [r.job.priority for r in reply.jobs] == [i % 5 for i in range(1000)]
    assert len({r.job.id for r in reply.jobs}) == 1000
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = 'bulk'") == 1000
    # Each has its pending event, as a job from Enqueue has, and is claimable.
    first = reply.jobs[0].job
    [pending] = await collect_events(stub, pb.WatchRequest(job_id=first.id), count=1)
    assert pending.status == pb.JOB_STATUS_PENDING and pending.id == first.last_event_id
    claimed = await claim(stub, types=("pdf",), max_jobs=10)
    assert len(claimed) == 10


async def test_idempotency_keys_answer_with_the_job_that_holds_them(stub, database_url) -> None:
    held = (await stub.Enqueue(job(user="idem", idempotency_key="k-1"))).job
    reply = await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[
        job(user="idem", idempotency_key="k-1"),   # held by a stored job
        job(user="idem", idempotency_key="k-2"),   # new
        job(user="idem", idempotency_key="k-2"),   # held by the job just before it in this call
        job(user="other", idempotency_key="k-1"),  # another user's key space
        job(user="idem"),                          # no key: always new
    ]))
    answers = [(r.job.id, r.created) for r in reply.jobs]
    assert answers[0] == (held.id, False)
    assert answers[1][1] and answers[2] == (answers[1][0], False)
    assert answers[3][1] and answers[3][0] != held.id
    assert answers[4][1]
    again = await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[job(user="idem", idempotency_key="k-2")]))
    assert (again.jobs[0].job.id, again.jobs[0].created) == (answers[1][0], False)
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = 'idem'") == 3


async def test_concurrent_calls_with_the_same_keys_make_each_job_once(stub, database_url) -> None:
    requests = pb.EnqueueManyRequest(jobs=[job(user="race", idempotency_key=f"k{i}") for i in range(50)])
    replies = await asyncio.gather(*(stub.EnqueueMany(requests) for _ in range(4)))
    ids = [[r.job.id for r in reply.jobs] for reply in replies]
    assert all(each == ids[0] for each in ids)
    assert sum(r.created for reply in replies for r in reply.jobs) == 50
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = 'race'") == 50


@pytest.mark.parametrize(("bad", "field"), [
    ({"payload_json": "[1]"}, "jobs[2].payload_json"),
    ({"job_type": "PDF!"}, "jobs[2].job_type"),
    ({"user_id": ""}, "jobs[2].user_id"),
    ({"priority": 5000}, "jobs[2].priority"),
    ({"payload_json": '{"text": "\\u0000"}'}, "jobs[2].payload_json"),
])
async def test_one_bad_job_refuses_the_call_naming_it_and_nothing_is_stored(stub, database_url, bad, field) -> None:
    user = f"refused-{field}-{sorted(bad)[0]}"
    requests = [job(user=user) for _ in range(5)]
    requests[2] = job(user=user, **bad) if "user_id" not in bad else job(**bad)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=requests))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field + ":"), refused.value.details()
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = $1", user) == 0


async def test_the_basic_view_answers_what_links_and_follows_each_job_and_nothing_it_was_sent(stub) -> None:
    requests = [job(user="basic", title=f"t{i}", session_id="chat-1", priority=3, idempotency_key=f"b{i}")
                for i in range(3)]
    full = await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=requests[:1]))
    basic = await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=requests, view=pb.JOB_VIEW_BASIC))
    assert [r.created for r in basic.jobs] == [False, True, True]  # the first's key is held: its job answers
    assert basic.jobs[0].job.id == full.jobs[0].job.id
    assert basic.jobs[0].job.created_at == full.jobs[0].job.created_at  # to the microsecond, as FULL shows it
    for answer in basic.jobs:
        shown = answer.job
        assert (shown.user_id, shown.session_id, shown.job_type, shown.status) == (
            "basic", "chat-1", "pdf", pb.JOB_STATUS_PENDING)
        assert shown.id and shown.last_event_id > 0 and shown.HasField("created_at")
        # What the caller sent is not sent back (a reply of 1,000 jobs, a third of the work of FULL's).
        assert (shown.title, shown.priority, shown.idempotency_key, shown.HasField("run_at")) == ("", 0, "", False)
    assert full.jobs[0].job.title == "t0" and full.jobs[0].job.priority == 3


async def test_an_unknown_view_is_refused_and_nothing_is_stored(stub, database_url) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[job(user="viewless")], view=7))  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("view:"), refused.value.details()
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = 'viewless'") == 0


@pytest.mark.parametrize(("count", "message"), [(0, "jobs: required"), (1001, "jobs: at most 1000 jobs")])
async def test_an_empty_or_oversized_call_is_refused(stub, database_url, count: int, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[job(user="too-many")] * count))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(message), refused.value.details()
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = 'too-many'") == 0


# --- POST /api/jobs/batch: the HTTP form, for service callers -------------------------------------------

def http_job(i: int, **fields: Any) -> dict[str, Any]:
    return {"documentType": "pdf", "title": f"batch {i}", "spec": {"blocks": [{"type": "pageBreak"}]},
            "userId": "batch-user", "sessionId": "chat-9", **fields}


async def test_a_service_posts_a_batch_and_each_job_is_its_users_with_its_links(http, gateway) -> None:
    jobs = [http_job(i, idempotencyKey=f"msg-{i}") for i in range(300)]
    async with http.post(gateway.base + "/api/jobs/batch", json={"jobs": jobs}, headers=service_token()) as r:
        assert r.status == 202, await r.text()
        answer = (await r.json())["jobs"]
    assert [a["created"] for a in answer] == [True] * 300 and len({a["jobId"] for a in answer}) == 300
    # The user reads its job through the link minted for it; another user cannot.
    async with http.get(gateway.base + answer[7]["statusUrl"], headers=bearer("batch-user")) as r:
        job = await r.json()
        assert r.status == 200 and job["title"] == "batch 7" and job["sessionId"] == "chat-9"
    async with http.get(gateway.base + f"/api/jobs/{answer[7]['jobId']}", headers=bearer("someone-else")) as r:
        assert r.status == 404
    # The same batch again makes nothing new: every idempotency key holds its job.
    async with http.post(gateway.base + "/api/jobs/batch", json={"jobs": jobs}, headers=service_token()) as r:
        again = (await r.json())["jobs"]
    assert [(a["jobId"], a["created"]) for a in again] == [(a["jobId"], False) for a in answer]


@pytest.mark.parametrize(("item", "status", "field"), [
    ({"documentType": "slides"}, 422, "jobs[2].documentType"),
    ({"spec": {"blocks": "none"}}, 422, "jobs[2].spec.blocks"),
    ({"userId": None}, 422, "jobs[2].userId"),
    ({"idempotencyKey": "é"}, 400, "jobs[2].idempotencyKey"),
    ({"maxRetries": 10_000}, 422, "jobs[2].maxRetries"),
])
async def test_one_bad_job_in_a_batch_is_refused_naming_it_and_nothing_is_stored(
        http, gateway, database_url, item: dict[str, Any], status: int, field: str) -> None:
    user = f"batch-{field}-{status}"
    jobs = [http_job(i, userId=user) for i in range(5)]
    jobs[2] = {**jobs[2], **item}
    if jobs[2].get("userId") is None:
        del jobs[2]["userId"]
    async with http.post(gateway.base + "/api/jobs/batch", json={"jobs": jobs}, headers=service_token()) as r:
        body = await r.json()
    assert r.status == status, body
    assert body["error"]["field"].startswith(field), body
    assert body["error"]["message"].startswith(field), body
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = $1", user) == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"jobs": []}, "jobs"), ({"jobs": "x"}, "jobs"), ({"items": []}, "items"),
    ({"jobs": [http_job(i) for i in range(1001)]}, "jobs"), ({"jobs": [5]}, "jobs[0]"),
])
async def test_a_batch_that_is_no_list_of_jobs_is_a_422_naming_the_field(http, gateway, body, field) -> None:
    async with http.post(gateway.base + "/api/jobs/batch", json=body, headers=service_token()) as r:
        answer = await r.json()
    assert r.status == 422 and answer["error"]["field"] == field, answer


async def test_a_user_token_cannot_post_a_batch(http, gateway, database_url) -> None:
    body = {"jobs": [http_job(0, userId="batch-intruder")]}
    async with http.post(gateway.base + "/api/jobs/batch", json=body, headers=bearer("batch-intruder")) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    assert await query_value(database_url, "SELECT count(*) FROM document_jobs WHERE user_id = 'batch-intruder'") == 0
