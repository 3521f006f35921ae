"""A worker's session (the Work RPC): claims, heartbeats and completions as messages on one stream.

A unary Claim costs a call, a long-poll and a reply per batch, and every heartbeat and completion a call
of its own; most of the jobstore's CPU per job was grpc's per-call work. A session pays for one call per
worker lifetime. What it does with each message is what the unary RPC does (the same validation, the
same Store method, the same SQL); only the transport differs:

* credit: the worker grants its free slots, and a push task claims (Store.claim, so the same fairness
  order, the same long wait woken by the doorbell) only while credit is left, at most 100 at a time;
* answers: each request is handled in a task of its own and answered by request id, so a slow one does
  not hold up the others, and completions (and heartbeats) arriving together share one statement (batching.py). At most
  MAX_IN_FLIGHT requests are being handled or answered at once; past that the stream is not read, and
  grpc's flow control holds the worker back (a flood costs the jobstore bounded memory);
* cancels: a job the stream holds (pushed on it, or heartbeated through it) is pushed a cancel as soon
  as this process learns of it (its own Cancel, or another replica's doorbell), see `Sessions`;
* the end: jobs pushed but never written are given back at once (the worker never saw them); jobs it
  saw keep their leases (it may finish them on a new stream) unless it gave them back with a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from docjobs.channels import MAX_MESSAGE_BYTES
from docjobs.v1 import jobstore_pb2 as pb

from . import convert, validation
from .errors import DATABASE_DOWN, InvalidArgument, Unavailable
from .settings import Settings
from .store import Row, Store
from .wire import MalformedRequest

log = logging.getLogger(__name__)

MAX_CREDIT = 1000  # jobs granted and not yet pushed, per stream
MAX_CLAIM = 100  # jobs per push (what one Claim may take)
# A push's message holds jobs up to this size, and the rest go in the next: 100 payloads of up to 4 MiB
# in one message passed what grpc sends (MAX_MESSAGE_BYTES), and the write failed with the jobs leased.
MESSAGE_BUDGET_BYTES = MAX_MESSAGE_BYTES * 3 // 4
MAX_IN_FLIGHT = 128  # requests being handled or waiting for their answer to be written, per stream
MAX_ARTIFACTS_IN_FLIGHT = 4  # of those, complete_with_artifact (up to 4 MiB each)
MAX_REQUEST_ID = 2**53  # what a JSON number holds exactly
GATHER_S = 0.005  # how long a push waits for credit to gather (see _push_jobs)
CLAIM_WAIT_S = 30.0  # one long wait of the push task; it waits again after (as a worker's next Claim would)
StatusFor = Callable[[BaseException], "tuple[grpc.StatusCode, str] | None"]


class Sessions:
    """The open sessions of this process, by the jobs they hold, so that a cancel reaches its worker."""

    def __init__(self) -> None:
        self._by_job: dict[str, set[WorkSession]] = {}
        self._open: set[WorkSession] = set()

    @property
    def open(self) -> int:
        return len(self._open)

    def opened(self, session: WorkSession) -> None:
        self._open.add(session)

    def closed(self, session: WorkSession) -> None:
        self._open.discard(session)

    def stopping(self) -> None:
        """The jobstore stops: every session's push ends (one waiting for credit too), and its stream with it."""
        for session in self._open:
            session.wake()

    def holding(self) -> int:
        """How many jobs name a holder (for tests and metrics)."""
        return len(self._by_job)

    def hold(self, job_id: str, session: WorkSession) -> None:
        self._by_job.setdefault(job_id, set()).add(session)

    def drop(self, job_id: str, session: WorkSession) -> None:
        holders = self._by_job.get(job_id)
        if holders is not None:
            holders.discard(session)
            if not holders:
                del self._by_job[job_id]

    def cancelled(self, job_id: str) -> None:
        """A job was cancelled (here, or on another replica): its holders are told now."""
        for session in list(self._by_job.pop(job_id, ())):
            session.push_cancel(job_id)


@dataclass
class _Pushed:
    """Jobs claimed for the stream, waiting to be written: given back if the stream ends first."""

    rows: list[Row]
    message: pb.WorkResponse


@dataclass
class _Answer:
    message: pb.WorkResponse
    slot: bool = True  # an answer holds one of MAX_IN_FLIGHT until written; a pushed cancel holds none
    artifact: bool = False


@dataclass
class _End:
    error: BaseException | None = None


_Out = _Pushed | _Answer | _End


@dataclass(eq=False)  # held in sets by identity
class WorkSession:
    store: Store
    settings: Settings
    sessions: Sessions
    status_for: StatusFor
    worker_id: str = ""
    job_types: list[str] = field(default_factory=list)
    lease_ms: int = 0
    credit: int = 0
    held: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._closed = False  # the stream has ended: the session takes hold of no job again
        self._finishing: set[str] = set()  # held jobs with a complete, fail or release being handled
        self._unwritten: list[Row] = []  # the jobs of a push whose write failed (given back as the stream ends)
        self._outbox: asyncio.Queue[_Out] = asyncio.Queue()
        self._credit_added = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._artifact_slots = asyncio.Semaphore(MAX_ARTIFACTS_IN_FLIGHT)
        self._pending_ids: set[int] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._pusher: asyncio.Task[None] | None = None
        self._most_credit = 0

    # --- the stream --------------------------------------------------------------------------------

    async def run(self, requests: AsyncIterator[Any]) -> AsyncGenerator[pb.WorkResponse, None]:
        self.sessions.opened(self)
        reader = asyncio.create_task(self._read(requests), name="work-session-read")
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                try:
                    yield item.message
                except BaseException:
                    # Its write did not finish: the jobs go back now rather than when their leases run out
                    # (had the worker got them after all, its lease is gone: the job runs once more).
                    if isinstance(item, _Pushed):
                        self._unwritten = item.rows
                    raise
                finally:
                    if isinstance(item, _Answer) and item.slot:
                        self._slots.release()
                        if item.artifact:
                            self._artifact_slots.release()
        finally:
            self._closed = True
            self.sessions.closed(self)
            reader.cancel()
            await self._stop_pushing()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            for job_id in self.held:
                self.sessions.drop(job_id, self)
            self.held.clear()
            unsent, self._unwritten = self._unwritten, []
            while not self._outbox.empty():
                left = self._outbox.get_nowait()
                if isinstance(left, _Pushed):
                    unsent.extend(left.rows)
            if unsent:  # claimed for this worker, never written to it: nobody holds them
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.release(unsent))
            # Requests already taken in are finished (their writes are not cut off); their answers go nowhere.

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        try:
            iterator = requests.__aiter__()
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                raise InvalidArgument("hello", "the stream ended before its hello") from None
            self._hello(first)
            self._pusher = asyncio.create_task(self._push(), name="work-session-push")
            async for request in iterator:
                await self._take(request)
            # The worker ended its half: answer what it asked, then end the stream.
            while self._handlers:
                await asyncio.wait(set(self._handlers))
            await self._stop_pushing()
            self._outbox.put_nowait(_End())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._outbox.put_nowait(_End(exc))

    def _hello(self, request: Any) -> None:
        _parsed(request)
        if request.WhichOneof("kind") != "hello":
            raise InvalidArgument("hello", "the first message must be the hello")
        if request.request_id:
            raise InvalidArgument("request_id", "a hello is not answered: leave request_id 0")
        hello = request.hello
        self.worker_id, self.job_types, _, _, self.lease_ms = validation.claim(
            pb.ClaimRequest(worker_id=hello.worker_id, job_types=hello.job_types, lease_ms=hello.lease_ms),
            self.settings)
        self._add_credit(request.credit)

    def _check_credit(self, credit: int, finishing: int = 0) -> None:
        """A message's credit, refused before the message does anything else. Jobs granted and not yet
        pushed, and jobs pushed that the worker has not finished, are at most MAX_CREDIT together: a worker
        that never reads its stream (so grpc takes the pushes, and the credit comes back) cannot go on
        taking the queue's jobs, each of which would cost an attempt when its lease ran out. `finishing`:
        held jobs this very message completes, fails or releases."""
        if not 0 <= credit <= MAX_CREDIT:
            raise InvalidArgument("credit", f"must be between 0 and {MAX_CREDIT}")
        holding = len(self.held) - len(self._finishing) - finishing
        if credit and self.credit + credit + holding > MAX_CREDIT:
            raise InvalidArgument("credit", f"at most {MAX_CREDIT} jobs may be granted or held unfinished "
                                            f"(granted {self.credit + credit}, held {holding})")

    def _add_credit(self, credit: int, finishing: int = 0) -> None:
        self._check_credit(credit, finishing)
        if credit:
            self.credit += credit
            self._most_credit = max(self._most_credit, self.credit)
            self._credit_added.set()

    async def _take(self, request: Any) -> None:
        _parsed(request)
        kind = request.WhichOneof("kind")
        finishing = self._finishes(kind, request)
        self._check_credit(request.credit, len(finishing))  # before anything the message asks is done
        if kind is None:
            if not request.credit:
                raise InvalidArgument("kind", "an empty message: give credit or one request")
            if request.request_id:
                raise InvalidArgument("request_id", "a message with credit only is not answered: leave it 0")
            self._add_credit(request.credit)
            return
        if kind == "hello":
            raise InvalidArgument("hello", "only the first message may be the hello")
        request_id = request.request_id
        if not 1 <= request_id <= MAX_REQUEST_ID:
            raise InvalidArgument("request_id", f"required with {kind}: between 1 and {MAX_REQUEST_ID}")
        if request_id in self._pending_ids:
            raise InvalidArgument("request_id", f"{request_id} is already in use by an unanswered request")
        if kind == "pause":
            try:
                keep = validation.release_worker(pb.ReleaseWorkerRequest(
                    worker_id=self.worker_id, keep_job_ids=request.pause.keep_job_ids))[1]
            except InvalidArgument as exc:
                raise InvalidArgument(f"pause.{exc.field}", exc.problem) from None
            await self._slots.acquire()
            self._pending_ids.add(request_id)
            try:
                # In line: new credit (this message's, and later ones') is pushed only after the answer.
                await self._pause(request_id, keep)
            finally:
                self._pending_ids.discard(request_id)
            self._add_credit(request.credit)
            return
        call = self._handler(kind, getattr(request, kind))  # validated here: a bad field ends the stream
        artifact = kind == "complete_with_artifact"
        job_id = "" if kind == "complete_many" else getattr(request, kind).job_id
        await self._slots.acquire()
        if artifact:
            await self._artifact_slots.acquire()
        self._pending_ids.add(request_id)
        self._finishing.update(finishing)
        task = asyncio.create_task(self._answer(request_id, kind, job_id, call, artifact))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        task.add_done_callback(lambda _: self._finishing.difference_update(finishing))
        self._add_credit(request.credit)

    def _finishes(self, kind: str | None, request: Any) -> set[str]:
        """The held jobs a request finishes (its complete, fail or release): their slots are free."""
        if kind == "complete_many":
            ids = {item.job_id for item in request.complete_many.jobs}
        elif kind in ("complete", "complete_with_artifact", "fail", "release"):
            ids = {getattr(request, kind).job_id}
        else:
            return set()
        return (ids & self.held) - self._finishing

    # --- requests ----------------------------------------------------------------------------------

    def _handler(self, kind: str, message: Any) -> Callable[[], Awaitable[pb.WorkAck]]:
        """The request's store call, its arguments validated now (an InvalidArgument names the field)."""
        store = self.store
        try:
            if kind == "heartbeat":
                beat = validation.heartbeat(message, self.settings)

                async def heartbeat() -> pb.WorkAck:
                    result = await store.heartbeat(*beat)
                    ack = pb.WorkAck(cancelled=result.cancelled)
                    if result.lease_expires_at is not None:
                        ack.lease_expires_at.FromDatetime(result.lease_expires_at)
                        self._hold(str(beat[0]))
                    return ack
                return heartbeat
            if kind == "complete":
                done = validation.complete(message)

                async def complete() -> pb.WorkAck:
                    await store.complete(*done)
                    return pb.WorkAck()
                return complete
            if kind == "complete_many":
                items = validation.complete_many(message)
                job_ids = [item.job_id for item in message.jobs]

                async def complete_many() -> pb.WorkAck:
                    # As CompleteMany: the batcher gathers them (and those of other streams) into one statement.
                    results = await store.complete_many(items)
                    ack = pb.WorkAck()
                    for job_id, result in zip(job_ids, results, strict=True):
                        if isinstance(result, BaseException):
                            mapped = self.status_for(result)
                            if mapped is None or mapped[0] == grpc.StatusCode.UNAVAILABLE:
                                raise result  # unexpected, or the database is away: the whole request
                            ack.outcomes.add(job_id=job_id, completed=False, error_code=mapped[0].name,
                                             error_message=mapped[1])
                        else:
                            ack.outcomes.add(job_id=job_id, completed=True)
                        self._drop(job_id)
                    return ack
                return complete_many
            if kind == "complete_with_artifact":
                small = validation.complete_with_artifact(message)

                async def complete_with_artifact() -> pb.WorkAck:
                    await store.complete_with_artifact(*small)
                    return pb.WorkAck()
                return complete_with_artifact
            if kind == "fail":
                failed = validation.fail(message)

                async def fail() -> pb.WorkAck:
                    row = await store.fail(*failed)
                    ack = pb.WorkAck(will_retry=row["will_retry"])
                    if row["will_retry"]:
                        ack.retry_at.FromDatetime(row["retry_at"])
                    return ack
                return fail
            released = validation.release(message)

            async def release() -> pb.WorkAck:
                row = await store.release_job(*released)
                ack = pb.WorkAck(attempt_counted=not row["free"], will_retry=row["will_retry"])
                if row["will_retry"]:
                    ack.retry_at.FromDatetime(row["retry_at"])
                return ack
            return release
        except InvalidArgument as exc:
            raise InvalidArgument(f"{kind}.{exc.field}", exc.problem) from None

    async def _answer(self, request_id: int, kind: str, job_id: str, call: Callable[[], Awaitable[pb.WorkAck]],
                      artifact: bool) -> None:
        try:
            ack = await call()
            finished = kind != "heartbeat"
        except Exception as exc:
            mapped = self.status_for(exc)
            if mapped is None:
                log.exception("unexpected error in Work (%s)", kind, exc_info=exc)
                mapped = grpc.StatusCode.INTERNAL, "internal error"
            ack = pb.WorkAck(code=mapped[0].name, message=mapped[1])
            finished = mapped[0] in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
        finally:
            self._pending_ids.discard(request_id)
        if finished:
            self._drop(job_id)
        self._outbox.put_nowait(_Answer(pb.WorkResponse(request_id=request_id, ack=ack), artifact=artifact))

    def _drop(self, job_id: str) -> None:
        """The worker holds the job no more: no cancel for it."""
        if job_id in self.held:
            self.held.discard(job_id)
            self.sessions.drop(job_id, self)

    def _hold(self, job_id: str) -> None:
        # A heartbeat answered after the stream ended must not register the session again: nothing
        # would ever drop it, and it would be kept alive by the job's entry.
        if not self._closed and job_id not in self.held:
            self.held.add(job_id)
            self.sessions.hold(job_id, self)

    def wake(self) -> None:
        self._credit_added.set()

    def push_cancel(self, job_id: str) -> None:
        self.held.discard(job_id)
        self._outbox.put_nowait(_Answer(pb.WorkResponse(cancelled_job_id=job_id), slot=False))

    async def _pause(self, request_id: int, keep: list[uuid.UUID]) -> None:
        await self._stop_pushing()
        self.credit = 0
        self._credit_added.clear()
        ack = pb.WorkAck()
        try:
            released = await self.store.release_worker(self.worker_id, keep)
            ack.released_job_ids.extend(str(job_id) for job_id in released)
            for job_id in ack.released_job_ids:
                self.held.discard(job_id)
                self.sessions.drop(job_id, self)
        except Exception as exc:
            mapped = self.status_for(exc) or (grpc.StatusCode.INTERNAL, "internal error")
            ack = pb.WorkAck(code=mapped[0].name, message=mapped[1])
        self._outbox.put_nowait(_Answer(pb.WorkResponse(request_id=request_id, ack=ack)))
        self._pusher = asyncio.create_task(self._push(), name="work-session-push")

    # --- pushing jobs ------------------------------------------------------------------------------

    async def _stop_pushing(self) -> None:
        pusher, self._pusher = self._pusher, None
        if pusher is not None:
            pusher.cancel()  # Store.claim gives back what a claim cut short took
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    async def _push(self) -> None:
        try:
            await self._push_jobs()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: this stream ends (INTERNAL, logged), never the jobstore
            self._outbox.put_nowait(_End(exc))

    async def _push_jobs(self) -> None:
        failures = 0
        while True:
            while self.credit <= 0 and not self.store.shutting_down.is_set():
                self._credit_added.clear()
                await self._credit_added.wait()  # Sessions.stopping() sets it too
            # A busy worker frees its slots one at a time, and a claim statement per job would cost the
            # database more than the jobs do: below half the most credit the stream has held, the push
            # waits a moment for more (an idle worker's credit is whole, and is claimed at once).
            if self.credit * 2 < self._most_credit:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GATHER_S):
                        while self.credit * 2 < self._most_credit:
                            self._credit_added.clear()
                            await self._credit_added.wait()
            if self.store.shutting_down.is_set():
                break
            try:
                rows = await self.store.claim(self.worker_id, self.job_types, min(self.credit, MAX_CLAIM),
                                              CLAIM_WAIT_S, self.lease_ms)
            except DATABASE_DOWN as exc:
                if failures == 0:
                    log.warning("Work: cannot claim for %s (%s); trying again", self.worker_id, exc)
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            except Exception as exc:
                self._outbox.put_nowait(_End(exc))
                return
            failures = 0
            if not rows:
                if self.store.shutting_down.is_set():
                    break
                continue
            self.credit -= len(rows)
            start = 0
            while start < len(rows):  # as many messages as their size needs (a payload may be 4 MiB)
                response = pb.WorkResponse()
                end = convert.add_claimed_within(response.jobs.jobs, rows, start, MESSAGE_BUDGET_BYTES)
                for row in rows[start:end]:
                    self._hold(str(row["id"]))
                self._outbox.put_nowait(_Pushed(rows[start:end], response))
                start = end
        # The jobstore is stopping: answer what was asked so far, then the worker opens a session elsewhere.
        if self._handlers:
            await asyncio.wait(set(self._handlers))
        self._outbox.put_nowait(_End(Unavailable("the jobstore is stopping; open a new session")))


def _parsed(request: object) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidArgument("request", f"not a valid WorkRequest message ({request.error})")
