"""Turning gRPC requests into domain arguments. Every problem is an InvalidArgument naming the field."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from docjobs import jsonvalues
from docjobs.v1 import jobstore_pb2 as pb

from . import deliveries
from .convert import PB_TO_STATUS
from .errors import InvalidArgument
from .settings import Settings
from .store import ArtifactHeader, NewJob

JOB_TYPE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # below space, but tab, newline, return
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_ID_CHARS = 200
MAX_TITLE_CHARS = 500
MAX_WAIT_MS = 60_000
MAX_DELAY = timedelta(days=365)
MAX_DELAY_MS = MAX_DELAY.total_seconds() * 1000


def _text(value: str, field: str, *, required: bool = False, max_chars: int = MAX_ID_CHARS) -> str:
    if not value and not required:
        return value
    if required and not value.strip():
        raise InvalidArgument(field, "required")
    if len(value) > max_chars:
        raise InvalidArgument(field, f"longer than {max_chars} characters")
    if CONTROL_CHARACTER.search(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def json_object(text: str, field: str, max_bytes: int) -> str:
    """Check that text is one JSON object of at most max_bytes that a jsonb column can hold; returns it
    unchanged. Decided on the parsed value (docjobs.jsonvalues), never on the text."""
    # A character is at most 4 bytes in UTF-8: most texts are measured without encoding them.
    if len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes:
        raise InvalidArgument(field, f"larger than {max_bytes} bytes")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(field, f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    except ValueError as exc:  # a number of more than 4,300 digits, which Python will not read
        raise InvalidArgument(field, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidArgument(field, f"nested more than {jsonvalues.MAX_DEPTH} levels deep") from None
    if not isinstance(value, dict):
        raise InvalidArgument(field, "must be a JSON object")
    found = jsonvalues.problem(value)
    if found is not None:
        where, what = found
        raise InvalidArgument(field, f"{where or 'the top'}: {what}")
    return text


def uuid_field(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "not a UUID") from None


def _optional_user(value: str) -> str | None:
    return _text(value, "user_id") or None


# The times a request may name. Postgres stores more, but the driver reads the first instant of year 1
# back as -infinity, a value no answer can show: a job due then was stored, and then every answer naming
# it failed (its Enqueue, its user's list, the worker session it was pushed on).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _timestamp(ts: Timestamp, field: str) -> datetime:
    try:
        value = ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "not a valid timestamp") from None
    if not EARLIEST <= value < LATEST:
        raise InvalidArgument(field, "must be between 1970 and 9000")
    return value


def enqueue(req: pb.EnqueueRequest, settings: Settings, now: datetime) -> NewJob:
    # Each field read once: EnqueueMany checks 1,000 requests a call, and a read is a call into protobuf.
    job_type, payload, priority = req.job_type, req.payload_json, req.priority
    if not job_type:
        raise InvalidArgument("job_type", "required")
    if not JOB_TYPE.match(job_type):
        raise InvalidArgument("job_type", "must be lowercase letters, digits, '-' or '_' (at most 64)")
    if not payload:
        raise InvalidArgument("payload_json", "required")
    json_object(payload, "payload_json", MAX_PAYLOAD_BYTES)
    if not -1000 <= priority <= 1000:
        raise InvalidArgument("priority", "must be between -1000 and 1000")
    max_retries = None
    if req.HasField("max_retries"):
        if not 0 <= req.max_retries <= 100:
            raise InvalidArgument("max_retries", "must be between 0 and 100")
        max_retries = req.max_retries
    run_at = None
    delay_ms, has_run_at = req.delay_ms, req.HasField("run_at")
    if delay_ms and has_run_at:
        raise InvalidArgument("delay_ms", "give delay_ms or run_at, not both")
    if delay_ms < 0 or delay_ms > MAX_DELAY_MS:
        raise InvalidArgument("delay_ms", "must be between 0 and one year")
    if delay_ms:
        run_at = now + timedelta(milliseconds=delay_ms)
    elif has_run_at:
        run_at = _timestamp(req.run_at, "run_at")
        if run_at > now + MAX_DELAY:
            raise InvalidArgument("run_at", "more than a year ahead")
    expires_at = None
    ttl_ms, has_expires_at = req.ttl_ms, req.HasField("expires_at")
    if ttl_ms and has_expires_at:
        raise InvalidArgument("ttl_ms", "give ttl_ms or expires_at, not both")
    if ttl_ms < 0 or ttl_ms > 10 * MAX_DELAY_MS:
        raise InvalidArgument("ttl_ms", "must be positive and at most ten years")
    if ttl_ms:
        expires_at = now + timedelta(milliseconds=ttl_ms)
    elif has_expires_at:
        expires_at = _timestamp(req.expires_at, "expires_at")
        if expires_at <= now:
            raise InvalidArgument("expires_at", "must be in the future")
    if expires_at is not None and run_at is not None and expires_at <= run_at:
        raise InvalidArgument("expires_at", "must be after the job's start time")
    return NewJob(
        job_type=job_type,
        payload_json=payload,
        title=_text(req.title, "title", max_chars=MAX_TITLE_CHARS),
        user_id=_text(req.user_id, "user_id", required=True),
        session_id=_text(req.session_id, "session_id"),
        message_id=_text(req.message_id, "message_id"),
        priority=priority,
        max_retries=max_retries,
        run_at=run_at,
        expires_at=expires_at,
        idempotency_key=_text(req.idempotency_key, "idempotency_key") or None,
        webhook_url=deliveries.webhook_url(req.webhook_url),
    )


MAX_ENQUEUE_MANY = 1000


def enqueue_many(req: pb.EnqueueManyRequest, settings: Settings, now: datetime) -> tuple[list[NewJob], bool]:
    """The jobs, every one checked before any is stored (a problem names the job by its index), and
    whether the reply is JOB_VIEW_BASIC."""
    if req.view not in (pb.JOB_VIEW_UNSPECIFIED, pb.JOB_VIEW_FULL, pb.JOB_VIEW_BASIC):
        raise InvalidArgument("view", f"unknown job view {req.view}")
    if not req.jobs:
        raise InvalidArgument("jobs", "required: at least one job")
    if len(req.jobs) > MAX_ENQUEUE_MANY:
        raise InvalidArgument("jobs", f"at most {MAX_ENQUEUE_MANY} jobs in one call, got {len(req.jobs)}")
    jobs = []
    for index, job in enumerate(req.jobs):
        try:
            jobs.append(enqueue(job, settings, now))
        except InvalidArgument as exc:
            raise InvalidArgument(f"jobs[{index}].{exc.field}", exc.problem) from None
    return jobs, req.view == pb.JOB_VIEW_BASIC


def get_job(req: pb.GetJobRequest) -> tuple[uuid.UUID, str | None]:
    return uuid_field(req.job_id, "job_id"), _optional_user(req.user_id)


def cancel(req: pb.CancelRequest) -> tuple[uuid.UUID, str | None, str]:
    return (uuid_field(req.job_id, "job_id"), _optional_user(req.user_id),
            _text(req.reason, "reason", max_chars=MAX_TITLE_CHARS))


def retry(req: pb.RetryRequest) -> tuple[uuid.UUID, str | None, str]:
    return (uuid_field(req.job_id, "job_id"), _optional_user(req.user_id),
            _text(req.reason, "reason", max_chars=MAX_TITLE_CHARS))


MAX_REDRIVE = 1000


def redrive(req: pb.RedriveRequest) -> tuple[str | None, datetime | None, datetime | None, int, str]:
    if req.job_type and not JOB_TYPE.match(req.job_type):
        raise InvalidArgument("job_type", "must be lowercase letters, digits, '-' or '_' (at most 64)")
    after = _timestamp(req.failed_after, "failed_after") if req.HasField("failed_after") else None
    before = _timestamp(req.failed_before, "failed_before") if req.HasField("failed_before") else None
    if after is not None and before is not None and before <= after:
        raise InvalidArgument("failed_before", "must be after failed_after")
    limit = req.limit or MAX_REDRIVE
    if not 1 <= limit <= MAX_REDRIVE:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_REDRIVE}")
    return (req.job_type or None, after, before, limit, _text(req.reason, "reason", max_chars=MAX_TITLE_CHARS))


def list_jobs(req: pb.ListJobsRequest) -> tuple[str | None, str | None, list[str],
                                                tuple[datetime, uuid.UUID] | None, int]:
    user_id = _optional_user(req.user_id)
    session_id = _text(req.session_id, "session_id") or None
    if user_id is None and session_id is None:
        raise InvalidArgument("user_id", "give user_id and/or session_id")
    statuses = []
    for status in req.statuses:
        if status not in PB_TO_STATUS:
            raise InvalidArgument("statuses", f"unknown status {status}")
        statuses.append(PB_TO_STATUS[status])
    page_size = req.page_size or 50
    if not 1 <= page_size <= 500:
        raise InvalidArgument("page_size", "must be between 1 and 500")
    return user_id, session_id, statuses, decode_page_token(req.page_token), page_size


def encode_page_token(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(job_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_PAGE_TOKEN_CHARS = 256  # the tokens handed out are about 110
# The cursor's time within what Postgres takes (any zone): a token's values are checked here, not by the driver.
_TOKEN_TIMES = (datetime(2000, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC))


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    """The cursor of a page token handed out by encode_page_token; anything else is refused, whatever it
    decodes to (a token is the caller's to send back, so it is read as strictly as any other input)."""
    if not token:
        return None
    refused = InvalidArgument("page_token", "not a token from a previous response")
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise refused
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            raise refused
        created, job_id = datetime.fromisoformat(value[0]), uuid.UUID(value[1])
    except (ValueError, TypeError, RecursionError):
        raise refused from None
    if created.tzinfo is None or not _TOKEN_TIMES[0] <= created <= _TOKEN_TIMES[1]:
        raise refused
    return created, job_id


def lease_ms(value: int, settings: Settings, field: str = "lease_ms") -> int:
    if value == 0:
        return settings.default_lease_ms
    if not 1000 <= value <= 3_600_000:
        raise InvalidArgument(field, "must be between 1000 and 3600000")
    return value


def claim(req: pb.ClaimRequest, settings: Settings) -> tuple[str, list[str], int, float, int]:
    worker_id = _text(req.worker_id, "worker_id", required=True)
    if not req.job_types:
        raise InvalidArgument("job_types", "give at least one job type")
    for job_type in req.job_types:
        if not JOB_TYPE.match(job_type):
            raise InvalidArgument("job_types", f"invalid job type {job_type[:80]!r}")
    max_jobs = req.max_jobs or 1
    if not 1 <= max_jobs <= 100:
        raise InvalidArgument("max_jobs", "must be between 1 and 100")
    if not 0 <= req.wait_ms <= MAX_WAIT_MS:
        raise InvalidArgument("wait_ms", f"must be between 0 and {MAX_WAIT_MS}")
    return worker_id, sorted(set(req.job_types)), max_jobs, req.wait_ms / 1000, lease_ms(req.lease_ms, settings)


def lease(job_id: str, token: str) -> tuple[uuid.UUID, uuid.UUID]:
    return uuid_field(job_id, "job_id"), uuid_field(token, "lease_token")


def heartbeat(req: pb.HeartbeatRequest, settings: Settings) -> tuple[uuid.UUID, uuid.UUID, int | None,
                                                                     str | None, int]:
    job_id, token = lease(req.job_id, req.lease_token)
    progress = None
    if req.HasField("progress"):
        if not 0 <= req.progress <= 100:
            raise InvalidArgument("progress", "must be between 0 and 100")
        progress = req.progress
    message = _text(req.message, "message", max_chars=MAX_TITLE_CHARS) or None
    return job_id, token, progress, message, lease_ms(req.lease_ms, settings)


def complete(req: pb.CompleteRequest) -> tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None]:
    job_id, token = lease(req.job_id, req.lease_token)
    result = json_object(req.result_json or "{}", "result_json", MAX_RESULT_BYTES)
    artifact_id = uuid_field(req.artifact_id, "artifact_id") if req.artifact_id else None
    return job_id, token, result, artifact_id


MAX_COMPLETE_MANY = 500
MAX_KEPT_JOBS = 1000


def release_worker(req: pb.ReleaseWorkerRequest) -> tuple[str, list[uuid.UUID]]:
    worker_id = _text(req.worker_id, "worker_id", required=True)
    if len(req.keep_job_ids) > MAX_KEPT_JOBS:
        raise InvalidArgument("keep_job_ids", f"at most {MAX_KEPT_JOBS} ids")
    return worker_id, [uuid_field(job_id, f"keep_job_ids[{i}]") for i, job_id in enumerate(req.keep_job_ids)]


def release(req: pb.ReleaseRequest) -> tuple[uuid.UUID, uuid.UUID, str, str]:
    job_id, token = lease(req.job_id, req.lease_token)
    code = _text(req.code, "code", required=True)
    reason = _text(req.reason, "reason", max_chars=MAX_TITLE_CHARS)
    return job_id, token, code, reason or code


def complete_many(req: pb.CompleteManyRequest) -> list[tuple[uuid.UUID, uuid.UUID, str, uuid.UUID | None]]:
    if not req.jobs:
        raise InvalidArgument("jobs", "give at least one job")
    if len(req.jobs) > MAX_COMPLETE_MANY:
        raise InvalidArgument("jobs", f"at most {MAX_COMPLETE_MANY} jobs per call, got {len(req.jobs)}")
    items = []
    for i, item in enumerate(req.jobs):
        try:
            items.append(complete(item))
        except InvalidArgument as exc:
            raise InvalidArgument(f"jobs[{i}].{exc.field}", str(exc).split(": ", 1)[-1]) from None
    return items


def fail(req: pb.FailRequest) -> tuple[uuid.UUID, uuid.UUID, str, str, bool]:
    job_id, token = lease(req.job_id, req.lease_token)
    code = _text(req.error_code, "error_code", required=True)
    message = _text(req.error_message, "error_message", max_chars=10_000)
    return job_id, token, code, message, req.retryable


def artifact_header(req: pb.UploadArtifactRequest) -> ArtifactHeader:
    if req.WhichOneof("part") != "header":
        raise InvalidArgument("header", "the first message must be the artifact header")
    h = req.header
    return _artifact(h.job_id, h.lease_token, h.filename, h.content_type)


def _artifact(job_id_text: str, token_text: str, filename: str, content_type: str) -> ArtifactHeader:
    job_id, token = lease(job_id_text, token_text)
    filename = _text(filename, "filename", required=True)
    if "/" in filename or "\\" in filename or filename in {".", ".."}:
        raise InvalidArgument("filename", "must be a file name without a path")
    content_type = _text(content_type, "content_type", required=True)
    return ArtifactHeader(job_id=job_id, lease_token=token, filename=filename, content_type=content_type)


MAX_INLINE_ARTIFACT_BYTES = 4 * 1024 * 1024


def complete_with_artifact(req: pb.CompleteWithArtifactRequest) -> tuple[ArtifactHeader, bytes, str]:
    header = _artifact(req.job_id, req.lease_token, req.filename, req.content_type)
    if len(req.content) > MAX_INLINE_ARTIFACT_BYTES:
        raise InvalidArgument("content", f"larger than {MAX_INLINE_ARTIFACT_BYTES} bytes: upload it with "
                                         "UploadArtifact, then call Complete")
    result = json_object(req.result_json or "{}", "result_json", MAX_RESULT_BYTES)
    return header, req.content, result


def download(req: pb.DownloadArtifactRequest) -> tuple[uuid.UUID, str | None]:
    return uuid_field(req.artifact_id, "artifact_id"), _optional_user(req.user_id)


def watch(req: pb.WatchRequest) -> tuple[uuid.UUID | None, str | None, str | None, int]:
    if req.after_event_id < 0:
        raise InvalidArgument("after_event_id", "must not be negative")
    if req.all_jobs and (req.job_id or req.user_id or req.session_id or req.after_event_id or req.history_only):
        raise InvalidArgument("all_jobs", "excludes job_id, user_id, session_id, after_event_id and history_only")
    if req.history_only and not req.job_id:
        raise InvalidArgument("history_only", "goes with job_id")
    if req.all_jobs:
        return None, None, None, 0
    user_id = _optional_user(req.user_id)
    session_id = _text(req.session_id, "session_id") or None
    if req.job_id:
        return uuid_field(req.job_id, "job_id"), user_id, None, req.after_event_id
    if user_id is None and session_id is None:
        raise InvalidArgument("job_id", "give job_id, or user_id and/or session_id")
    return None, user_id, session_id, req.after_event_id
