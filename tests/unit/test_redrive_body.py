"""The body of POST /api/jobs/redrive (gateway/redrive.py) and a job's attempts as the browser sees them
(gateway/payloads.py), without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from docjobs.v1 import jobstore_pb2 as pb
from gateway import payloads, redrive
from gateway.errors import ApiError


def parse(body: Any) -> pb.RedriveRequest:
    return redrive.parse(json.dumps(body).encode())


def test_filters_become_the_request_with_instants_in_utc() -> None:
    request = parse({"documentType": "pdf", "failedAfter": "2026-11-30T10:00:00+02:00",
                     "failedBefore": "2026-11-30T09:00:00.123456789Z", "limit": 5})
    assert request.job_type == "pdf" and request.limit == 5
    assert request.failed_after.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert request.failed_before.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC)


def test_no_body_and_an_empty_one_take_every_failed_job_up_to_the_bound() -> None:
    for request in (redrive.parse(b""), redrive.parse(b"  "), parse({})):
        assert not request.job_type and not request.HasField("failed_after")
        assert not request.HasField("failed_before") and request.limit == redrive.MAX_REDRIVE


@pytest.mark.parametrize(("body", "field"), [
    ({"failedAfter": "2026-11-30"}, "failedAfter"),
    ({"failedAfter": "2026-11-30T10:00:00"}, "failedAfter"),  # no offset
    ({"failedBefore": "9999-12-31T23:59:59-23:59"}, "failedBefore"),  # past year 9999 in UTC
    ({"failedBefore": None, "failedAfter": ["x"]}, "failedAfter"),
    ({"failedAfter": "2026-11-30T10:00:00Z", "failedBefore": "2026-11-30T10:00:00Z"}, "failedBefore"),
    ({"documentType": 1}, "documentType"),
    ({"limit": "10"}, "limit"),
    ({"limit": 1.0}, "limit"),
    ({"userId": "bob"}, "userId"),
])
def test_a_bad_field_is_a_422_naming_it(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse(body)
    assert (refused.value.status, refused.value.field) == (422, field)


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b"{", b"\xff"])
def test_a_body_that_is_no_json_object_is_a_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        redrive.parse(raw)
    assert (refused.value.status, refused.value.field) == (400, "body")


def test_attempts_as_the_browser_sees_them() -> None:
    started, ended = Timestamp(seconds=1_764_500_000), Timestamp(seconds=1_764_500_002)
    job = pb.Job(id="j", status=pb.JOB_STATUS_FAILED, attempts=[
        pb.Attempt(attempt=1, started_at=started, ended_at=ended, worker_id="w1", status=pb.JOB_STATUS_PENDING,
                   error=pb.JobError(code="boom", message="it broke")),
        pb.Attempt(attempt=2, ended_at=ended, status=pb.JOB_STATUS_CANCELLED,
                   error=pb.JobError(code="cancelled", message="by the user")),
        pb.Attempt(attempt=3, started_at=started, worker_id="w2", status=pb.JOB_STATUS_PROCESSING)])
    assert payloads.job_document(job, {})["attemptHistory"] == [
        {"attempt": 1, "startedAt": "2025-11-30T10:53:20Z", "endedAt": "2025-11-30T10:53:22Z", "worker": "w1",
         "outcome": "failed", "error": {"code": "boom", "message": "it broke"}},
        {"attempt": 2, "startedAt": None, "endedAt": "2025-11-30T10:53:22Z", "worker": None,
         "outcome": "cancelled", "error": {"code": "cancelled", "message": "by the user"}},
        {"attempt": 3, "startedAt": "2025-11-30T10:53:20Z", "endedAt": None, "worker": "w2",
         "outcome": "running", "error": None}]
    assert "attemptHistory" not in payloads.job_document(pb.Job(id="j"), {})
