"""The gRPC servicer: parse the request, call one store method, map the result.

Errors are mapped in one place (`_status_for`): domain errors to their status codes, a database that
cannot be reached to UNAVAILABLE, and anything unexpected to INTERNAL with a log line (never a
traceback to the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg
import grpc

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from . import convert, metrics, validation
from .deliveries import Deliveries
from .errors import DATABASE_DOWN, FailedPrecondition, InvalidArgument, JobStoreError, NotFound, Unavailable
from .session import MESSAGE_BUDGET_BYTES, Sessions, WorkSession
from .settings import Settings
from .store import Store
from .watch import Watches
from .wire import MalformedRequest

log = logging.getLogger(__name__)

LIST_REPLY_BUDGET = 12 * 1024 * 1024  # a ListJobs page with payloads ends before this (the limit is 16 MiB)
LIST_PAYLOAD_BATCH = 4  # jobs read at a time for a page with payloads (4 MiB each at most)
LIST_PAYLOAD_BATCH_MOST = 50  # and once the payloads read so far are small (50 of the largest fit what is left)
Service = TypeVar("Service")
Request = TypeVar("Request")
Response = TypeVar("Response")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(exc, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, FailedPrecondition):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, asyncpg.DataError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"rejected by the database: {exc}"
    if isinstance(exc, DATABASE_DOWN):
        return grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry"
    if isinstance(exc, JobStoreError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return None


async def _abort(context: Context, method: str, exc: BaseException) -> None:
    mapped = _status_for(exc)
    if mapped is None:
        log.exception("unexpected error in %s", method, exc_info=exc)
        mapped = grpc.StatusCode.INTERNAL, "internal error"
    metrics.RPC_ERRORS.labels(method, mapped[0].name).inc()
    metadata: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, InvalidArgument):
        metadata = (("docjobs-field", exc.field),)
    await context.abort(mapped[0], mapped[1], metadata)


def _require_parsed(request: object, method: str) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidArgument("request", f"not a valid {method} request message ({request.error})")


def unary(fn: Callable[[Service, Request, Context], Awaitable[Response]]
          ) -> Callable[[Service, Request, Context], Awaitable[Response]]:
    calls = metrics.RPCS.labels(fn.__name__)

    @functools.wraps(fn)
    async def wrapper(self: Service, request: Request, context: Context) -> Response:
        calls.inc()
        try:
            _require_parsed(request, fn.__name__)
            return await fn(self, request, context)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, fn.__name__, exc)
            raise AssertionError("unreachable") from exc

    return wrapper


def streaming(fn: Callable[[Service, Request, Context], AsyncGenerator[Response, None]]
              ) -> Callable[[Service, Request, Context], AsyncGenerator[Response, None]]:
    calls = metrics.RPCS.labels(fn.__name__)

    @functools.wraps(fn)
    async def wrapper(self: Service, request: Request, context: Context) -> AsyncGenerator[Response, None]:
        calls.inc()
        try:
            _require_parsed(request, fn.__name__)
            # aclosing: a stream that ends early (cancelled, failed) closes its generator now, which
            # releases what it holds (a Watch's subscription) instead of when it is collected.
            async with contextlib.aclosing(fn(self, request, context)) as items:
                async for item in items:
                    yield item
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, fn.__name__, exc)

    return wrapper


class JobStoreService(pb_grpc.JobStoreServicer):
    def __init__(self, store: Store, watches: Watches, settings: Settings, deliveries: Deliveries,
                 sessions: Sessions | None = None) -> None:
        self._store = store
        self.sessions = sessions if sessions is not None else Sessions()
        self._deliveries = deliveries
        self._watches = watches
        self._settings = settings
        self._background: set[asyncio.Future[None]] = set()

    @unary
    async def Enqueue(self, request: pb.EnqueueRequest, context: Context) -> pb.EnqueueResponse:
        row, created = await self._store.enqueue(validation.enqueue(request, self._settings, self._store.clock.now()))
        return pb.EnqueueResponse(job=convert.job(row), created=created)

    @unary
    async def EnqueueMany(self, request: pb.EnqueueManyRequest, context: Context) -> pb.EnqueueManyResponse:
        jobs, basic = validation.enqueue_many(request, self._settings, self._store.clock.now())
        stored = await self._store.enqueue_many(jobs)
        reply = pb.EnqueueManyResponse()
        add = reply.jobs.add
        for row, created in stored:
            if basic:
                convert.fill_job_basic(add(created=created).job, row)
            else:
                add(created=created, job=convert.job(row))
        return reply

    @unary
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        job_id, user_id = validation.get_job(request)
        row = await self._store.get_job(job_id, user_id, with_payload=request.include_payload)
        job = convert.job(row, payload=request.include_payload)
        if request.include_attempts:
            job.attempts.extend(convert.attempt(a) for a in await self._store.attempts(job_id))
        return job

    @unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        user_id, session_id, statuses, cursor, page_size = validation.list_jobs(request)
        if request.include_payloads:
            return await self._list_with_payloads(user_id, session_id, statuses, cursor, page_size)
        rows = await self._store.list_jobs(user_id, session_id, statuses, cursor, page_size + 1)
        response = pb.ListJobsResponse(jobs=[convert.job(row) for row in rows[:page_size]])
        if len(rows) > page_size:
            last = rows[page_size - 1]
            response.next_page_token = validation.encode_page_token(last["created_at"], last["id"])
        return response

    async def _list_with_payloads(self, user_id: str | None, session_id: str | None, statuses: list[str],
                                  cursor: tuple[datetime, uuid.UUID] | None, page_size: int) -> pb.ListJobsResponse:
        """A page of jobs with their payloads (up to 4 MiB each), read LIST_PAYLOAD_BATCH at a time (up to
        LIST_PAYLOAD_BATCH_MOST while the payloads are small), that ends before its reply passes
        LIST_REPLY_BUDGET. Read whole, a page of 500 was up to 2 GB in the jobstore's memory to answer
        12 MiB of it; the most read at once now is 50 payloads (200 MiB at worst, were the next 50 each
        4 MiB after smaller ones)."""
        response = pb.ListJobsResponse()
        size = largest = 0
        last = None
        batch = LIST_PAYLOAD_BATCH
        while True:
            batch = min(batch, page_size - len(response.jobs))
            rows = await self._store.list_jobs(user_id, session_id, statuses, cursor, batch + 1, with_payloads=True)
            for row in rows[:batch]:
                job = convert.job(row, payload=True)
                job_size = job.ByteSize()
                size += job_size
                largest = max(largest, job_size)
                if response.jobs and size > LIST_REPLY_BUDGET:
                    more = True  # this job starts the next page
                    break
                response.jobs.append(job)
                last = row
            else:
                more = len(rows) > batch
                if more and len(response.jobs) < page_size:
                    assert last is not None  # the batch was whole
                    cursor = (last["created_at"], last["id"])
                    # Small payloads so far: larger reads (500 small jobs were 125 reads of four).
                    fits = (LIST_REPLY_BUDGET - size) // max(largest, 1)
                    batch = LIST_PAYLOAD_BATCH_MOST if fits >= LIST_PAYLOAD_BATCH_MOST else LIST_PAYLOAD_BATCH
                    continue
            break
        if more and last is not None:
            response.next_page_token = validation.encode_page_token(last["created_at"], last["id"])
        return response

    @unary
    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.Job:
        return convert.job(await self._store.cancel(*validation.cancel(request)))

    @unary
    async def Retry(self, request: pb.RetryRequest, context: Context) -> pb.Job:
        return convert.job(await self._store.retry(*validation.retry(request)))

    @unary
    async def Redrive(self, request: pb.RedriveRequest, context: Context) -> pb.RedriveResponse:
        job_type, after, before, limit, reason = validation.redrive(request)
        rows = await self._store.redrive(job_type, after, before, limit, reason)
        return pb.RedriveResponse(job_ids=[str(r["id"]) for r in rows], more=len(rows) == limit)

    @unary
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.Stats:
        stats = await self._store.stats()
        out = pb.Stats(oldest_due_pending_age_seconds=max(0.0, stats["oldest_due_age"]),
                       delayed_pending=stats["delayed"])
        for row in stats["counts"]:
            out.counts.append(pb.TypeStatusCount(job_type=row["job_type"],
                                                 status=convert.STATUS_TO_PB[row["status"]],
                                                 count=row["job_count"]))
            out.due_pending += row["due_count"]
            if row["status"] == "processing":
                out.processing += row["job_count"]
        rates = stats["rates"]
        out.enqueued_last_minute = rates["enqueued"]
        out.completed_last_minute = rates["completed"]
        out.failed_last_minute = rates["failed"]
        out.retried_last_minute = rates["retried"]
        out.expired_leases_last_minute = rates["expired_leases"]
        return out

    @unary
    async def Claim(self, request: pb.ClaimRequest, context: Context) -> pb.ClaimResponse:
        worker_id, job_types, max_jobs, wait_s, lease_ms = validation.claim(request, self._settings)
        remaining = context.time_remaining()
        if remaining is not None:
            wait_s = max(0.0, min(wait_s, remaining - 0.05))
        claimed = await self._store.claim(worker_id, job_types, max_jobs, wait_s, lease_ms)
        response = pb.ClaimResponse()
        end = convert.add_claimed_within(response.jobs, claimed, 0, MESSAGE_BUDGET_BYTES)
        rows, over = claimed[:end], claimed[end:]
        if over:  # more than one answer holds (large payloads): back to the queue at once, no attempt counted
            giving_back = asyncio.ensure_future(self._store.release(over))
            self._background.add(giving_back)
            giving_back.add_done_callback(self._background.discard)
        if rows:
            # The worker may go away while the answer is on its way (it stops, its call is cancelled):
            # then nobody holds these jobs, and they go back at once instead of when their leases end.
            def release_if_lost(ctx: Context) -> None:
                if ctx.cancelled():
                    task = asyncio.ensure_future(self._store.release(rows))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

            # The stubs take an instance of their class _DoneCallback, where grpc takes any callable.
            context.add_done_callback(release_if_lost)  # type: ignore[arg-type]
        return response

    @unary
    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: Context) -> pb.HeartbeatResponse:
        beat = await self._store.heartbeat(*validation.heartbeat(request, self._settings))
        response = pb.HeartbeatResponse(cancelled=beat.cancelled)
        if beat.lease_expires_at is not None:
            response.lease_expires_at.FromDatetime(beat.lease_expires_at)
        return response

    @unary
    async def Complete(self, request: pb.CompleteRequest, context: Context) -> pb.Job:
        return convert.job(await self._store.complete(*validation.complete(request)))

    @unary
    async def CompleteMany(self, request: pb.CompleteManyRequest,
                           context: Context) -> pb.CompleteManyResponse:
        items = validation.complete_many(request)
        # Concurrent completions are gathered into one statement and one commit (batching.py).
        results = await self._store.complete_many(items)
        outcomes = []
        for item, result in zip(request.jobs, results, strict=True):
            if isinstance(result, BaseException):
                mapped = _status_for(result)
                if mapped is None or mapped[0] == grpc.StatusCode.UNAVAILABLE:
                    raise result  # unexpected (INTERNAL), or the database is away: the whole call
                outcomes.append(pb.CompleteOutcome(job_id=item.job_id, completed=False,
                                                   error_code=mapped[0].name, error_message=mapped[1]))
            else:
                outcomes.append(pb.CompleteOutcome(job_id=item.job_id, completed=True))
        return pb.CompleteManyResponse(outcomes=outcomes)

    @unary
    async def ReleaseWorker(self, request: pb.ReleaseWorkerRequest,
                            context: Context) -> pb.ReleaseWorkerResponse:
        released = await self._store.release_worker(*validation.release_worker(request))
        return pb.ReleaseWorkerResponse(released_job_ids=[str(job_id) for job_id in released])

    @unary
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        row = await self._store.release_job(*validation.release(request))
        response = pb.ReleaseResponse(job=convert.job(row), attempt_counted=not row["free"])
        if row["will_retry"]:
            response.retry_at.FromDatetime(row["retry_at"])
        return response

    @unary
    async def Fail(self, request: pb.FailRequest, context: Context) -> pb.FailResponse:
        row = await self._store.fail(*validation.fail(request))
        response = pb.FailResponse(job=convert.job(row), will_retry=row["will_retry"])
        if row["will_retry"]:
            response.retry_at.FromDatetime(row["retry_at"])
        return response

    @streaming
    async def Work(self, request_iterator: AsyncIterator[pb.WorkRequest],
                   context: Context) -> AsyncGenerator[pb.WorkResponse, None]:
        session = WorkSession(self._store, self._settings, self.sessions, _status_for)
        async with contextlib.aclosing(session.run(request_iterator)) as responses:
            async for response in responses:
                yield response

    @unary
    async def UploadArtifact(self, request_iterator: AsyncIterator[pb.UploadArtifactRequest],
                             context: Context) -> pb.Artifact:
        iterator = request_iterator.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("header", "the stream was empty") from None
        _require_parsed(first, "UploadArtifact")
        header = validation.artifact_header(first)

        async def chunks() -> AsyncIterator[bytes]:
            async for part in iterator:
                _require_parsed(part, "UploadArtifact")
                if part.WhichOneof("part") != "chunk":
                    raise InvalidArgument("chunk", "only the first message may be a header")
                yield part.chunk

        return convert.artifact(await self._store.upload_artifact(header, chunks()))

    @unary
    async def CompleteWithArtifact(self, request: pb.CompleteWithArtifactRequest,
                                   context: Context) -> pb.Job:
        return convert.job(await self._store.complete_with_artifact(*validation.complete_with_artifact(request)))

    @streaming
    async def DownloadArtifact(self, request: pb.DownloadArtifactRequest,
                               context: Context) -> AsyncGenerator[pb.DownloadArtifactResponse, None]:
        artifact = await self._store.get_artifact(*validation.download(request))
        yield pb.DownloadArtifactResponse(info=convert.artifact(artifact))
        async for chunk in self._store.artifact_chunks(artifact):
            yield pb.DownloadArtifactResponse(chunk=chunk)

    @streaming
    async def Watch(self, request: pb.WatchRequest,
                    context: Context) -> AsyncGenerator[pb.JobEvent, None]:
        job_id, user_id, session_id, after_id = validation.watch(request)
        if request.all_jobs:
            events = self._watches.all_jobs_one_by_one()
        elif job_id is None:
            # A scope may be quiet for long: its caller learns at once that the call was taken (a gateway
            # holds a slot of its own bound on calls until then).
            await context.send_initial_metadata(())
            events = self._watches.scope(user_id, session_id, after_id)
        elif request.history_only:
            events = self._watches.job_history(job_id, user_id, after_id)
        else:
            events = self._watches.job(job_id, user_id, after_id)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    @streaming
    async def WatchAllJobs(self, request: pb.WatchAllJobsRequest,
                           context: Context) -> AsyncGenerator[pb.JobEventBatch, None]:
        async with contextlib.aclosing(self._watches.all_jobs()) as batches:
            async for batch in batches:
                yield batch

    @unary
    async def ClaimDeliveries(self, request: pb.ClaimDeliveriesRequest,
                              context: Context) -> pb.ClaimDeliveriesResponse:
        return await self._deliveries.claim(request)

    @unary
    async def ReportDelivery(self, request: pb.ReportDeliveryRequest,
                             context: Context) -> pb.ReportDeliveryResponse:
        return await self._deliveries.report(request)

    @unary
    async def GetJobWebhook(self, request: pb.GetJobWebhookRequest, context: Context) -> pb.JobWebhook:
        return await self._deliveries.job_webhook(request)
