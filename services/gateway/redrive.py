"""The body of POST /api/jobs/redrive (failed jobs run again in bulk, for a service): parsed into the
jobstore's RedriveRequest, every problem a 4xx naming its field. A field the endpoint does not know is
refused rather than ignored: a misspelt filter ("failedAftr") would otherwise redrive every failed job."""

from __future__ import annotations

from typing import Any

from docjobs import jobtypes
from docjobs.v1 import jobstore_pb2 as pb

from .errors import ApiError
from .payloads import instant, json_object_body

MAX_REDRIVE = 1000  # jobs per call (the jobstore's bound too): a caller goes on while `more` is true
FIELDS = ("documentType", "failedAfter", "failedBefore", "limit")


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", field)


def parse(raw: bytes) -> pb.RedriveRequest:
    """A redrive body (empty: every failed job, up to MAX_REDRIVE) to a RedriveRequest."""
    body = json_object_body(raw) if raw.strip() else {}
    for name in body:
        if name not in FIELDS:
            raise _invalid(str(name)[:100], f"unknown field; a redrive takes {', '.join(FIELDS)}")
    request = pb.RedriveRequest(reason="redriven by a service")
    job_type = body.get("documentType")
    if job_type is not None:
        if not isinstance(job_type, str) or job_type not in jobtypes.JOB_TYPES:
            raise _invalid("documentType", f"must be one of {', '.join(jobtypes.JOB_TYPES)}")
        request.job_type = job_type
    bounds: dict[str, Any] = {}
    for field, target in (("failedAfter", request.failed_after), ("failedBefore", request.failed_before)):
        if body.get(field) is not None:
            bounds[field] = instant(body[field], field)
            target.FromDatetime(bounds[field])
    if len(bounds) == 2 and bounds["failedBefore"] <= bounds["failedAfter"]:
        raise _invalid("failedBefore", "must be later than failedAfter")
    limit = body.get("limit", MAX_REDRIVE)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_REDRIVE:
        raise _invalid("limit", f"must be an integer from 1 to {MAX_REDRIVE}")
    request.limit = limit
    return request
