"""A watcher that falls behind: each kind of Watch either re-reads the table or ends with an error to
resume from, and a gateway's clients still get every event, in order, once.

Bursts are made deterministic by the expiry of many jobs that share one expiry time: the maintenance
fails them all in one statement, so their events commit together and the event dispatcher hands them
to the subscribers in one go, more than a small buffer holds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from gateway.app import HUB
from jobstore import metrics
from jobstore.service import JobStoreService

from .conftest import new_user, wait_until
from .gateway_client import bearer, read_sse, start_gateway
from .helpers import claim, enqueue

EXPIRES_IN = dt.timedelta(seconds=1.5)


def overflows(kind: str) -> float:
    return float(metrics.WATCH_OVERFLOWS.labels(kind)._value.get())


async def enqueue_expiring(stub, user: str, count: int, session_id: str = "") -> list[pb.Job]:
    """count jobs that all expire at one instant (so in one maintenance statement)."""
    expires = pb.EnqueueRequest().expires_at
    expires.FromDatetime(dt.datetime.now(dt.UTC) + EXPIRES_IN)
    return [await enqueue(stub, user, session_id=session_id, expires_at=expires) for _ in range(count)]


async def _events_of(call) -> AsyncIterator[pb.JobEvent]:
    """The events of a Watch, or of a WatchAllJobs (several to a message)."""
    async for message in call:
        if isinstance(message, pb.JobEventBatch):
            for event in message.events:
                yield event
        else:
            yield message


async def stored_events(stub, job_id: str) -> list[pb.JobEvent]:
    return [e async for e in stub.Watch(pb.WatchRequest(job_id=job_id, history_only=True))]


async def test_a_job_watch_that_falls_behind_rereads_the_table_and_loses_nothing(jobstore_factory) -> None:
    running = await jobstore_factory(watch_buffer=2)
    stub, server = running.stub, running.server
    job = await enqueue(stub, new_user())
    before = overflows("job")
    # The watch is read here, in-process, so the test decides when its reader runs: not while the
    # events arrive, which is what a slow client does to its stream.
    events = server.watches.job(uuid.UUID(job.id), None, 0)
    received = [await anext(events)]  # the pending event; the watch is subscribed now
    [claimed] = await claim(stub)
    for step in range(1, 7):
        await stub.Heartbeat(pb.HeartbeatRequest(job_id=job.id, lease_token=claimed.lease_token, progress=step * 10))
    await wait_until(lambda: server.dispatcher.overflows > 0)  # 7 live events for a buffer of 2
    await stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed.lease_token, result_json="{}"))
    async with asyncio.timeout(10):
        received += [event async for event in events]
    assert [e.id for e in received] == [e.id for e in await stored_events(stub, job.id)]
    assert received[-1].kind == pb.EVENT_KIND_COMPLETED and len(received) == 9
    assert overflows("job") == before + 1


@pytest.mark.parametrize("kind", ["scope", "all_jobs", "all_jobs_one_by_one"])
async def test_a_scope_or_all_jobs_watch_that_falls_behind_ends_unavailable_and_resumes(jobstore_factory,
                                                                                         kind: str) -> None:
    running = await jobstore_factory(watch_buffer=2, all_jobs_watch_buffer=2)
    stub = running.stub
    user = new_user()
    label = "all_jobs" if kind.startswith("all_jobs") else kind
    before = overflows(label)
    jobs = await enqueue_expiring(stub, user, 8)  # before the watch: 8 pending events in the table
    # ... and handed out already, so that they reach the watch from the table, not as live events.
    await wait_until(lambda: running.server.dispatcher.settled >= max(j.last_event_id for j in jobs))
    if kind == "scope":
        call = stub.Watch(pb.WatchRequest(user_id=user), timeout=30)
    elif kind == "all_jobs":
        call = stub.WatchAllJobs(pb.WatchAllJobsRequest(), timeout=30)
    else:  # the one-by-one form, for gateways older than WatchAllJobs
        call = stub.Watch(pb.WatchRequest(all_jobs=True), timeout=30)
    received: list[pb.JobEvent] = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for event in _events_of(call):  # (a watch gone silent ends with DEADLINE_EXCEEDED below)
            if event.marker:
                assert event.marker == pb.WATCH_MARKER_SUBSCRIBED and kind.startswith("all_jobs")
                continue
            received.append(event)
    # 8 failed events at once for a buffer of 2: the stream ended, saying how to go on.
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "watch again from the last event id received" in (failure.value.details() or "")
    assert overflows(label) == before + 1
    if kind == "scope":  # the client resumes where it was and gets the rest, each event once
        assert [e.status for e in received] == [pb.JOB_STATUS_PENDING] * 8
        resumed = stub.Watch(pb.WatchRequest(user_id=user, after_event_id=received[-1].id))
        async for event in resumed:
            received.append(event)
            if len(received) == 16:
                resumed.cancel()
                break
        ids = [e.id for e in received]
        assert len(set(ids)) == 16
        assert {e.job_id for e in received if e.kind == pb.EVENT_KIND_FAILED} == {j.id for j in jobs}


async def test_sse_clients_get_every_event_once_when_the_gateways_own_watch_falls_behind(jobstore_factory) -> None:
    """The gateway's one all-jobs Watch overflows; the jobstore ends it, the hub watches again, and every
    open stream re-reads its job: each client still gets pending then job-failed, once, in order."""
    running = await jobstore_factory(all_jobs_watch_buffer=2)
    gateway = await start_gateway(running.address)
    try:
        hub = gateway.runner.app[HUB]
        await wait_until(lambda: hub.live.is_set())
        connections = hub.connections
        before = overflows("all_jobs")
        user = new_user()
        jobs = await enqueue_expiring(running.stub, user, 12)
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):  # a silent stream fails, not hangs
            streams = await asyncio.gather(*(
                read_sse(http, f"{gateway.base}/api/jobs/{job.id}/events", headers=bearer(user)) for job in jobs))
        for job, stream in zip(jobs, streams, strict=True):
            assert [e.name for e in stream.events] == ["status", "job-failed"], job.id
            assert stream.events[1].data["error"]["code"] == "expired"
            assert [e.id for e in stream.events] == [e.id for e in await stored_events(running.stub, job.id)]
        assert overflows("all_jobs") >= before + 1  # the path under test was taken
        assert hub.connections > connections  # ... and the hub watched again
    finally:
        await gateway.stop()


async def test_a_gateway_on_a_jobstore_older_than_watch_all_jobs_falls_back_to_one_event_a_message(
        jobstore_factory, monkeypatch) -> None:
    """A jobstore without WatchAllJobs (not upgraded yet, or rolled back): the gateway's hub watches with
    Watch(all_jobs) instead, and its streams get their events live."""
    async def unimplemented(self: Any, request: Any, context: Any) -> AsyncIterator[pb.JobEventBatch]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield pb.JobEventBatch()  # never reached: an async generator, as the real handler is

    monkeypatch.setattr(JobStoreService, "WatchAllJobs", unimplemented)
    running = await jobstore_factory()
    gateway = await start_gateway(running.address)
    try:
        hub = gateway.runner.app[HUB]
        await wait_until(lambda: hub.live.is_set())  # set only by a SUBSCRIBED marker: the fallback's
        user = new_user()
        job = await enqueue(running.stub, user)
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            reader = asyncio.create_task(read_sse(http, f"{gateway.base}/api/jobs/{job.id}/events",
                                                  headers=bearer(user)))
            [claimed] = await claim(running.stub)
            await running.stub.Complete(pb.CompleteRequest(job_id=job.id, lease_token=claimed.lease_token,
                                                           result_json="{}"))
            stream = await reader
        assert [e.name for e in stream.events][-1] == "job-complete"
        assert [e.id for e in stream.events] == [e.id for e in await stored_events(running.stub, job.id)]
        assert hub.connections == 1  # one watch, never broken
    finally:
        await gateway.stop()
