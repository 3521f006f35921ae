"""Request bodies in, JSON documents out: validation with errors that name the field, and the shapes
of jobs, results and events as the browser sees them (camelCase)."""

from __future__ import annotations

import json
from typing import Any

from docjobs import jobtypes, jsonvalues, specs
from docjobs.v1 import jobstore_pb2 as pb

from .errors import ApiError

STATUS_NAMES = {pb.JOB_STATUS_PENDING: "pending", pb.JOB_STATUS_PROCESSING: "processing",
                pb.JOB_STATUS_COMPLETED: "completed", pb.JOB_STATUS_FAILED: "failed",
                pb.JOB_STATUS_CANCELLED: "cancelled"}
STATUS_BY_NAME = {v: k for k, v in STATUS_NAMES.items()}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", field)


def _optional_str(body: dict[str, Any], field: str, max_len: int) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    if len(value) > max_len:
        raise _invalid(field, f"longer than {max_len} characters")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise _invalid(field, "must not contain control characters")
    return value


def parse_job_request(raw: bytes, user_id: str) -> dict[str, Any]:
    """A POST /api/jobs body to the fields of an Enqueue call."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed", f"the body is not valid JSON: {exc}", "body") from None
    except RecursionError:
        raise ApiError(400, "malformed", f"the body is nested more than {jsonvalues.MAX_DEPTH} levels deep",
                       "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed", "the body must be a JSON object", "body")
    # Before anything reads it: a lone surrogate cannot be sent on to the jobstore (protobuf strings are
    # UTF-8), and NUL, NaN or Infinity would be refused by the database in its own words.
    found = jsonvalues.problem(body)
    if found is not None:
        where, what = found
        raise _invalid(where or "body", what)
    job_type = body.get("documentType")
    if not isinstance(job_type, str) or job_type not in jobtypes.JOB_TYPES:
        raise _invalid("documentType", f"must be one of {', '.join(jobtypes.JOB_TYPES)}")
    has_spec, has_code = "spec" in body, "code" in body
    if has_spec == has_code:
        raise _invalid("spec", "give spec (a document description) or code, exactly one of them")
    if has_code and (not isinstance(body["code"], str) or not body["code"].strip()):
        raise _invalid("code", "must be a non-empty string")
    if has_spec:
        try:
            specs.validate(job_type, body["spec"])
        except specs.SpecError as exc:
            raise _invalid(exc.path, exc.message) from None
    body_user = body.get("userId")
    if body_user is not None and str(body_user) != user_id:
        raise ApiError(403, "forbidden", "userId differs from the authenticated user", "userId")
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not -1000 <= priority <= 1000:
        raise _invalid("priority", "must be an integer between -1000 and 1000")
    return {
        "job_type": job_type,
        "title": _optional_str(body, "title", 500),
        "session_id": _optional_str(body, "sessionId", 200),
        "message_id": _optional_str(body, "messageId", 200),
        "priority": priority,
        "payload_json": json.dumps({"spec": body["spec"]} if has_spec else {"code": body["code"]}),
    }


def artifact_url(job_id: str, token: str) -> str:
    """A job's download link, carrying its URL token (a plain link cannot send a header)."""
    return f"/api/jobs/{job_id}/artifact?token={token}"


def job_document(job: pb.Job, links: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobId": job.id, "status": STATUS_NAMES.get(job.status, "unknown"), "documentType": job.job_type,
        "title": job.title, "sessionId": job.session_id, "messageId": job.message_id or None,
        "priority": job.priority, "progress": job.progress, "progressMessage": job.progress_message,
        "attempts": job.retry_count + (1 if job.started_at.seconds else 0), "maxRetries": job.max_retries,
        "createdAt": job.created_at.ToJsonString(),
        "startedAt": job.started_at.ToJsonString() if job.started_at.seconds else None,
        "completedAt": job.completed_at.ToJsonString() if job.completed_at.seconds else None,
        "lastEventId": job.last_event_id, **links,
    }
    if job.result_json:
        out["result"] = result_document(json.loads(job.result_json), links.get("downloadUrl"))
    if job.HasField("error") and job.error.code:
        out["error"] = {"code": job.error.code, "message": job.error.message}
    return out


def result_document(result: dict[str, Any], download_url: str | None) -> dict[str, Any]:
    return {"artifactId": result.get("artifact_id"), "downloadUrl": download_url,
            "filename": result.get("filename"), "contentType": result.get("content_type"),
            "size": result.get("size_bytes"), "sha256": result.get("sha256"), "preview": result.get("preview")}


def sse_event(event: pb.JobEvent, download_url: str) -> tuple[str, dict[str, Any]]:
    """(SSE event name, data) for a jobstore event."""
    data: dict[str, Any] = {"jobId": event.job_id, "status": STATUS_NAMES.get(event.status, "unknown")}
    if event.kind == pb.EVENT_KIND_PROGRESS:
        data.update(progress=event.progress, message=event.message)
        return "progress", data
    if event.kind == pb.EVENT_KIND_COMPLETED:
        data.update(progress=100, result=result_document(json.loads(event.result_json or "{}"), download_url))
        return "job-complete", data
    if event.kind in (pb.EVENT_KIND_FAILED, pb.EVENT_KIND_CANCELLED):
        data["error"] = {"code": event.error.code or "cancelled", "message": event.error.message}
        return "job-failed", data
    if event.message:
        data["message"] = event.message
    if event.error.code:  # a failed attempt that will be retried: still a status, not a failure
        data["lastError"] = {"code": event.error.code, "message": event.error.message}
    if event.retry_at.seconds:
        data["retryAt"] = event.retry_at.ToJsonString()
    data["attempt"] = event.attempt
    return "status", data


TERMINAL_EVENTS = frozenset({"job-complete", "job-failed"})
