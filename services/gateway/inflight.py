"""A bound on the gateway's calls in flight to the jobstore.

Thousands of browsers can open their event streams in the same second (a gateway restart makes every
EventSource reconnect at once), and each opening makes a GetJob and a short history Watch. gRPC's HTTP/2
transport refuses part of a burst of ~2,000 calls started at once on one connection: those calls end
CANCELLED, the gateway answers 502, and an EventSource that gets a 502 gives up for good. So calls beyond
DOCJOBS_JOBSTORE_MAX_INFLIGHT wait their turn here instead (a few milliseconds in such a burst).

The gateway's one live event stream (the hub's Watch of all jobs) is not counted: it lasts as long as the
process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from docjobs.v1 import jobstore_pb2 as pb


class InflightLimit:
    """The bound, shared by the channel's two interceptors (grpc.aio files an interceptor under one kind
    of call only, so one object cannot serve both)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.interceptors = [_UnaryUnary(self), _UnaryStream(self)]

    @property
    def in_flight(self) -> int:
        return self.limit - self._slots._value

    async def start(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        await self._slots.acquire()
        try:
            call = await continuation(details, request)
        except BaseException:
            self._slots.release()
            raise
        call.add_done_callback(lambda _call: self._slots.release())  # however it ends: done, failed, cancelled
        return call


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, limit: InflightLimit) -> None:
        self._limit = limit

    async def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], details: Any,
                                    request: Any) -> Any:
        return await self._limit.start(continuation, details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, limit: InflightLimit) -> None:
        self._limit = limit

    async def intercept_unary_stream(self, continuation: Callable[[Any, Any], Any], details: Any,
                                     request: Any) -> Any:
        if isinstance(request, pb.WatchRequest) and request.all_jobs:
            return await continuation(details, request)
        return await self._limit.start(continuation, details, request)
