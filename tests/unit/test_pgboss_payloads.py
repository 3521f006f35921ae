"""A pg-boss job's payload is refused as the HTTP API refuses the same body from a service caller: the
same error code, message and field (jobstore/pgboss.py parse_payload against gateway/payloads.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from docjobs.v1 import jobstore_pb2 as pb
from gateway.auth import Caller
from gateway.errors import ApiError
from gateway.payloads import parse_job_request
from gateway.settings import Settings
from jobstore.pgboss import Invalid, parse_payload

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
