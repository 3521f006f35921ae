"""The gateway's request bodies and JSON shapes (gateway/payloads.py), without a server: a bad body is a
4xx naming the field, a good one becomes the fields of an Enqueue call, and jobstore messages become the
browser's documents and SSE events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from docjobs.v1 import jobstore_pb2 as pb
from gateway import payloads
from gateway.auth import Caller
from gateway.errors import ApiError
from gateway.settings import Settings

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SERVICE = Caller("", service=True)

SPEC = {"sheets": [{"name": "S", "columns": [{"header": "a"}], "rows": [[1]]}]}


def body(**fields: Any) -> bytes:
    return json.dumps({"documentType": "spreadsheet", "title": "T", "spec": SPEC, "sessionId": "s", **fields}).encode()


def parse(raw: bytes, caller: Caller | str = "alice") -> dict[str, Any]:
    return payloads.parse_job_request(raw, Caller(caller) if isinstance(caller, str) else caller, Settings(), NOW)


def refused(raw: bytes, caller: Caller | str = "alice") -> ApiError:
    with pytest.raises(ApiError) as err:
        parse(raw, caller)
    return err.value


def test_a_good_request_becomes_an_enqueue() -> None:
    parsed = parse(body(messageId="m", priority=3, userId=123), SERVICE)
    assert parsed == {"user_id": "123", "job_type": "spreadsheet", "title": "T", "session_id": "s",
                      "message_id": "m", "priority": 3,
                      "payload_json": json.dumps({"spec": SPEC}, ensure_ascii=False, separators=(",", ":"))}
    code = parse(json.dumps({"documentType": "pdf", "code": "print(1)", "priority": 3}).encode())
    assert json.loads(code["payload_json"]) == {"code": "print(1)"}
    # A user's priority is ignored: the queue's order is not the user's to set.
    assert (code["user_id"], code["title"], code["session_id"], code["priority"]) == ("alice", "", "", 0)


def test_the_knobs_become_the_enqueues() -> None:
    parsed = parse(body(expiresInSeconds=7200, maxRetries=0, runAt="2026-11-29T14:30:00.5+01:00"))
    assert (parsed["ttl_ms"], parsed["max_retries"]) == (7_200_000, 0)
    assert parsed["run_at"].ToJsonString() == "2026-11-29T13:30:00.500Z"
    assert "ttl_ms" not in parse(body()) and "run_at" not in parse(body()) and "max_retries" not in parse(body())


@pytest.mark.parametrize(("raw", "status", "field"), [
    (b"{", 400, "body"),
    (b"\xff\xfe", 400, "body"),
    (b"[]", 400, "body"),
    (body(documentType="spreadsheets"), 422, "documentType"),
    (body(documentType=None), 422, "documentType"),
    (body(code="print(1)"), 422, "spec"),
    (json.dumps({"documentType": "pdf"}).encode(), 422, "spec"),
    (json.dumps({"documentType": "pdf", "code": "  "}).encode(), 422, "code"),
    (json.dumps({"documentType": "pdf", "code": 7}).encode(), 422, "code"),
    (body(spec={"sheets": []}), 422, "spec.sheets"),
    (body(spec={"sheets": [{"name": "a/b", "columns": [{"header": "x"}]}]}), 422, "spec.sheets[0].name"),
    (body(title=5), 422, "title"),
    (body(title="t" * 501), 422, "title"),
    (body(sessionId="s" * 201), 422, "sessionId"),
    (body(priority=1001), 422, "priority"),
    (body(priority=True), 422, "priority"),
    (body(priority="1"), 422, "priority"),
    (body(userId="mallory"), 403, "userId"),
    (body(userId=124), 403, "userId"),
    (body(expiresInSeconds=0), 422, "expiresInSeconds"),
    (body(expiresInSeconds=7 * 86400 + 1), 422, "expiresInSeconds"),
    (body(maxRetries=11), 422, "maxRetries"),
    (body(runAt="2026-11-29 12:00:00Z"), 422, "runAt"),
    (body(runAt="2026-12-29T12:00:01Z"), 422, "runAt"),  # 30 days and a second ahead
    (body(runAt="2026-11-29T13:00:00Z", expiresInSeconds=3600), 422, "expiresInSeconds"),
])
def test_a_bad_request_is_a_4xx_naming_the_field(raw: bytes, status: int, field: str) -> None:
    error = refused(raw)
    assert (error.status, error.field) == (status, field), error.message


@pytest.mark.parametrize(("user", "expected"), [("123", "123"), (123, "123"), (0, "0"), ("é 7", "é 7")])
def test_a_service_names_the_user_as_a_string_or_a_number(user: Any, expected: str) -> None:
    assert parse(body(userId=user), SERVICE)["user_id"] == expected


@pytest.mark.parametrize("user", [None, "", 1.0, True, [1], {"id": 1}, -1, 2**63, "a\nb"])
def test_a_service_without_a_user_is_a_422_naming_it(user: Any) -> None:
    raw = body() if user is None else body(userId=user)
    error = refused(raw, SERVICE)
    assert (error.status, error.field) == (422, "userId"), error.message


def test_a_job_as_the_browser_sees_it() -> None:
    job = pb.Job(id="j", status=pb.JOB_STATUS_COMPLETED, job_type="pdf", title="T", session_id="s", retry_count=1,
                 max_retries=3, last_event_id=9, result_json=json.dumps({"artifact_id": "a", "filename": "T.pdf",
                                                                         "size_bytes": 10, "sha256": "ab"}))
    job.created_at.FromSeconds(1_700_000_000)
    job.started_at.FromSeconds(1_700_000_001)
    links = {"downloadUrl": payloads.artifact_url("j", "tok")}
    document = payloads.job_document(job, links)
    assert (document["jobId"], document["status"], document["attempts"], document["lastEventId"]) == (
        "j", "completed", 2, 9)
    assert document["messageId"] is None and document["completedAt"] is None
    assert document["result"]["downloadUrl"] == "/api/jobs/j/artifact?token=tok"
    assert (document["result"]["size"], document["result"]["filename"]) == (10, "T.pdf")
    assert "error" not in document


@pytest.mark.parametrize(("event", "name", "expected"), [
    (pb.JobEvent(job_id="j", kind=pb.EVENT_KIND_PROGRESS, status=pb.JOB_STATUS_PROCESSING, progress=40,
                 message="rows"), "progress", {"progress": 40, "message": "rows", "status": "processing"}),
    (pb.JobEvent(job_id="j", kind=pb.EVENT_KIND_COMPLETED, status=pb.JOB_STATUS_COMPLETED,
                 result_json='{"artifact_id": "a"}'), "job-complete", {"progress": 100}),
    (pb.JobEvent(job_id="j", kind=pb.EVENT_KIND_FAILED, status=pb.JOB_STATUS_FAILED,
                 error=pb.JobError(code="boom", message="no")), "job-failed",
     {"error": {"code": "boom", "message": "no"}}),
    (pb.JobEvent(job_id="j", kind=pb.EVENT_KIND_CANCELLED, status=pb.JOB_STATUS_CANCELLED), "job-failed",
     {"error": {"code": "cancelled", "message": ""}}),
    (pb.JobEvent(job_id="j", kind=pb.EVENT_KIND_STATUS, status=pb.JOB_STATUS_PENDING, attempt=2,
                 error=pb.JobError(code="boom", message="retry")), "status",
     {"status": "pending", "attempt": 2, "lastError": {"code": "boom", "message": "retry"}}),
])
def test_jobstore_events_become_sse_events(event: pb.JobEvent, name: str, expected: dict[str, Any]) -> None:
    got_name, data = payloads.sse_event(event, "/download")
    assert got_name == name
    assert data["jobId"] == "j"
    assert {k: data[k] for k in expected} == expected
    if name == "job-complete":
        assert data["result"]["downloadUrl"] == "/download" and data["result"]["artifactId"] == "a"
    assert (name in payloads.TERMINAL_EVENTS) == (name in ("job-complete", "job-failed"))
