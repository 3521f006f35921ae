"""The gateway's calls to the jobstore, at most DOCJOBS_JOBSTORE_MAX_INFLIGHT in flight at once.

Thousands of browsers can open their event streams in the same second (a gateway restart makes every
EventSource reconnect at once), and each opening is a call to the jobstore. gRPC's HTTP/2 transport
refuses part of a burst of ~2,000 calls started at once on one connection: those calls end CANCELLED,
the gateway answered 502, and an EventSource that gets a 502 gives up for good. So calls beyond the bound
wait their turn here, before any call object exists (a waiting opening holds no gRPC state: after a
burst of 5,000 openings, 19 KiB per open stream against 21 KiB with an interceptor, which creates the
call and a task first, then waits).

The gateway's one live event stream (the hub's WatchAllJobs) uses the channel's plain stub: it
lasts as long as the process and is not counted.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Gauge

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

Request = TypeVar("Request")
Response = TypeVar("Response")


def deadline_exceeded(details: str) -> grpc.aio.AioRpcError:
    """The error a call past its deadline ends with, for a deadline kept here rather than by gRPC."""
    return grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class BoundedStub:
    """The JobStore calls the gateway makes, each awaited. Watch returns the call, whose slot is given back
    when it ends (read to the end, failed or cancelled: a history read, short); open_watch and
    DownloadArtifact return theirs once the jobstore has taken it."""

    def __init__(self, stub: pb_grpc.JobStoreAsyncStub, limit: int, *, in_flight: Gauge, waiting: Gauge,
                 queued: Counter, timeout_s: float = 30.0) -> None:
        self._stub = stub
        self.limit = limit
        # The deadline of a unary call, of a history read, of the wait for a slot and of a long call's
        # opening: a jobstore that stops answering (a hung process) costs a caller a 504, and frees its
        # slot, instead of holding both for as long as the connection looks open.
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(limit)
        self._in_flight = in_flight  # calls holding a slot
        self._waiting = waiting  # calls waiting for one now
        self._queued = queued  # calls that had to wait, ever: the bound was reached

    async def _acquire(self) -> None:
        """Take a slot; the wait for one has the calls' deadline too (when the jobstore hangs, the slots
        can be held by calls that are themselves waiting out theirs: a caller gets its 504 within twice
        the deadline, however many wait)."""
        if self._slots.locked():
            self._queued.inc()
            self._waiting.inc()
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise deadline_exceeded(f"no call to the jobstore could start within {self.timeout_s:g} s "
                                        "(every slot was taken)") from None
            finally:
                self._waiting.dec()
        else:
            await self._slots.acquire()
        self._in_flight.inc()

    def _release(self, _call: Any = None) -> None:
        self._in_flight.dec()
        self._slots.release()

    async def _unary(self, method: grpc.aio.UnaryUnaryMultiCallable[Request, Response], request: Request) -> Response:
        await self._acquire()
        try:
            return await method(request, timeout=self.timeout_s)
        finally:
            self._release()

    async def _stream(self, method: grpc.aio.UnaryStreamMultiCallable[Request, Response],
                      request: Request) -> grpc.aio.UnaryStreamCall[Request, Response]:
        await self._acquire()
        try:
            call = method(request, timeout=self.timeout_s)  # a history read: short, whole within the deadline
        except BaseException:
            self._release()
            raise
        call.add_done_callback(self._release)  # however it ends: read to the end, failed or cancelled
        return call

    async def Enqueue(self, request: pb.EnqueueRequest) -> pb.EnqueueResponse:
        return await self._unary(self._stub.Enqueue, request)

    async def EnqueueMany(self, request: pb.EnqueueManyRequest) -> pb.EnqueueManyResponse:
        return await self._unary(self._stub.EnqueueMany, request)

    async def GetJob(self, request: pb.GetJobRequest) -> pb.Job:
        return await self._unary(self._stub.GetJob, request)

    async def GetJobWebhook(self, request: pb.GetJobWebhookRequest) -> pb.JobWebhook:
        return await self._unary(self._stub.GetJobWebhook, request)

    async def ListJobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return await self._unary(self._stub.ListJobs, request)

    async def Cancel(self, request: pb.CancelRequest) -> pb.Job:
        return await self._unary(self._stub.Cancel, request)

    async def GetStats(self, request: pb.GetStatsRequest) -> pb.Stats:
        return await self._unary(self._stub.GetStats, request)

    async def Retry(self, request: pb.RetryRequest) -> pb.Job:
        return await self._unary(self._stub.Retry, request)

    async def Redrive(self, request: pb.RedriveRequest) -> pb.RedriveResponse:
        return await self._unary(self._stub.Redrive, request)

    async def Watch(self, request: pb.WatchRequest) -> grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.JobEvent]:
        return await self._stream(self._stub.Watch, request)

    async def open_watch(self, request: pb.WatchRequest) -> grpc.aio.UnaryStreamCall[pb.WatchRequest, pb.JobEvent]:
        """A Watch that may stay open as long as its client (a session's stream): counted while it opens."""
        return await self._opened(self._stub.Watch, request)

    async def _opened(self, method: grpc.aio.UnaryStreamMultiCallable[Request, Response],
                      request: Request) -> grpc.aio.UnaryStreamCall[Request, Response]:
        """A server stream that may last as long as its client reads (an open session stream, a download to
        a slow reader): its slot is held while the call opens, until the jobstore has taken it (its
        initial metadata arrived, or it ended), so a burst of openings waits its turn as every call does,
        and streams already open hold no slot: a few hundred clients that never read cannot stall the
        gateway's other calls."""
        await self._acquire()
        try:
            call = method(request)
            try:
                async with asyncio.timeout(self.timeout_s):  # the call itself has no deadline: it may last
                    await call.initial_metadata()
            except TimeoutError:
                call.cancel()
                raise deadline_exceeded(f"the jobstore did not take the call within {self.timeout_s:g} s") from None
            except BaseException:
                call.cancel()
                raise
        finally:
            self._release()
        return call

    async def DownloadArtifact(self, request: pb.DownloadArtifactRequest
                               ) -> grpc.aio.UnaryStreamCall[pb.DownloadArtifactRequest, pb.DownloadArtifactResponse]:
        return await self._opened(self._stub.DownloadArtifact, request)
