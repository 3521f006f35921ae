"""Request bodies in, JSON documents out: validation with errors that name the field, and the shapes
of jobs, results and events as the browser sees them (camelCase)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from docjobs import jobrequest, jsonvalues, webhooks
from docjobs.v1 import jobstore_pb2 as pb

from .auth import Caller
from .errors import ApiError
from .settings import Settings

STATUS_NAMES = {pb.JOB_STATUS_PENDING: "pending", pb.JOB_STATUS_PROCESSING: "processing",
                pb.JOB_STATUS_COMPLETED: "completed", pb.JOB_STATUS_FAILED: "failed",
                pb.JOB_STATUS_CANCELLED: "cancelled"}
STATUS_BY_NAME = {v: k for k, v in STATUS_NAMES.items()}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", field)


# RFC 3339's date-time: a full date, T, a full time with an offset (Z or +hh:mm). datetime.fromisoformat
# alone would also take ISO 8601's other forms (a date alone, no offset, 20261129T1200).
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


_is_int = jobrequest.is_int


def job_user(body: dict[str, Any], caller: Caller) -> str:
    """Whose job it is: a service names the user (`userId`, a string or an integer: 123 is the user
    "123"); a user's own `userId`, if given, must be its own id."""
    value = body.get("userId")
    if value is None and not caller.service:
        return caller.user_id
    user_id = jobrequest.named_user(value)
    if not caller.service and user_id != caller.user_id:
        raise ApiError(403, "forbidden", "userId differs from the authenticated user", "userId")
    return user_id


def run_at(value: Any, now: datetime, max_ahead_s: int) -> datetime:
    """An RFC 3339 instant with its offset, at most max_ahead_s ahead of now (one in the past is due at once)."""
    when = instant(value, "runAt")
    if when > now + timedelta(seconds=max_ahead_s):
        raise _invalid("runAt", f"at most {max_ahead_s} s ahead")
    return when


def instant(value: Any, field: str) -> datetime:
    """An RFC 3339 date-time with its offset (Z or +hh:mm); 422 naming the field otherwise."""
    match = RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(field, "must be an RFC 3339 date-time with an offset, e.g. 2026-12-01T09:30:00Z")
    fraction, offset = match.group(1), match.group(2)
    text = value[:19].replace("t", "T")
    if fraction:
        text += "." + fraction[:6].ljust(6, "0")  # microseconds: what datetime holds
    text += "+00:00" if offset in "Zz" else offset
    try:
        when = datetime.fromisoformat(text)
        when.astimezone(UTC)  # an offset that takes it past year 9999 or before year 1
    except (ValueError, OverflowError):
        raise _invalid(field, "not a valid date and time") from None
    return when


def json_object_body(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object, checked for what no JSON column holds."""
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
    return body


def parse_job_request(raw: bytes, caller: Caller, settings: Settings, now: datetime) -> dict[str, Any]:
    """A POST /api/jobs body to the fields of an Enqueue call (user_id included)."""
    return job_fields(json_object_body(raw), caller, settings, now)


MAX_BATCH = 1000  # the jobstore's EnqueueMany bound


def idempotency_key(value: Any, field: str) -> str:
    """An idempotency key: printable ASCII, at most 200 characters (a header's bytes arrive as text)."""
    if not isinstance(value, str):
        raise ApiError(400, "invalid", f"{field} must be a string", field)
    if len(value) > 200:
        raise ApiError(400, "invalid", f"{field} is longer than 200 characters", field)
    if not all(" " <= c <= "~" for c in value):
        raise ApiError(400, "invalid", f"{field} must be printable ASCII", field)
    return value


def parse_batch_request(raw: bytes, caller: Caller, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """A POST /api/jobs/batch body, {"jobs": [<a POST /api/jobs body, with "idempotencyKey"?>, ...]}, to the
    fields of each Enqueue call. Every job is checked before any is sent: a problem names its job,
    `jobs[3].documentType`."""
    body = json_object_body(raw)
    for name in body:
        if name != "jobs":
            raise _invalid(str(name)[:100], "unknown field; a batch is {\"jobs\": [...]}")
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_BATCH:
        raise _invalid("jobs", f"must be a list of 1 to {MAX_BATCH} jobs")
    batch = []
    for index, item in enumerate(jobs):
        where = f"jobs[{index}]"
        try:
            if not isinstance(item, dict):
                raise ApiError(422, "invalid", "must be a JSON object (a POST /api/jobs body)", "")
            fields = job_fields({k: v for k, v in item.items() if k != "idempotencyKey"}, caller, settings, now)
            if item.get("idempotencyKey") is not None:
                fields["idempotency_key"] = idempotency_key(item["idempotencyKey"], "idempotencyKey")
        except ApiError as exc:
            field = f"{where}.{exc.field}" if exc.field else where
            message = exc.message if not exc.field or not exc.message.startswith(exc.field) \
                else exc.message[len(exc.field):].lstrip(": ")
            raise ApiError(exc.status, exc.code, f"{field}: {message}", field) from None
        batch.append(fields)
    return batch


def job_fields(body: dict[str, Any], caller: Caller, settings: Settings, now: datetime) -> dict[str, Any]:
    """One job's fields of a request body (already parsed and checked for what JSON cannot carry on)."""
    try:
        return _job_fields(body, caller, settings, now)
    except jobrequest.RequestProblem as exc:
        raise _invalid(exc.field, exc.problem) from None


def _job_fields(body: dict[str, Any], caller: Caller, settings: Settings, now: datetime) -> dict[str, Any]:
    job_type, payload = jobrequest.document(body)
    if body.get("renditions") is not None:
        payload["renditions"] = renditions(body["renditions"])
    user_id = job_user(body, caller)
    priority = body.get("priority", 0)
    if not _is_int(priority) or not -1000 <= priority <= 1000:
        raise _invalid("priority", "must be an integer between -1000 and 1000")
    knobs: dict[str, Any] = {}
    expires = body.get("expiresInSeconds")
    if expires is not None:
        if not _is_int(expires) or not 1 <= expires <= settings.max_expires_in_s:
            raise _invalid("expiresInSeconds", f"must be an integer from 1 to {settings.max_expires_in_s}")
        knobs["ttl_ms"] = expires * 1000
    retries = body.get("maxRetries")
    if retries is not None:
        if not _is_int(retries) or not 0 <= retries <= settings.max_retries_cap:
            raise _invalid("maxRetries", f"must be an integer from 0 to {settings.max_retries_cap}")
        knobs["max_retries"] = retries
    if body.get("runAt") is not None:
        when = run_at(body["runAt"], now, settings.max_run_at_ahead_s)
        if expires is not None and when >= now + timedelta(seconds=expires):
            raise _invalid("expiresInSeconds", "the job would expire before its runAt")
        knobs["run_at"] = Timestamp()
        knobs["run_at"].FromDatetime(when)
    if body.get("webhookUrl") is not None:
        knobs["webhook_url"] = webhook_url(body["webhookUrl"], caller, settings)
    return {
        "user_id": user_id,
        "job_type": job_type,
        "title": jobrequest.optional_text(body, "title", 500),
        "session_id": jobrequest.optional_text(body, "sessionId", 200),
        "message_id": jobrequest.optional_text(body, "messageId", 200),
        # Only a service orders the queue: a user who could set it would jump everyone else's jobs.
        "priority": priority if caller.service else 0,
        **knobs,
        # As written, not \u-escaped: a character of Chinese is 3 bytes in UTF-8 and 6 escaped, and the
        # payload's limit (4 MiB) is counted in bytes.
        "payload_json": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
    }


RENDITIONS = ("pdf", "thumbnail")


def renditions(value: Any) -> list[str]:
    """`renditions`: a list of "pdf" and "thumbnail", each at most once (the renderer reads it again)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v in RENDITIONS for v in value):
        raise _invalid("renditions", f"must be a list of {' and '.join(repr(k) for k in RENDITIONS)}")
    if len(set(value)) != len(value):
        raise _invalid("renditions", "names a rendition twice")
    return [k for k in RENDITIONS if k in value]


def webhook_url(value: Any, caller: Caller, settings: Settings) -> str:
    """`webhookUrl`: a service's to name (a user who could would make the server send requests where it
    likes), or the local user's in the no-auth demo. Its addresses are checked by the caller (they need DNS)."""
    if not caller.service and settings.auth != "none":
        raise ApiError(403, "forbidden", "webhookUrl: only a service caller may name a webhook", "webhookUrl")
    if not settings.webhook_secret:
        raise _invalid("webhookUrl", "webhooks are off on this server (DOCJOBS_WEBHOOK_SECRET is not set)")
    if not isinstance(value, str):
        raise _invalid("webhookUrl", "must be a string")
    try:
        webhooks.parse_url(value)
    except webhooks.WebhookUrlError as exc:
        raise _invalid("webhookUrl", str(exc)) from None
    return value


def job_links(job_id: str, token: str) -> dict[str, str]:
    """The URLs of a job, with a URL token minted for the job's user."""
    return {"eventsUrl": f"/api/jobs/{job_id}/events?token={token}", "statusUrl": f"/api/jobs/{job_id}/status",
            "downloadUrl": artifact_url(job_id, token)}


def webhook_document(webhook: pb.JobWebhook) -> dict[str, Any] | None:
    """A job's `webhook`: its URL and each delivery with its attempts; None for a job without one."""
    if not webhook.url:
        return None

    def instant(ts: Timestamp) -> str | None:
        return ts.ToJsonString() if ts.seconds or ts.nanos else None

    return {"url": webhook.url, "deliveries": [{
        "id": d.id, "type": d.event_type, "eventId": d.event_id, "state": d.state,
        "createdAt": instant(d.created_at), "nextAttemptAt": instant(d.next_attempt_at),
        "finishedAt": instant(d.finished_at),
        "attempts": [{"attempt": a.attempt, "at": instant(a.at), "statusCode": a.status_code or None,
                      "error": a.error or None, "nextAttemptAt": instant(a.next_attempt_at)} for a in d.attempts],
    } for d in webhook.deliveries]}


def artifact_url(job_id: str, token: str) -> str:
    """A job's download link, carrying its URL token (a plain link cannot send a header)."""
    return f"/api/jobs/{job_id}/artifact?token={token}"


def job_document(job: pb.Job, links: dict[str, str], webhook: pb.JobWebhook | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobId": job.id, "userId": job.user_id, "status": STATUS_NAMES.get(job.status, "unknown"),
        "documentType": job.job_type,
        "title": job.title, "sessionId": job.session_id, "messageId": job.message_id or None,
        "priority": job.priority, "progress": job.progress, "progressMessage": job.progress_message,
        "attempts": job.retry_count + (1 if job.started_at.seconds else 0), "maxRetries": job.max_retries,
        "createdAt": job.created_at.ToJsonString(),
        "startedAt": job.started_at.ToJsonString() if job.started_at.seconds else None,
        "completedAt": job.completed_at.ToJsonString() if job.completed_at.seconds else None,
        "runAt": job.run_at.ToJsonString() if job.HasField("run_at") else None,
        "expiresAt": job.expires_at.ToJsonString() if job.HasField("expires_at") else None,
        "lastEventId": job.last_event_id, **links,
    }
    if job.result_json:
        out["result"] = result_document(json.loads(job.result_json), links.get("downloadUrl"))
    if job.HasField("error") and job.error.code:
        out["error"] = {"code": job.error.code, "message": job.error.message}
    if job.attempts:  # GET /api/jobs/{jobId} only: every attempt's end, readable after the job failed
        out["attemptHistory"] = [attempt_document(a) for a in job.attempts]
    if webhook is not None:
        out["webhook"] = webhook_document(webhook)
    return out


def attempt_document(attempt: pb.Attempt) -> dict[str, Any]:
    """One attempt: `outcome` is how it ended (completed, failed or cancelled; failed too when a retry
    followed), `running` while it runs."""
    ended = attempt.HasField("ended_at")
    outcome = STATUS_NAMES.get(attempt.status, "unknown")
    return {"attempt": attempt.attempt,
            "startedAt": attempt.started_at.ToJsonString() if attempt.HasField("started_at") else None,
            "endedAt": attempt.ended_at.ToJsonString() if ended else None,
            "worker": attempt.worker_id or None,
            "outcome": ("failed" if outcome == "pending" else outcome) if ended else "running",
            "error": {"code": attempt.error.code, "message": attempt.error.message}
            if attempt.HasField("error") and attempt.error.code else None}


def result_document(result: dict[str, Any], download_url: str | None) -> dict[str, Any]:
    out = {"artifactId": result.get("artifact_id"), "downloadUrl": download_url,
           "filename": result.get("filename"), "contentType": result.get("content_type"),
           "size": result.get("size_bytes"), "sha256": result.get("sha256"), "preview": result.get("preview"),
           "warnings": result.get("warnings") or []}
    if isinstance(result.get("renditions"), dict):
        out["renditions"] = renditions_document(result["renditions"], download_url)
    return out


def rendition_url(download_url: str | None, kind: str) -> str | None:
    """A rendition's link: the download link's, with its URL token, for the rendition's route."""
    if download_url is None:
        return None
    return download_url.replace("/artifact?", f"/renditions/{kind}?", 1)


def renditions_document(made: dict[str, Any], download_url: str | None) -> dict[str, Any]:
    """`result.renditions`: per kind its signed url and sizes, or its error."""
    out: dict[str, Any] = {}
    for kind in RENDITIONS:
        item = made.get(kind)
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("error"), dict):
            out[kind] = {"error": {"code": item["error"].get("code"), "message": item["error"].get("message")}}
            continue
        out[kind] = {"url": rendition_url(download_url, kind), "sizeBytes": item.get("size_bytes"),
                     "contentType": item.get("content_type")}
        if item.get("pages"):
            out[kind]["pages"] = item["pages"]
        if kind == "thumbnail":
            out[kind].update(width=item.get("width"), height=item.get("height"))
    return out


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
    if event.retried:  # a finished job run again: its new attempt starts
        data["retried"] = True
    data["attempt"] = event.attempt
    return "status", data


TERMINAL_EVENTS = frozenset({"job-complete", "job-failed"})
