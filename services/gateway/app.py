"""The gateway's aiohttp application: routes, app keys, the jobstore channel, metrics, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict
from urllib.parse import quote

import aiohttp
import grpc
import uvloop
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from docjobs import jobtypes, jsonvalues, specs
from docjobs.channels import jobstore_channel
from docjobs.jobrequest import valid_user_id
from docjobs.settings import load_or_exit, setup_logging
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from . import client, guards, openapi, payloads, redrive, webhooks
from .auth import Auth, Caller
from .cors import Cors
from .errors import ApiError, error_response, errors_middleware, from_grpc
from .hub import EventHub
from .inflight import BoundedStub
from .logs import AccessLog, ServerLog
from .peruser import PerUserCount
from .session import open_session
from .settings import Settings
from .sse import Streams, last_event_id

log = logging.getLogger("gateway")


class Metrics(TypedDict):
    """The gateway's own metrics, in a registry of their own (GET /metrics)."""

    registry: CollectorRegistry
    jobs_created: Counter
    open_streams: Gauge
    calls_in_flight: Gauge
    calls_waiting: Gauge
    calls_queued: Counter


class ServerOptions(TypedDict):
    handler_cancellation: bool


SETTINGS = web.AppKey("settings", Settings)
AUTH = web.AppKey("auth", Auth)
STUB = web.AppKey("stub", BoundedStub)
CHANNEL = web.AppKey("channel", grpc.aio.Channel)
STREAMS = web.AppKey("streams", Streams)
METRICS = web.AppKey("metrics", Metrics)
HUB = web.AppKey("hub", EventHub)
# Large downloads (documents and renditions) being sent now, by user: at most DOCJOBS_DOWNLOADS_PER_USER each.
DOWNLOADS = web.AppKey("downloads", PerUserCount)
LARGE_DOWNLOAD_BYTES = 1024 * 1024  # larger downloads count against DOCJOBS_DOWNLOADS_PER_USER

GRPC_SERVICE_CONFIG = '{"loadBalancingConfig": [{"round_robin": {}}]}'
# A client that disconnects cancels its handler at once. An open event stream is released then (not at
# its next write, up to a heartbeat later: until then it counted against its user's open streams), and a
# request whose client left stops its work (a job it was enqueueing is either made or not: a retry with
# the same Idempotency-Key gets the same job).
SERVER_OPTIONS: ServerOptions = {"handler_cancellation": True}


def _job_id(request: web.Request) -> str:
    """The path's job id in the one form the jobstore writes (lower case, with dashes): a stream subscribed
    under another spelling (upper case, no dashes, urn:uuid:) got its job's history and then nothing, and
    never ended."""
    try:
        return str(uuid.UUID(request.match_info["job_id"]))
    except ValueError:  # a path that names no job, whatever it holds (it may not even be text to pass on)
        raise ApiError(404, "not_found", "no such job: a job id is a UUID", "jobId") from None


def _links(request: web.Request, job_id: str, user_id: str) -> dict[str, str]:
    """The URLs of a job, their tokens minted for the job's user (a backend may hand them to that user)."""
    return payloads.job_links(job_id, request.app[AUTH].job_url_token(user_id, job_id))


# The jobstore's names of Enqueue's fields, as the HTTP body calls them.
ENQUEUE_FIELDS = {"ttl_ms": "expiresInSeconds", "expires_at": "expiresInSeconds", "run_at": "runAt",
                  "max_retries": "maxRetries", "user_id": "userId", "session_id": "sessionId",
                  "message_id": "messageId", "job_type": "documentType", "payload_json": "body"}


async def _read_body(request: web.Request) -> bytes:
    """The request's body (at most client_max_size), within DOCJOBS_BODY_TIMEOUT_S: a client trickling its
    body must not hold a handler, and what it holds, for ever (408 naming the body)."""
    limit = request.app[SETTINGS].body_timeout_s
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "timeout", f"the request body did not arrive within {limit:g} s", "body") from None


async def create_job(request: web.Request) -> web.Response:
    caller = request.app[AUTH].caller(request)
    guards.require_json(request)  # before the body is read: a simple cross-origin POST is not JSON
    settings = request.app[SETTINGS]
    raw = await _read_body(request)
    fields = await asyncio.get_running_loop().run_in_executor(
        None, payloads.parse_job_request, raw, caller, settings, datetime.now(UTC))
    if "webhook_url" in fields:
        await webhooks.check_url(fields["webhook_url"], settings.webhook_allow)
    # Header values are bytes; aiohttp hands on those that are not UTF-8 as lone surrogates.
    idempotency_key = payloads.idempotency_key(request.headers.get("Idempotency-Key", ""), "Idempotency-Key")
    try:
        reply = await request.app[STUB].Enqueue(pb.EnqueueRequest(idempotency_key=idempotency_key, **fields))
    except grpc.aio.AioRpcError as exc:
        raise _renamed(exc, ENQUEUE_FIELDS, 422) from None
    request.app[METRICS]["jobs_created"].labels(fields["job_type"]).inc()
    job = reply.job
    links = _links(request, job.id, job.user_id)
    return web.json_response({"jobId": job.id, "status": payloads.STATUS_NAMES[job.status],
                              "created": reply.created, **links,
                              "sessionEventsUrl": _session_events_url(request, job.user_id, job.session_id)},
                             status=202)


async def create_jobs(request: web.Request) -> web.Response:
    """Up to 1,000 jobs in one call (EnqueueMany), a service's (or the no-auth demo's): all or none."""
    caller = request.app[AUTH].caller(request)
    if not caller.service and request.app[AUTH].mode != "none":
        raise ApiError(403, "forbidden", "a batch of jobs takes a service token (scope docjobs:service); a user "
                       "posts its jobs one at a time to /api/jobs")
    guards.require_json(request)
    settings = request.app[SETTINGS]
    raw = await _read_body(request)
    batch = await asyncio.get_running_loop().run_in_executor(
        None, payloads.parse_batch_request, raw, caller, settings, datetime.now(UTC))
    for url in {fields["webhook_url"] for fields in batch if "webhook_url" in fields}:
        index = next(i for i, fields in enumerate(batch) if fields.get("webhook_url") == url)
        try:
            await webhooks.check_url(url, settings.webhook_allow)
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"jobs[{index}].{exc.message}", f"jobs[{index}].{exc.field}") \
                from None
    try:
        reply = await request.app[STUB].EnqueueMany(pb.EnqueueManyRequest(  # BASIC: what the answer needs
            jobs=[pb.EnqueueRequest(**fields) for fields in batch], view=pb.JOB_VIEW_BASIC))
    except grpc.aio.AioRpcError as exc:
        raise _renamed_in_batch(exc) from None
    answers = []
    for answer in reply.jobs:
        job = answer.job
        request.app[METRICS]["jobs_created"].labels(job.job_type).inc(answer.created)
        answers.append({"jobId": job.id, "status": payloads.STATUS_NAMES[job.status], "created": answer.created,
                        **_links(request, job.id, job.user_id),
                        "sessionEventsUrl": _session_events_url(request, job.user_id, job.session_id)})
    return web.json_response({"jobs": answers}, status=202)


def _renamed_in_batch(exc: grpc.aio.AioRpcError) -> Exception:
    """EnqueueMany's INVALID_ARGUMENT about `jobs[3].payload_json`, named as the body calls it."""
    renamed = _renamed(exc, {}, 422)
    if isinstance(renamed, ApiError) and renamed.field:
        where, _, inner = renamed.field.partition(".")
        field = f"{where}.{ENQUEUE_FIELDS.get(inner, inner)}" if inner else where
        return ApiError(422, "invalid", renamed.message.replace(renamed.field, field, 1), field)
    return renamed


def _session_events_url(request: web.Request, user_id: str, session_id: str) -> str:
    """The user's /api/events of one session ("": of all its jobs), with a URL token minted now."""
    token = request.app[AUTH].session_url_token(user_id, session_id)
    session_query = f"sessionId={quote(session_id, safe='')}&" if session_id else ""
    return f"/api/events?{session_query}token={token}"


def _renamed(exc: grpc.aio.AioRpcError, names: dict[str, str], status: int) -> Exception:
    """A jobstore's INVALID_ARGUMENT about a field, named as the caller wrote it (pageToken, not
    page_token); any other error as it is."""
    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return exc
    err = from_grpc(exc)
    field = names.get(err.field or "", err.field)
    return ApiError(status, "invalid", err.message.replace(err.field or "", field or "", 1), field)


async def get_job(request: web.Request) -> web.Response:
    caller = request.app[AUTH].caller(request)
    job_id = _job_id(request)
    job, webhook = await asyncio.gather(
        request.app[STUB].GetJob(pb.GetJobRequest(job_id=job_id, user_id=caller.owner, include_attempts=True)),
        request.app[STUB].GetJobWebhook(pb.GetJobWebhookRequest(job_id=job_id, user_id=caller.owner)))
    return web.json_response(payloads.job_document(job, _links(request, job.id, job.user_id), webhook))


def _query_user(request: web.Request, caller: Caller) -> str:
    """The user a query is about: a service names it in `userId` (or no one: ""); a user's `userId`, if
    given, must be its own id."""
    value = request.query.get("userId", "")
    if caller.service:
        if value and not valid_user_id(value):
            raise ApiError(400, "invalid", "userId: must be 1 to 200 characters, without control characters",
                           "userId")
        return value
    if value and value != caller.user_id:
        raise ApiError(403, "forbidden", "userId differs from the authenticated user", "userId")
    return caller.user_id


async def list_jobs(request: web.Request) -> web.Response:
    caller = request.app[AUTH].caller(request)
    user_id = _query_user(request, caller)
    session_id = request.query.get("sessionId", "")
    if not user_id and not session_id:
        raise ApiError(400, "invalid", "userId: a service lists one user's jobs (userId), or one session's "
                       "(sessionId)", "userId")
    statuses = []
    for name in filter(None, request.query.get("status", "").split(",")):
        if name not in payloads.STATUS_BY_NAME:
            raise ApiError(400, "invalid", f"status: unknown status {name!r}", "status")
        statuses.append(payloads.STATUS_BY_NAME[name])
    try:
        page_size = int(request.query.get("pageSize", "50"))
    except ValueError:
        raise ApiError(400, "invalid", "pageSize: must be an integer", "pageSize") from None
    if not 1 <= page_size <= 500:
        raise ApiError(400, "invalid", "pageSize: must be between 1 and 500", "pageSize")
    try:
        reply = await request.app[STUB].ListJobs(pb.ListJobsRequest(
            user_id=user_id, session_id=session_id, statuses=statuses, page_size=page_size,
            page_token=request.query.get("pageToken", "")))
    except grpc.aio.AioRpcError as exc:
        # A bad query parameter: 400, named as the caller wrote it.
        raise _renamed(exc, {"page_token": "pageToken", "page_size": "pageSize", "session_id": "sessionId",
                             "user_id": "userId"}, 400) from None
    return web.json_response({"jobs": [payloads.job_document(j, _links(request, j.id, j.user_id))
                                       for j in reply.jobs],
                              "nextPageToken": reply.next_page_token or None})


async def cancel_job(request: web.Request) -> web.Response:
    caller = request.app[AUTH].caller(request)
    reason = "cancelled by a service" if caller.service else "cancelled by the user"
    job = await request.app[STUB].Cancel(pb.CancelRequest(job_id=_job_id(request), user_id=caller.owner,
                                                           reason=reason))
    return web.json_response(payloads.job_document(job, _links(request, job.id, job.user_id)))


async def retry_job(request: web.Request) -> web.Response:
    """A failed or cancelled job runs again: the same id, a new attempt (409 for any other status)."""
    caller = request.app[AUTH].caller(request)
    reason = "retried by a service" if caller.service else "retried by the user"
    job = await request.app[STUB].Retry(pb.RetryRequest(job_id=_job_id(request), user_id=caller.owner,
                                                         reason=reason))
    return web.json_response(payloads.job_document(job, _links(request, job.id, job.user_id)), status=202)


async def redrive_jobs(request: web.Request) -> web.Response:
    """Failed jobs of every user run again, in bulk: a service's (or the no-auth demo's) call only."""
    caller = request.app[AUTH].caller(request)
    if not caller.service and request.app[AUTH].mode != "none":
        raise ApiError(403, "forbidden", "a redrive runs other users' jobs again: it takes a service token "
                       "(scope docjobs:service); a user retries its own jobs with POST /api/jobs/{jobId}/retry")
    if request.body_exists:
        guards.require_json(request)
    reply = await request.app[STUB].Redrive(redrive.parse(await _read_body(request)))
    return web.json_response({"count": len(reply.job_ids), "jobIds": list(reply.job_ids), "more": reply.more})


async def job_events(request: web.Request) -> web.StreamResponse:
    job_id = _job_id(request)
    caller = request.app[AUTH].caller_for_job_url(request, job_id)
    after = last_event_id(request)
    user_id = caller.user_id
    if caller.service:  # its stream counts against the job's user, as the user's own would
        user_id = (await request.app[STUB].GetJob(pb.GetJobRequest(job_id=job_id))).user_id
    stream = request.app[STREAMS].open(job_id, user_id, after, caller.expires)
    return await stream.start(request)  # its live part runs in write_eof, see gateway/sse.py


def _session_id(request: web.Request) -> str:
    session_id = request.query.get("sessionId", "")
    if (len(session_id) > 200 or any(ord(c) < 32 and c not in "\t\n\r" for c in session_id)
            or jsonvalues.text_problem(session_id)):
        raise ApiError(400, "invalid", "sessionId: at most 200 characters, without control characters", "sessionId")
    return session_id


async def session_events(request: web.Request) -> web.StreamResponse:
    session_id = _session_id(request)
    caller = request.app[AUTH].caller_for_session_url(request, session_id)
    user_id = _query_user(request, caller)
    if not user_id:
        raise ApiError(400, "invalid", "userId: a service names the user whose events it streams", "userId")
    stream = open_session(request.app[STREAMS], user_id, session_id, last_event_id(request), caller.expires)
    return await stream.start(request)  # its live part runs in write_eof, see gateway/session.py


async def session_events_url(request: web.Request) -> web.Response:
    """A fresh sessionEventsUrl, for a page whose URL token expired (EventSource then gets 401): asked with
    a bearer token, the user's own or a service's naming `userId`, never with the expired URL token."""
    session_id = _session_id(request)
    caller = request.app[AUTH].caller(request)
    user_id = _query_user(request, caller)
    if not user_id:
        raise ApiError(400, "invalid", "userId: a service names the user whose events the URL opens", "userId")
    return web.json_response({"sessionEventsUrl": _session_events_url(request, user_id, session_id)})


async def download(request: web.Request) -> web.StreamResponse:
    job_id = _job_id(request)
    user_id = request.app[AUTH].caller_for_job_url(request, job_id).owner
    stub = request.app[STUB]
    job = await stub.GetJob(pb.GetJobRequest(job_id=job_id, user_id=user_id))
    if not job.artifact_id:
        raise ApiError(404, "not_found", "this job has no document (yet)")
    return await _send_artifact(request, job.artifact_id, user_id, job.user_id, content_disposition)


async def rendition(request: web.Request) -> web.StreamResponse:
    """A job's PDF or thumbnail (renderer/renditions.py), shown inline: the page puts it in an <img> or a tab."""
    job_id = _job_id(request)
    kind = request.match_info["kind"]
    if kind not in payloads.RENDITIONS:
        raise ApiError(404, "not_found", f"no such rendition: one of {', '.join(payloads.RENDITIONS)}", "kind")
    user_id = request.app[AUTH].caller_for_job_url(request, job_id).owner
    job = await request.app[STUB].GetJob(pb.GetJobRequest(job_id=job_id, user_id=user_id))
    made = (json.loads(job.result_json) if job.result_json else {}).get("renditions") or {}
    item = made.get(kind) if isinstance(made, dict) else None
    if not isinstance(item, dict) or "error" in item:
        raise ApiError(404, "not_found", f"this job has no {kind} rendition", "kind")
    artifact_id = job.artifact_id if item.get("same_as_document") else str(item.get("artifact_id") or "")
    if not artifact_id:
        raise ApiError(404, "not_found", f"this job has no {kind} rendition", "kind")
    return await _send_artifact(request, artifact_id, user_id, job.user_id, inline_disposition)


async def _send_artifact(request: web.Request, artifact_id: str, user_id: str, counted_as: str,
                         disposition: Callable[[str], str]) -> web.StreamResponse:
    """Stream an artifact to the client. A download holds no call slot once the jobstore has taken it, but
    a large one holds memory until its client has read it (what gRPC's flow control lets in ahead of a
    client that reads slowly, ~10 MiB at the gateway), so a user has at most DOCJOBS_DOWNLOADS_PER_USER
    large downloads at once in a gateway process: one more gets 429. One up to LARGE_DOWNLOAD_BYTES
    (every thumbnail, most documents) fits in the socket's buffers and is not counted: a page that
    shows a chat's thumbnails asks for them all at once, and an <img> does not retry. The count is the
    job's user's (counted_as), whoever asks: a service's downloads for its users counted against one user
    of no name, one large document at a time for the whole backend."""
    stub = request.app[STUB]
    call = await stub.DownloadArtifact(pb.DownloadArtifactRequest(artifact_id=artifact_id, user_id=user_id))
    try:  # the call ends here whatever happens (it holds a slot in flight only until the jobstore took it)
        first = await call.read()  # a message or grpc.aio.EOF, which the stubs type as object: isinstance tells
        if not isinstance(first, pb.DownloadArtifactResponse) or first.WhichOneof("part") != "info":
            raise ApiError(502, "upstream_error", "the document could not be read")
        info = first.info
        etag = f'"{info.sha256}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        with _counted_download(request, counted_as, info.size_bytes > LARGE_DOWNLOAD_BYTES):
            response = web.StreamResponse(headers={
                "Content-Type": info.content_type, "Content-Length": str(info.size_bytes), "ETag": etag,
                "Content-Disposition": disposition(info.filename), "Cache-Control": "private, max-age=0"})
            await response.prepare(request)
            # read() only: grpc.aio forbids mixing it with iteration.
            while isinstance(part := await call.read(), pb.DownloadArtifactResponse):
                await response.write(part.chunk)
            await response.write_eof()
            return response
    finally:
        call.cancel()


@contextlib.contextmanager
def _counted_download(request: web.Request, user_id: str, large: bool) -> Iterator[None]:
    """A large download counts against its user's DOCJOBS_DOWNLOADS_PER_USER while it is sent."""
    if not large:
        yield
        return
    downloads = request.app[DOWNLOADS]
    if not downloads.admit(user_id):
        raise ApiError(429, "too_many_downloads", f"at most {downloads.limit} large downloads at once per user; "
                       "wait for one to finish", "download")
    try:
        yield
    finally:
        downloads.release(user_id)


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """attachment; an ASCII fallback (quotes and backslashes removed) and the exact name per RFC 5987."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "document"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def inline_disposition(filename: str) -> str:
    return content_disposition(filename, "inline")


async def stats(request: web.Request) -> web.Response:
    request.app[AUTH].caller(request)
    s = await request.app[STUB].GetStats(pb.GetStatsRequest())
    counts: dict[str, dict[str, int]] = {}
    for c in s.counts:
        counts.setdefault(c.job_type, {})[payloads.STATUS_NAMES.get(c.status, "unknown")] = c.count
    return web.json_response({
        "counts": counts, "duePending": s.due_pending, "delayedPending": s.delayed_pending,
        "processing": s.processing, "oldestDuePendingAgeSeconds": s.oldest_due_pending_age_seconds,
        "lastMinute": {"enqueued": s.enqueued_last_minute, "completed": s.completed_last_minute,
                       "failed": s.failed_last_minute, "retried": s.retried_last_minute,
                       "expiredLeases": s.expired_leases_last_minute}})


STATIC = Path(__file__).resolve().parent / "static"
# The examples ship at the repository's top level; an installed gateway without them serves no examples.
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def get_example(request: web.Request) -> web.Response:
    job_type = request.match_info["job_type"]
    if job_type not in jobtypes.JOB_TYPES or not (EXAMPLES / f"{job_type}.json").is_file():
        raise ApiError(404, "not_found", f"no example for {job_type!r}")
    return web.Response(body=(EXAMPLES / f"{job_type}.json").read_bytes(), content_type="application/json")


async def get_schema(request: web.Request) -> web.Response:
    job_type = request.match_info["job_type"]
    if job_type not in (*jobtypes.JOB_TYPES, "common"):
        raise ApiError(404, "not_found", f"no schema for {job_type!r}")
    return web.json_response(specs.schema(job_type))


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document(request.app[SETTINGS]))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        stub = health_pb2_grpc.HealthStub(request.app[CHANNEL])
        # typeshed's HealthStub declares none of the stub's methods.
        reply = await stub.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="docjobs.v1.JobStore"), timeout=2)
        ready = reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        ready = False
    return web.json_response({"ready": ready}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS]["registry"])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """The Expect header as aiohttp answers it (100 Continue), except that another expectation is
    refused in JSON, like every other error, rather than in plain text."""
    if request.version != aiohttp.HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(417, "expectation_failed", "Expect: only 100-continue is supported", "Expect")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # an interim response: the answer itself has not started
    return None


def _keepalive(interval_s: float) -> list[tuple[str, int]]:
    """The channel pings the jobstore every interval_s, and a ping unanswered within half of it closes the
    connection: a jobstore host gone without a reset, a network that drops packets or a hung process is
    found out, and the hub's stream and the open session streams reconnect, where they would wait on that
    connection for good. (gRPC waits for a ping's answer for `ping_timeout_ms`, 60 s unless set.)"""
    interval_ms, timeout_ms = int(interval_s * 1000), int(interval_s * 500)
    return [("grpc.keepalive_time_ms", interval_ms), ("grpc.keepalive_timeout_ms", timeout_ms),
            ("grpc.http2.ping_timeout_ms", timeout_ms), ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0)]


async def _jobstore_channel(app: web.Application) -> AsyncIterator[None]:
    channel = jobstore_channel(app[SETTINGS].jobstore_address, app[SETTINGS].grpc_token, options=[
        ("grpc.service_config", GRPC_SERVICE_CONFIG), *_keepalive(app[SETTINGS].jobstore_keepalive_s)])
    app[CHANNEL] = channel
    plain = pb_grpc.JobStoreStub(channel)
    metrics = app[METRICS]
    app[STUB] = BoundedStub(plain, app[SETTINGS].jobstore_max_inflight, in_flight=metrics["calls_in_flight"],
                            waiting=metrics["calls_waiting"], queued=metrics["calls_queued"],
                            timeout_s=app[SETTINGS].jobstore_call_timeout_s)
    app[HUB] = EventHub(plain, app[SETTINGS].sse_heartbeat_s)
    app[HUB].start()
    app[STREAMS] = Streams(app[STUB], app[HUB], app[AUTH], app[SETTINGS].sse_streams_per_user,
                           app[METRICS]["open_streams"])
    yield
    await app[HUB].stop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5.0):  # bounded: a call being cancelled can hold it
            await channel.close()


async def _webhook_sender(app: web.Application) -> AsyncIterator[None]:
    """The webhook sender (gateway/webhooks.py), when webhooks are on; stopped before the channel closes."""
    if not app[SETTINGS].webhook_secret:
        yield
        return
    sender = webhooks.WebhookSender(pb_grpc.JobStoreStub(app[CHANNEL]), app[AUTH], app[SETTINGS],
                                    registry=app[METRICS]["registry"])
    sender.start()
    yield
    await sender.stop()


async def _end_streams(app: web.Application) -> None:
    app[HUB].close_all()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=settings.max_body_bytes,
                          handler_args={"access_log_class": AccessLog, "logger": ServerLog()})
    registry = CollectorRegistry()
    app[SETTINGS] = settings
    app[DOWNLOADS] = PerUserCount(settings.downloads_per_user)
    app[AUTH] = Auth(settings)
    app[METRICS] = Metrics(
        registry=registry,
        jobs_created=Counter("docjobs_gateway_jobs_created", "Jobs accepted", ["document_type"],
                             registry=registry),
        open_streams=Gauge("docjobs_gateway_open_sse_streams", "Open SSE streams", registry=registry),
        calls_in_flight=Gauge("docjobs_gateway_jobstore_calls_in_flight", "Calls to the jobstore in flight "
                              "(at most DOCJOBS_JOBSTORE_MAX_INFLIGHT)", registry=registry),
        calls_waiting=Gauge("docjobs_gateway_jobstore_calls_waiting", "Calls to the jobstore waiting for a "
                            "slot now", registry=registry),
        calls_queued=Counter("docjobs_gateway_jobstore_calls_queued", "Calls to the jobstore that had to "
                             "wait for a slot (DOCJOBS_JOBSTORE_MAX_INFLIGHT was reached)", registry=registry),
    )
    app[client.FILES] = client.load()
    Cors(settings.cors_origins).install(app)
    if settings.auth == "none":  # outermost: a rebound name gets nothing, not even a preflight's answer
        app.middlewares.insert(0, guards.writes_from_own_origins(settings.cors_origins))
        app.middlewares.insert(0, guards.loopback_only)
    app.cleanup_ctx.append(_jobstore_channel)
    app.cleanup_ctx.append(_webhook_sender)
    app.on_shutdown.append(_end_streams)
    app.add_routes([
        web.post("/api/jobs", create_job, expect_handler=expect_continue),
        web.post("/api/jobs/enqueue", create_job, expect_handler=expect_continue),
        web.get("/api/jobs", list_jobs, expect_handler=expect_continue),
        web.get("/api/jobs/{job_id}", get_job, expect_handler=expect_continue),
        web.get("/api/jobs/{job_id}/status", get_job, expect_handler=expect_continue),
        web.delete("/api/jobs/{job_id}", cancel_job, expect_handler=expect_continue),
        web.post("/api/jobs/redrive", redrive_jobs, expect_handler=expect_continue),
        web.post("/api/jobs/batch", create_jobs, expect_handler=expect_continue),
        web.post("/api/jobs/{job_id}/retry", retry_job, expect_handler=expect_continue),
        # No HEAD on the two streaming routes: aiohttp would send their body after a HEAD's headers.
        web.get("/api/jobs/{job_id}/events", job_events, allow_head=False, expect_handler=expect_continue),
        web.get("/api/jobs/{job_id}/artifact", download, allow_head=False, expect_handler=expect_continue),
        web.get("/api/jobs/{job_id}/renditions/{kind}", rendition, allow_head=False, expect_handler=expect_continue),
        web.get("/api/events", session_events, allow_head=False, expect_handler=expect_continue),
        web.get("/api/events/url", session_events_url, expect_handler=expect_continue),
        web.get("/api/stats", stats, expect_handler=expect_continue),
        web.get("/", index, expect_handler=expect_continue),
        web.get("/client/{name}", client.client_file, expect_handler=expect_continue),
        web.get("/api/examples/{job_type}", get_example, expect_handler=expect_continue),
        web.get("/api/schemas/{job_type}", get_schema, expect_handler=expect_continue),
        web.get("/openapi.json", openapi_json, expect_handler=expect_continue),
        web.get("/healthz", healthz, expect_handler=expect_continue),
        web.get("/readyz", readyz, expect_handler=expect_continue),
        web.get("/metrics", metrics, expect_handler=expect_continue),
    ])
    return app


def main() -> None:
    settings = load_or_exit("gateway", Settings.from_env)
    setup_logging(settings.log_level)
    if settings.auth == "none":
        log.warning("DOCJOBS_AUTH=none: NO AUTHENTICATION. Every caller is the user 'local'. For the local "
                    "demo only; listening on %s only.", settings.http_host)
    # Thousands of open streams are hundreds of thousands of long-lived objects: with the default
    # thresholds, full collections ran every second while streams opened, 110-170 ms each, stalling
    # every stream (bench/sse.py). Objects from start-up are frozen out of collections; the young
    # generation is collected every 50,000 allocations, and full collections come 100x rarer.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # uvloop, as in the other services: C transports cost less memory and CPU per open stream.
    web.run_app(create_app(settings), host=settings.http_host, port=settings.http_port, print=None,
                shutdown_timeout=5, loop=uvloop.new_event_loop(), **SERVER_OPTIONS)




if __name__ == "__main__":
    main()
