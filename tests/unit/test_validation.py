"""The jobstore's request validation (jobstore/validation.py), without a server: each problem is an
InvalidArgument naming the field, and good requests become the domain's arguments."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from docjobs.v1 import jobstore_pb2 as pb
from jobstore import validation
from jobstore.errors import InvalidArgument
from jobstore.settings import Settings

SETTINGS = Settings(database_url="postgresql://unused", grpc_token="t" * 32)
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
JOB_ID, TOKEN = str(uuid.uuid4()), str(uuid.uuid4())


def enqueue_request(**fields: Any) -> pb.EnqueueRequest:
    base: dict[str, Any] = {"job_type": "pdf", "user_id": "u", "payload_json": json.dumps({"spec": {"blocks": []}})}
    return pb.EnqueueRequest(**{**base, **fields})


def field_of(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidArgument) as err:
        call(*args)
    return err.value.field


def test_a_good_enqueue_becomes_a_new_job_with_times_from_now() -> None:
    job = validation.enqueue(enqueue_request(title="Q3", session_id="s", priority=5, max_retries=0, delay_ms=1500,
                                             ttl_ms=60_000, idempotency_key="k"), SETTINGS, NOW)
    assert (job.job_type, job.title, job.user_id, job.session_id, job.priority, job.max_retries) == (
        "pdf", "Q3", "u", "s", 5, 0)
    assert job.run_at == NOW + timedelta(milliseconds=1500)
    assert job.expires_at == NOW + timedelta(minutes=1)
    assert job.idempotency_key == "k"
    plain = validation.enqueue(enqueue_request(), SETTINGS, NOW)
    assert (plain.max_retries, plain.run_at, plain.expires_at, plain.idempotency_key) == (None, None, None, None)


def at(when: datetime) -> dict[str, Any]:
    ts = Timestamp()
    ts.FromDatetime(when)
    return {"run_at": ts}


@pytest.mark.parametrize(("fields", "field"), [
    ({"job_type": ""}, "job_type"),
    ({"job_type": "PDF"}, "job_type"),
    ({"job_type": "x" * 65}, "job_type"),
    ({"payload_json": ""}, "payload_json"),
    ({"payload_json": "[1]"}, "payload_json"),
    ({"payload_json": "{"}, "payload_json"),
    ({"payload_json": json.dumps({"x": "y" * validation.MAX_PAYLOAD_BYTES})}, "payload_json"),
    ({"priority": 1001}, "priority"),
    ({"priority": -1001}, "priority"),
    ({"max_retries": 101}, "max_retries"),
    ({"delay_ms": -1}, "delay_ms"),
    ({"delay_ms": 366 * 24 * 3600 * 1000}, "delay_ms"),
    ({"delay_ms": 5, **at(NOW)}, "delay_ms"),
    ({**at(NOW + timedelta(days=400))}, "run_at"),
    ({"ttl_ms": -1}, "ttl_ms"),
    ({"delay_ms": 10_000, "ttl_ms": 5_000}, "expires_at"),
    ({"user_id": " "}, "user_id"),
    ({"user_id": "a" * 201}, "user_id"),
    ({"title": "t" * 501}, "title"),
    ({"session_id": "line\x07bell"}, "session_id"),
    ({"message_id": "\x1b[31m"}, "message_id"),
])
def test_a_bad_enqueue_names_its_field(fields: dict[str, Any], field: str) -> None:
    assert field_of(validation.enqueue, enqueue_request(**fields), SETTINGS, NOW) == field


def test_expires_at_must_be_in_the_future_of_now() -> None:
    request = enqueue_request()
    request.expires_at.FromDatetime(NOW - timedelta(seconds=1))
    assert field_of(validation.enqueue, request, SETTINGS, NOW) == "expires_at"
    request.expires_at.FromDatetime(NOW + timedelta(seconds=1))
    assert validation.enqueue(request, SETTINGS, NOW).expires_at == NOW + timedelta(seconds=1)


def test_page_tokens_round_trip_and_anything_else_is_refused() -> None:
    created, job_id = NOW, uuid.uuid4()
    assert validation.decode_page_token(validation.encode_page_token(created, job_id)) == (created, job_id)
    assert validation.decode_page_token("") is None
    for token in ("nonsense", "W10", "WzEsMl0", "!!!"):
        assert field_of(validation.decode_page_token, token) == "page_token"


def test_list_jobs() -> None:
    request = pb.ListJobsRequest(user_id="u", statuses=[pb.JOB_STATUS_PENDING, pb.JOB_STATUS_FAILED])
    assert validation.list_jobs(request) == ("u", None, ["pending", "failed"], None, 50)
    assert field_of(validation.list_jobs, pb.ListJobsRequest()) == "user_id"
    assert field_of(validation.list_jobs, pb.ListJobsRequest(user_id="u", page_size=501)) == "page_size"
    no_status = pb.ListJobsRequest(user_id="u", statuses=[99])  # type: ignore[list-item]  # no JobStatus: refused
    assert field_of(validation.list_jobs, no_status) == "statuses"


def test_claim() -> None:
    request = pb.ClaimRequest(worker_id="w", job_types=["pdf", "document", "pdf"], wait_ms=2500)
    assert validation.claim(request, SETTINGS) == ("w", ["document", "pdf"], 1, 2.5, SETTINGS.default_lease_ms)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"worker_id": ""}, "worker_id"), ({"job_types": []}, "job_types"), ({"job_types": ["Bad Type"]}, "job_types"),
        ({"max_jobs": 101}, "max_jobs"), ({"wait_ms": validation.MAX_WAIT_MS + 1}, "wait_ms"),
        ({"lease_ms": 999}, "lease_ms")]
    for fields, field in cases:
        values: dict[str, Any] = {"worker_id": "w", "job_types": ["pdf"], **fields}
        request = pb.ClaimRequest(**values)
        assert field_of(validation.claim, request, SETTINGS) == field


def test_heartbeat_and_the_lease_fields() -> None:
    request = pb.HeartbeatRequest(job_id=JOB_ID, lease_token=TOKEN, progress=40, message="half", lease_ms=5000)
    assert validation.heartbeat(request, SETTINGS) == (uuid.UUID(JOB_ID), uuid.UUID(TOKEN), 40, "half", 5000)
    assert validation.heartbeat(pb.HeartbeatRequest(job_id=JOB_ID, lease_token=TOKEN), SETTINGS)[2:4] == (None, None)
    for request, field in [(pb.HeartbeatRequest(job_id="nope", lease_token=TOKEN), "job_id"),
                           (pb.HeartbeatRequest(job_id=JOB_ID), "lease_token"),
                           (pb.HeartbeatRequest(job_id=JOB_ID, lease_token=TOKEN, progress=101), "progress")]:
        assert field_of(validation.heartbeat, request, SETTINGS) == field


def test_complete_many_names_the_item_and_its_field() -> None:
    good = pb.CompleteRequest(job_id=JOB_ID, lease_token=TOKEN)
    assert validation.complete_many(pb.CompleteManyRequest(jobs=[good]))[0][2] == "{}"
    bad = pb.CompleteRequest(job_id=JOB_ID, lease_token=TOKEN, result_json="[]")
    assert field_of(validation.complete_many, pb.CompleteManyRequest(jobs=[good, bad])) == "jobs[1].result_json"
    assert field_of(validation.complete_many, pb.CompleteManyRequest()) == "jobs"


def test_fail_and_release_worker() -> None:
    request = pb.FailRequest(job_id=JOB_ID, lease_token=TOKEN, error_code="boom", retryable=True)
    assert validation.fail(request)[2:] == ("boom", "", True)
    assert field_of(validation.fail, pb.FailRequest(job_id=JOB_ID, lease_token=TOKEN)) == "error_code"
    keep = [str(uuid.uuid4()), "not-a-uuid"]
    assert field_of(validation.release_worker, pb.ReleaseWorkerRequest(worker_id="w", keep_job_ids=keep)) == (
        "keep_job_ids[1]")


@pytest.mark.parametrize(("filename", "ok"), [("report.xlsx", True), ("../etc/passwd", False), ("a\\b", False),
                                              ("..", False), ("", False)])
def test_an_artifact_is_a_file_name_without_a_path(filename: str, ok: bool) -> None:
    request = pb.CompleteWithArtifactRequest(job_id=JOB_ID, lease_token=TOKEN, filename=filename,
                                             content_type="application/pdf", content=b"%PDF")
    if ok:
        header, content, result = validation.complete_with_artifact(request)
        assert (header.filename, content, result) == (filename, b"%PDF", "{}")
    else:
        assert field_of(validation.complete_with_artifact, request) == "filename"


def test_watch_requests() -> None:
    job = uuid.UUID(JOB_ID)
    assert validation.watch(pb.WatchRequest(job_id=JOB_ID, after_event_id=7)) == (job, None, None, 7)
    assert validation.watch(pb.WatchRequest(session_id="s")) == (None, None, "s", 0)
    assert validation.watch(pb.WatchRequest(all_jobs=True)) == (None, None, None, 0)
    for request, field in [(pb.WatchRequest(), "job_id"), (pb.WatchRequest(job_id=JOB_ID, after_event_id=-1),
                                                            "after_event_id"),
                           (pb.WatchRequest(all_jobs=True, job_id=JOB_ID), "all_jobs"),
                           (pb.WatchRequest(user_id="u", history_only=True), "history_only")]:
        assert field_of(validation.watch, request) == field
