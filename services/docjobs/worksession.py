"""A worker's end of its session with the jobstore (the Work RPC), reconnecting by itself.

The worker grants credit as its slots free up (`grant`); jobs pushed within it arrive through `on_jobs`,
cancels of jobs it holds through `on_cancel`. Requests (heartbeat, complete, fail, release, pause) are
awaited like the unary calls they stand for, and a refusal raises `SessionError`, a grpc.aio.AioRpcError
with the status the unary call would have answered, so callers handle both alike.

When the stream breaks (the jobstore restarts, the network drops), unanswered requests fail with
UNAVAILABLE, and a new stream is opened with backoff; the credit granted and not used goes with its hello,
since the jobstore's count of it ended with the old stream. The jobs in hand keep their leases: their
heartbeats and completions go on the new stream.

A pause (`pause`) stops the pushes and gives back every job leased to this worker id but those kept:
jobs pushed before the jobstore saw the pause, which this end drops unread. `close` says goodbye: a pause,
then the end of this half of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from .futures import retrieve
from .v1 import jobstore_pb2 as pb
from .v1 import jobstore_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# The jobstore allows this many jobs granted and not yet pushed, and held unfinished, together: a worker
# grants only its free slots, so one with at most 1,000 slots stays within it.
MAX_CREDIT = 1000
REQUEST_TIMEOUT_S = 10.0
MAX_COMPLETIONS = 500  # items of one complete_many (as CompleteMany)


class SessionError(grpc.aio.AioRpcError):
    """A request refused (its ack's code), or lost with its stream (UNAVAILABLE)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


class WorkSession:
    def __init__(self, stub: pb_grpc.JobStoreAsyncStub, worker_id: str, job_types: Iterable[str], lease_ms: int, *,
                 on_jobs: Callable[[list[pb.ClaimedJob]], None], on_cancel: Callable[[str], None] = lambda _id: None,
                 on_broken: Callable[[int, grpc.StatusCode, str], None] | None = None,
                 on_open: Callable[[int], None] | None = None, backoff_cap_s: float = 5.0) -> None:
        self._stub = stub
        self._hello = pb.WorkHello(worker_id=worker_id, job_types=list(job_types), lease_ms=lease_ms)
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        # Told of each failed or broken stream (failures in a row, status), and of each opened (failures before).
        self._on_broken = on_broken if on_broken is not None else self._log_broken
        self._on_open = on_open if on_open is not None else self._log_open
        self._backoff_cap_s = backoff_cap_s
        self.outstanding = 0  # credit granted and not used by a push
        self._unsent_credit = 0  # granted, to go with the next message
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[pb.WorkAck]] = {}
        self._pausing: int | None = None  # the pause in flight: pushes until its answer are dropped
        self._call: Any = None
        self.connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._credit_tasks: set[asyncio.Future[None]] = set()
        self._credit_flush = False  # a credit message is on its way to the write lock
        self._completions: list[tuple[pb.CompleteRequest, asyncio.Future[pb.WorkAck]]] = []
        # Completion messages on their way to the stream, by a number of their own: credit waits for them.
        self._completions_unwritten: dict[int, pb.WorkRequest] = {}
        self._completion_numbers = itertools.count()
        self.connects = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="work-session")

    async def stop(self) -> None:
        """End at once (no goodbye): the jobs in hand keep their leases."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending("the session was stopped", grpc.StatusCode.CANCELLED)

    async def close(self, keep: Iterable[str] = (), timeout: float = 5.0) -> list[str]:
        """Goodbye: give back what was pushed and not taken, end the stream; the jobs given back."""
        released: list[str] = []
        if not self.connected.is_set():  # nobody to say it to: the jobs' leases run out
            await self.stop()
            return released
        try:
            released = await self.pause(keep, timeout=timeout)
            self._closing = True
            if self._call is not None:
                async with self._write_lock:
                    await self._call.done_writing()
            if self._task is not None:
                async with asyncio.timeout(timeout):  # the jobstore answers what is left, then ends
                    await asyncio.shield(self._task)
        except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError) as exc:
            log.warning("work session: no clean goodbye (%s)", exc)
        await self.stop()
        return released

    # --- credit and requests -----------------------------------------------------------------------

    def grant(self, slots: int, *, flush: bool = False) -> None:
        """Let the jobstore push this many more jobs (flush: send what was granted and is still unsent)."""
        if slots <= 0 and not flush:
            return
        slots = max(0, min(slots, MAX_CREDIT - self.outstanding))
        self.outstanding += slots
        self._unsent_credit += slots
        if self.connected.is_set() and not self._credit_flush:
            # One message for the grants made until it is written, unless a request carries them first.
            self._credit_flush = True
            task = asyncio.ensure_future(self._send_credit())
            self._credit_tasks.add(task)
            task.add_done_callback(self._credit_tasks.discard)

    async def _send_credit(self) -> None:
        with contextlib.suppress(SessionError):  # a broken stream: the credit goes with the next hello
            await self._send(pb.WorkRequest())

    async def heartbeat(self, request: pb.HeartbeatRequest, timeout: float = REQUEST_TIMEOUT_S) -> pb.WorkAck:
        return await self._request(pb.WorkRequest(heartbeat=request), timeout)

    async def complete(self, request: pb.CompleteRequest, timeout: float = REQUEST_TIMEOUT_S) -> pb.WorkAck:
        """Completions asked for in one turn of the event loop go as one message (complete_many) with one
        answer: a busy worker's per-message cost is paid once per batch, not per job."""
        future: asyncio.Future[pb.WorkAck] = asyncio.get_running_loop().create_future()
        future.add_done_callback(retrieve)  # its caller may have given up waiting (a timeout)
        self._completions.append((request, future))
        if len(self._completions) == 1:
            asyncio.get_running_loop().call_soon(self._send_completions, timeout)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise SessionError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:g} s") from None

    def _send_completions(self, timeout: float) -> None:
        batch, self._completions = self._completions[:MAX_COMPLETIONS], self._completions[MAX_COMPLETIONS:]
        if self._completions:
            asyncio.get_running_loop().call_soon(self._send_completions, timeout)
        if len(batch) == 1:
            message = pb.WorkRequest(complete=batch[0][0])
        else:
            message = pb.WorkRequest(complete_many=pb.CompleteManyRequest(jobs=[request for request, _ in batch]))
        # Credit granted until it is written goes with it, not in a message of its own (see _write).
        key = next(self._completion_numbers)
        self._completions_unwritten[key] = message
        task = asyncio.ensure_future(self._complete_batch(message, batch, timeout))
        self._credit_tasks.add(task)
        task.add_done_callback(self._credit_tasks.discard)
        task.add_done_callback(lambda _: self._completion_ended(key))

    def _completion_ended(self, key: int) -> None:
        """A completion's task has ended. If its message was never written (the task failed or was cancelled
        first), credit held back for it is still unsent: it is flushed now."""
        self._completions_unwritten.pop(key, None)
        if self._unsent_credit and not self._completions_unwritten and not self._credit_flush:
            self.grant(0, flush=True)

    async def _complete_batch(self, message: pb.WorkRequest,
                              batch: list[tuple[pb.CompleteRequest, asyncio.Future[pb.WorkAck]]],
                              timeout: float) -> None:
        try:
            ack = await self._request(message, timeout)
            if len(batch) == 1:
                acks = [ack]
            else:
                acks = [pb.WorkAck(code="" if o.completed else o.error_code, message=o.error_message)
                        for o in ack.outcomes]
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), ack in zip(batch, acks, strict=True):
            if future.done():
                continue
            if ack.code:
                future.set_exception(SessionError(_code(ack.code), ack.message))
            else:
                future.set_result(ack)

    async def complete_with_artifact(self, request: pb.CompleteWithArtifactRequest,
                                     timeout: float = REQUEST_TIMEOUT_S) -> pb.WorkAck:
        return await self._request(pb.WorkRequest(complete_with_artifact=request), timeout)

    async def fail(self, request: pb.FailRequest, timeout: float = REQUEST_TIMEOUT_S) -> pb.WorkAck:
        return await self._request(pb.WorkRequest(fail=request), timeout)

    async def release(self, request: pb.ReleaseRequest, timeout: float = REQUEST_TIMEOUT_S) -> pb.WorkAck:
        return await self._request(pb.WorkRequest(release=request), timeout)

    async def pause(self, keep: Iterable[str] = (), timeout: float = REQUEST_TIMEOUT_S) -> list[str]:
        """No more pushes until new credit; every job leased to this worker id but `keep` goes back."""
        self.outstanding = 0
        self._unsent_credit = 0
        ack = await self._request(pb.WorkRequest(pause=pb.WorkPause(keep_job_ids=list(keep))), timeout, pause=True)
        return list(ack.released_job_ids)

    async def _request(self, request: pb.WorkRequest, timeout: float, *, pause: bool = False) -> pb.WorkAck:
        try:
            return await self._exchange(request, timeout, pause=pause)
        except TimeoutError:
            raise SessionError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:g} s") from None

    async def _exchange(self, request: pb.WorkRequest, timeout: float, *, pause: bool) -> pb.WorkAck:
        async with asyncio.timeout(timeout):
            await self.connected.wait()
            self._next_id += 1
            request.request_id = self._next_id
            future: asyncio.Future[pb.WorkAck] = asyncio.get_running_loop().create_future()
            self._pending[request.request_id] = future
            try:
                if pause:
                    self._pausing = request.request_id
                await self._send(request)
                ack = await future
            finally:
                self._pending.pop(request.request_id, None)
                if pause and self._pausing == request.request_id:
                    self._pausing = None
        if ack.code:
            raise SessionError(_code(ack.code), ack.message)
        return ack

    async def _send(self, request: pb.WorkRequest) -> None:
        # Shielded: a caller cancelled during the write (a request's timeout, a job's heartbeat task
        # stopped as its job ends) must not cancel the write itself, because grpc answers a write
        # cancelled mid-way by cancelling the whole call: the session's stream, for every request.
        write = asyncio.ensure_future(self._write(request))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            write.add_done_callback(retrieve)  # its failure, if any, went to nobody: not logged as lost
            raise

    async def _write(self, request: pb.WorkRequest) -> None:
        async with self._write_lock:
            call = self._call
            self._credit_flush = False
            if call is None:
                if request.request_id:
                    raise SessionError(grpc.StatusCode.UNAVAILABLE, "the work session is not connected")
                return  # bare credit: it goes with the next hello
            if not request.request_id and (self._completions_unwritten or self._completions):
                return  # a completion is on its way to the stream: the credit goes with it
            for key, message in list(self._completions_unwritten.items()):
                if message is request:  # written now, with the credit so far
                    del self._completions_unwritten[key]
            request.credit = self._unsent_credit
            if not request.request_id and not request.credit:
                return  # its credit went with another message
            self._unsent_credit = 0
            try:
                await call.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                # Its credit is in `outstanding`, which the next stream's hello grants again.
                raise SessionError(grpc.StatusCode.UNAVAILABLE, f"the work session broke ({exc})") from None
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                # Nobody cancels this write: grpc raises CancelledError for a call cancelled under it (the
                # session's own _run does so when the stream ends). For the caller, a broken session.
                raise SessionError(grpc.StatusCode.UNAVAILABLE, "the work session's call was cancelled") from None

    # --- the stream ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            call = self._stub.Work(None)
            try:
                async with self._write_lock:
                    sent = self.outstanding  # the new stream's count starts from nothing
                    self._unsent_credit = 0
                    await call.write(pb.WorkRequest(hello=self._hello, credit=sent))
                    self._call = call
                self.connected.set()
                if self._unsent_credit:  # granted while the hello was on its way
                    await self._send_credit()
                self.connects += 1
                self._on_open(failures)
                failures = 0
                async for response in call:
                    self._dispatch(response)
                if self._closing:
                    return
                status = grpc.StatusCode.UNAVAILABLE, "the jobstore ended the work session"
            except grpc.aio.AioRpcError as exc:
                status = exc.code(), exc.details() or exc.code().name
            except asyncio.CancelledError:
                call.cancel()
                current = asyncio.current_task()
                if self._closing or (current is not None and current.cancelling()):
                    raise  # stop(): this task was cancelled
                # The call was cancelled under us (grpc cancels a call whose write was cancelled), not
                # this task: a stream like any broken one, opened again.
                status = grpc.StatusCode.CANCELLED, "the work session's call was cancelled"
            except Exception as exc:  # never a silent end: without this task no request is ever answered
                log.exception("work session: unexpected error; opening another")
                call.cancel()
                status = grpc.StatusCode.UNKNOWN, f"unexpected error: {exc!r}"
            finally:
                self.connected.clear()
                self._call = None
            self._fail_pending(status[1], status[0] if status[0] == grpc.StatusCode.INVALID_ARGUMENT
                               else grpc.StatusCode.UNAVAILABLE)
            if self._closing:
                return
            failures += 1
            self._on_broken(failures, *status)
            await asyncio.sleep(0 if failures == 1 else min(self._backoff_cap_s, 0.05 * 2 ** min(failures, 8)))

    @staticmethod
    def _log_broken(failures: int, code: grpc.StatusCode, details: str) -> None:
        if failures == 1 or code != grpc.StatusCode.UNAVAILABLE:
            log.warning("work session ended (%s: %s); opening another", code.name, details)

    @staticmethod
    def _log_open(failures: int) -> None:
        if failures:
            log.info("work session open again after %d failed attempt(s)", failures)

    def _fail_pending(self, details: str, code: grpc.StatusCode) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(SessionError(code, details))

    def _dispatch(self, response: pb.WorkResponse) -> None:
        kind = response.WhichOneof("kind")
        if kind == "ack":
            future = self._pending.get(response.request_id)
            if future is not None and not future.done():
                future.set_result(response.ack)
        elif kind == "jobs":
            if self._pausing is not None:
                return  # pushed before the pause was seen: the pause gives them back
            jobs = list(response.jobs.jobs)
            self.outstanding = max(0, self.outstanding - len(jobs))
            self._on_jobs(jobs)
        elif kind == "cancelled_job_id":
            self._on_cancel(response.cancelled_job_id)
