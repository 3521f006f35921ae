"""A pg-boss job's payload is refused as the HTTP API refuses the same body from a service caller: the
same error code, message and field (jobstore/pgboss.py parse_payload against gateway/payloads.py); and
the output a pg-boss job ends with, its download link signed as the gateway signs its own."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from docjobs.urltokens import URL_TOKEN_AUDIENCE
from docjobs.v1 import jobstore_pb2 as pb
from gateway.auth import Caller
from gateway.errors import ApiError
from gateway.payloads import parse_job_request
from gateway.settings import Settings
from jobstore.clock import Clock
from jobstore.pgboss import Invalid, PgBossBridge, parse_payload
from jobstore.settings import Settings as JobStoreSettings

SPEC = {"sheets": [{"name": "S", "columns": [{"header": "A"}], "rows": [["a"]]}]}
BAD_BODIES: list[Any] = [
    [1, 2],
    "a string",
    {"documentType": "video", "spec": SPEC, "userId": "u"},
    {"documentType": "spreadsheet", "userId": "u"},
    {"documentType": "spreadsheet", "spec": SPEC, "code": "x", "userId": "u"},
    {"documentType": "spreadsheet", "code": "   ", "userId": "u"},
    {"documentType": "spreadsheet", "spec": {"sheets": [{"name": 7}]}, "userId": "u"},
    {"documentType": "spreadsheet", "spec": {"sheets": "none"}, "userId": "u"},
    {"documentType": "spreadsheet", "spec": SPEC},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": -1},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": ""},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": ["u"]},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": "u", "priority": 5000},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": "u", "priority": "high"},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": "u", "title": 3},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": "u", "title": "t" * 501},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": "u", "sessionId": "a\x01b"},
    {"documentType": "spreadsheet", "spec": SPEC, "userId": "u", "messageId": "m" * 201},
    {"documentType": "spreadsheet", "spec": {"sheets": [{"name": "S", "rows": [["\x00"]]}]}, "userId": "u"},
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_a_bad_payload_gets_the_http_apis_error(body: Any) -> None:
    with pytest.raises(ApiError) as http:
        parse_job_request(json.dumps(body).encode(), Caller("", service=True), Settings(), datetime.now(UTC))
    refused = parse_payload(body, fallback_priority=0)
    assert isinstance(refused, Invalid)
    assert (refused.code, refused.message, refused.field) == (http.value.code, http.value.message, http.value.field)
    assert refused.output() == {"error": {"code": http.value.code, "message": http.value.message,
                                          "field": http.value.field}}


def test_a_good_payload_is_the_same_job_and_its_priority_wins_over_pgbosss() -> None:
    body = {"documentType": "spreadsheet", "spec": SPEC, "userId": 123, "title": "T", "sessionId": "s",
            "messageId": "m", "priority": 9}
    request = parse_payload(body, fallback_priority=-4)
    assert isinstance(request, pb.EnqueueRequest)
    fields = parse_job_request(json.dumps(body).encode(), Caller("", service=True), Settings(), datetime.now(UTC))
    assert (request.user_id, request.job_type, request.title, request.session_id, request.message_id,
            request.priority, json.loads(request.payload_json)) == (
        fields["user_id"], fields["job_type"], fields["title"], fields["session_id"], fields["message_id"],
        fields["priority"], json.loads(fields["payload_json"]))
    del body["priority"]
    assert parse_payload(body, fallback_priority=-4).priority == -4  # type: ignore[union-attr]
    assert parse_payload(body, fallback_priority=50_000).priority == 1000  # type: ignore[union-attr]


def _bridge(**settings: Any) -> PgBossBridge:
    values = {"database_url": "postgresql://unused", "grpc_token": "t" * 32, "pgboss_queue": "docjobs",
              "url_token_secret": "s" * 32, "url_token_ttl_s": 900, **settings}
    return PgBossBridge(None, JobStoreSettings(**values), on_commit=lambda _types: None,  # type: ignore[arg-type]
                        clock=Clock())


def test_the_output_of_a_completed_job_links_its_download_as_the_gateway_signs_links() -> None:
    job_id = str(uuid.uuid4())
    row = {"id": job_id, "user_id": "user-7", "status": "completed", "artifact_id": None, "error": None,
           "result": json.dumps({"artifact_id": "a-1", "size_bytes": 1234, "sha256": "ab" * 32})}
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    output = _bridge(public_url="https://docs.example.com").output(row, now=now)
    url = output.pop("downloadUrl")
    assert output == {"jobId": job_id, "status": "completed", "artifactId": "a-1", "sizeBytes": 1234,
                      "sha256": "ab" * 32}
    prefix = f"https://docs.example.com/api/jobs/{job_id}/artifact?token="
    assert url.startswith(prefix)
    claims = jwt.decode(url[len(prefix):], "s" * 32, algorithms=["HS256"], audience=URL_TOKEN_AUDIENCE,
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"sub": "user-7", "job": job_id, "aud": URL_TOKEN_AUDIENCE,
                      "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 900}
    assert _bridge().output(row)["downloadUrl"].startswith(f"/api/jobs/{job_id}/artifact?token=")  # relative


def test_the_output_of_a_failed_or_cancelled_job_carries_its_error() -> None:
    bridge = _bridge()
    failed = {"id": "j", "status": "failed", "error": json.dumps({"code": "render_failed", "message": "boom"})}
    assert bridge.output(failed) == {"jobId": "j", "status": "failed",
                                     "error": {"code": "render_failed", "message": "boom"}}
    cancelled = {"id": "j", "status": "cancelled", "error": json.dumps({"code": "cancelled", "message": "no"})}
    assert bridge.output(cancelled)["error"] == {"code": "cancelled", "message": "no"}
