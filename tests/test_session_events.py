"""GET /api/events: one stream for every job of a session (or of a user), over real HTTP, against a real
jobstore, with jobs driven through the jobstore's own API (or a real renderer where a job must finish)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import pytest

from docjobs.channels import jobstore_channel
from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from gateway.app import HUB

from .conftest import GRPC_TOKEN, new_user, wait_until
from .gateway_client import SseEvent, SseStream, bearer, sse_events, start_gateway, token
from .helpers import collect_events
from .renderers import RendererProcess, example
from .test_gateway_service import service_token

TERMINAL = ("job-complete", "job-failed")


async def post(http, gateway, user: str, session: str, job_type: str = "pdf") -> dict[str, Any]:
    async with http.post(gateway.base + "/api/jobs", json={**example(job_type), "sessionId": session},
                         headers=bearer(user)) as r:
        assert r.status == 202, await r.text()
        return await r.json()


async def follow(http: aiohttp.ClientSession, url: str, stream: SseStream, *, headers: dict[str, str] | None = None,
                 until: Callable[[SseStream], bool] = lambda s: False) -> int:
    """Read a stream into `stream` until `until` holds or the stream ends; the status it answered."""
    async with http.get(url, headers=headers or {}) as response:
        stream.headers = dict(response.headers)
        if response.status != 200:
            return response.status
        async for event in sse_events(response, stream):
            stream.events.append(event)
            if until(stream):
                break
    return 200


def finished(jobs: set[str]) -> Callable[[SseStream], bool]:
    return lambda s: {e.data["jobId"] for e in s.events if e.name in TERMINAL} >= jobs


async def run_job(stub, job_id: str, progress: int = 50) -> None:
    """Claim the job (whichever pdf job is due is taken, so callers run one at a time), report, complete."""
    reply = await stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["pdf"], max_jobs=1, wait_ms=5000))
    [claimed] = reply.jobs
    assert claimed.job.id == job_id
    await stub.Heartbeat(pb.HeartbeatRequest(job_id=job_id, lease_token=claimed.lease_token, progress=progress))
    await stub.Complete(pb.CompleteRequest(job_id=job_id, lease_token=claimed.lease_token, result_json="{}"))


def assert_increasing(events: list[SseEvent]) -> None:
    ids = [e.id for e in events if e.id is not None]
    assert len(ids) == len(events) and ids == sorted(ids) and len(set(ids)) == len(ids), ids


async def test_a_session_stream_carries_every_job_of_the_session_and_only_those(
        http, gateway, jobstore, tmp_path) -> None:
    user = new_user()
    first = await post(http, gateway, user, "chat-1", "spreadsheet")
    second = await post(http, gateway, user, "chat-1", "document")
    other = await post(http, gateway, user, "chat-2", "pdf")
    url = gateway.base + first["sessionEventsUrl"]  # signed: no header, as EventSource sends none
    stream = SseStream()
    late: dict[str, Any] = {}
    reader = asyncio.create_task(follow(http, url, stream, until=lambda s: bool(late) and finished(
        {first["jobId"], second["jobId"], late["jobId"]})(s)))
    await wait_until(lambda: len(stream.events) >= 2, timeout=10)  # both jobs' first events: the stream is open
    late.update(await post(http, gateway, user, "chat-1", "pdf"))  # created after the stream opened
    renderer = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    try:
        assert await asyncio.wait_for(reader, 60) == 200
    finally:
        await renderer.shutdown()
    assert stream.headers["Content-Type"].startswith("text/event-stream") and stream.retry == 3000
    assert_increasing(stream.events)
    assert {e.data["jobId"] for e in stream.events} == {first["jobId"], second["jobId"], late["jobId"]}
    assert other["jobId"] not in {e.data["jobId"] for e in stream.events}
    for job in (first, second, late):
        names = [e.name for e in stream.events if e.data["jobId"] == job["jobId"]]
        assert names[:2] == ["status", "status"] and names[-1] == "job-complete", names
    complete = next(e for e in stream.events if e.name == "job-complete" and e.data["jobId"] == first["jobId"])
    async with http.get(gateway.base + complete.data["result"]["downloadUrl"]) as r:  # signed for the user
        assert r.status == 200 and r.headers["Content-Disposition"].startswith("attachment")
    # The same events again, resumed from the middle: exactly the rest, by header or by query.
    middle = stream.events[len(stream.events) // 2]
    expected = stream.events[stream.events.index(middle) + 1:]
    for query, headers in (("", {"Last-Event-ID": str(middle.id)}), (f"&lastEventId={middle.id}", {})):
        rest = SseStream()
        await asyncio.wait_for(follow(http, url + query, rest, headers=headers,
                                      until=lambda s: len(s.events) >= len(expected)), 10)
        assert [e.id for e in rest.events] == [e.id for e in expected]


async def test_the_stream_stays_open_after_every_job_ended_and_counts_as_one(http, jobstore) -> None:
    gateway = await start_gateway(jobstore.address, sse_streams_per_user=1)
    try:
        user = new_user()
        job = await post(http, gateway, user, "s")
        async with http.delete(f"{gateway.base}/api/jobs/{job['jobId']}", headers=bearer(user)) as r:
            assert r.status == 200
        url = gateway.base + job["sessionEventsUrl"]
        async with http.get(url) as response:
            events, comments = [], 0
            async with asyncio.timeout(10):
                async for line in response.content:  # the job's two events, then heartbeats
                    comments += line.startswith(b": heartbeat")
                    events += [line[6:].strip().decode()] if line.startswith(b"event:") else []
                    if comments == 2:
                        break
        assert events == ["status", "job-failed"]
        # While it is open, it is the user's one stream: another is refused.
        async with http.get(url) as held:
            assert held.status == 200
            await anext(sse_events(held))
            async with http.get(url) as refused:
                assert refused.status == 429
        await wait_until(lambda: gateway.runner.app[HUB].stream_count == 0, timeout=10)
    finally:
        await gateway.stop()


async def test_who_may_open_which_session_stream(http, gateway) -> None:
    alice, mallory = new_user(), new_user()
    job = await post(http, gateway, alice, "chat a/b?&")  # a session id that needs encoding
    assert job["sessionEventsUrl"].startswith(f"/api/events?sessionId={quote('chat a/b?&', safe='')}&token=")
    other = await post(http, gateway, alice, "chat-2")
    token = job["sessionEventsUrl"].split("&token=")[1]

    async def first_events(path: str, headers: dict[str, str] | None = None,
                           count: int = 1) -> tuple[int, list[SseEvent]]:
        stream = SseStream()
        status = await asyncio.wait_for(follow(http, gateway.base + path, stream, headers=headers,
                                               until=lambda s: len(s.events) >= count), 10)
        return status, stream.events

    status, events = await first_events(job["sessionEventsUrl"])
    assert status == 200 and events[0].data["jobId"] == job["jobId"]
    # The session's token is for that session only.
    assert (await first_events(f"/api/events?sessionId=chat-2&token={token}"))[0] == 401
    assert (await first_events(f"/api/events?token={token}"))[0] == 401
    # A job's link token is not a session's, and a session's is not a bearer token.
    job_token = job["eventsUrl"].split("?token=")[1]
    assert (await first_events(f"/api/events?token={job_token}"))[0] == 401
    assert (await first_events("/api/events", {"Authorization": f"Bearer {token}"}))[0] == 401
    assert (await first_events("/api/events"))[0] == 401
    # A user's bearer token: its own jobs, all sessions or one.
    status, events = await first_events("/api/events", bearer(alice), count=2)
    assert status == 200 and {e.data["jobId"] for e in events} == {job["jobId"], other["jobId"]}
    status, events = await first_events("/api/events?sessionId=chat-2", bearer(alice))
    assert status == 200 and [e.data["jobId"] for e in events] == [other["jobId"]]
    async with http.get(gateway.base + "/api/events?sessionId=chat-2", headers=bearer(mallory)) as response:
        async with asyncio.timeout(10):
            lines = [await response.content.readline() for _ in range(4)]
    assert lines == [b"retry: 3000\n", b"\n", b": heartbeat\n", b"\n"]  # mallory's session chat-2 has nothing
    assert (await first_events(f"/api/events?userId={alice}", bearer(mallory)))[0] == 403
    # A service names the user.
    assert (await first_events("/api/events?sessionId=chat-2", service_token()))[0] == 400
    status, events = await first_events(f"/api/events?sessionId=chat-2&userId={alice}", service_token())
    assert status == 200 and [e.data["jobId"] for e in events] == [other["jobId"]]
    assert (await first_events("/api/events?sessionId=" + "x" * 201, bearer(alice)))[0] == 400
    assert (await first_events("/api/events?lastEventId=-1", bearer(alice)))[0] == 400


async def test_a_session_stream_resumes_across_a_gateway_restart(http, jobstore, stub) -> None:
    port = free_port()
    gateway = await start_gateway(jobstore.address, http_port=port)
    user = new_user()
    jobs = [await post(http, gateway, user, "chat") for _ in range(2)]
    url = f"http://127.0.0.1:{port}{jobs[0]['sessionEventsUrl']}"
    events: list[SseEvent] = []

    async def eventsource() -> None:
        """What EventSource does: read; when the stream ends, reconnect with the last id it got."""
        while True:
            headers = {"Last-Event-ID": str(events[-1].id)} if events else {}
            try:
                async with http.get(url, headers=headers) as response:
                    if response.status == 200:
                        async for event in sse_events(response):
                            events.append(event)
                            if finished({j["jobId"] for j in jobs})(SseStream(events)):
                                return
            except (aiohttp.ClientError, ConnectionError):
                pass
            await asyncio.sleep(0.2)

    reader = asyncio.create_task(eventsource())
    try:
        await run_job(stub, jobs[0]["jobId"], progress=30)
        await wait_until(lambda: any(e.name == "job-complete" for e in events), timeout=10)
        await gateway.stop()  # the stream ends; the client comes back to the new process
        await run_job(stub, jobs[1]["jobId"], progress=60)  # while no gateway runs
        gateway = await start_gateway(jobstore.address, http_port=port)
        await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
        await gateway.stop()
    stored = [e.id for e in await collect_events(stub, pb.WatchRequest(user_id=user, session_id="chat"), count=8)]
    assert [e.id for e in events] == stored  # every event once, in order (4 per job), across the restart


async def test_a_session_stream_resumes_across_a_jobstore_restart(http, database_url) -> None:
    from .processes import JobStoreProcess

    first = JobStoreProcess(database_url).start()
    await asyncio.to_thread(first.wait_healthy)
    gateway = await start_gateway(first.address)
    second = None
    try:
        user = new_user()
        jobs = [await post(http, gateway, user, "chat") for _ in range(2)]
        stream = SseStream()
        reader = asyncio.create_task(follow(http, gateway.base + jobs[0]["sessionEventsUrl"], stream,
                                            until=finished({j["jobId"] for j in jobs})))
        async with jobstore_channel(first.address, GRPC_TOKEN) as channel:
            await run_job(pb_grpc.JobStoreStub(channel), jobs[0]["jobId"])
        await wait_until(lambda: any(e.name == "job-complete" for e in stream.events), timeout=10)
        code, _ = await asyncio.to_thread(first.terminate)
        assert code == 0
        second = JobStoreProcess(database_url, port=first.port).start()
        await asyncio.to_thread(second.wait_healthy)
        async with jobstore_channel(second.address, GRPC_TOKEN) as channel:
            stub = pb_grpc.JobStoreStub(channel)
            await run_job(stub, jobs[1]["jobId"])
            stored = [e.id for e in await collect_events(stub, pb.WatchRequest(user_id=user, session_id="chat"),
                                                         count=8)]
        assert await asyncio.wait_for(reader, 30) == 200
        assert [e.id for e in stream.events] == stored  # every event once, in order, with no reconnect
    finally:
        await gateway.stop()
        first.kill()
        if second is not None:
            second.kill()


async def test_idle_session_streams_hold_no_call_slot(http, jobstore) -> None:
    """Sixteen streams of sessions with no job yet, with DOCJOBS_JOBSTORE_MAX_INFLIGHT at 2: each Watch's
    opening waits for a slot, and gives it back once the jobstore has taken the call, so all of them open
    and the gateway's other calls still go through (a quiet Watch that kept its slot would hold both)."""
    from .helpers import scrape

    gateway = await start_gateway(jobstore.address, jobstore_max_inflight=2)
    try:
        user = new_user()
        responses = await asyncio.gather(*(http.get(f"{gateway.base}/api/events?sessionId=s{n}", headers=bearer(user))
                                           for n in range(16)))
        try:
            assert [r.status for r in responses] == [200] * 16
            await wait_until(lambda: jobstore.server.watches.open >= 1 + 16, timeout=10)  # the hub's, and theirs
            samples = await scrape(gateway.base + "/metrics")
            assert samples[("docjobs_gateway_jobstore_calls_in_flight", ())] == 0
            job = await asyncio.wait_for(post(http, gateway, user, "s3"), 10)
            first = await asyncio.wait_for(anext(sse_events(responses[3])), 10)
            assert first.data["jobId"] == job["jobId"]
        finally:
            for r in responses:
                r.close()
    finally:
        await gateway.stop()


async def test_events_committed_out_of_id_order_reach_the_session_stream_in_id_order(
        http, gateway, jobstore, database_url) -> None:
    """Event 9 commits after event 10 (two jobs of one session): the stream sends 9 first, so a client that
    got 10 and resumes after it has missed nothing."""
    import uuid

    import asyncpg

    user = new_user()
    slow, fast = [await post(http, gateway, user, "chat") for _ in range(2)]
    stream = SseStream()
    reader = asyncio.create_task(follow(http, gateway.base + slow["sessionEventsUrl"], stream,
                                        until=lambda s: len(s.events) >= 4))
    await wait_until(lambda: len(stream.events) == 2, timeout=10)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # The way every transition writes: lock the job row, then insert its event (the lower id).
            await conn.execute("UPDATE document_jobs SET updated_at = now() WHERE id = $1", uuid.UUID(slow["jobId"]))
            slow_id = await conn.fetchval(
                "INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)"
                " VALUES ($1, $2, 'chat', 'pdf', 'progress', 'pending', 1, '{\"progress\": 1}') RETURNING id",
                uuid.UUID(slow["jobId"]), user)
            # Meanwhile the other job's event takes a higher id and commits first.
            async with http.delete(f"{gateway.base}/api/jobs/{fast['jobId']}", headers=bearer(user)) as r:
                assert r.status == 200
                cancel_id = (await r.json())["lastEventId"]
            assert cancel_id > slow_id
            # The dispatcher reads a few times (every 20 ms) while the lower id is in flight.
            dispatcher = jobstore.server.dispatcher
            reads = dispatcher.reads
            await wait_until(lambda: dispatcher.reads >= reads + 5)
            assert len(stream.events) == 2  # the higher id waits for the lower one
    finally:
        await conn.close()
    assert await asyncio.wait_for(reader, 10) == 200
    assert [e.id for e in stream.events[2:]] == [slow_id, cancel_id]


@pytest.mark.parametrize("signed", [False, True], ids=["bearer", "url-token"])
async def test_a_stream_ends_when_its_token_expires_and_sends_nothing_after(http, jobstore, signed) -> None:
    """A token checked only when the stream opened would go on delivering events (and freshly signed
    hour-long download links) for as long as the stream stays open."""
    gateway = await start_gateway(jobstore.address, url_token_ttl_s=3)  # heartbeats every 0.5 s
    try:
        user = new_user()
        before = await post(http, gateway, user, "chat")
        if signed:  # the sessionEventsUrl of a POST answer, its token signed for 3 s
            url, headers = gateway.base + before["sessionEventsUrl"], {}
            expires = jwt.decode(url.split("token=")[1], options={"verify_signature": False})["exp"]
        else:
            expires = int(time.time()) + 3
            url = gateway.base + "/api/events?sessionId=chat"
            headers = {"Authorization": f"Bearer {token(user, exp=expires)}"}
        stream = SseStream()
        reader = asyncio.create_task(follow(http, url, stream, headers=headers))
        await wait_until(lambda: len(stream.events) >= 1, timeout=10)
        await wait_until(lambda: time.time() >= expires + 0.05, timeout=10)
        after = await post(http, gateway, user, "chat")  # (with a fresh token) once the stream's has expired
        assert await asyncio.wait_for(reader, 10) == 200  # the stream ended by itself
        assert {e.data["jobId"] for e in stream.events} == {before["jobId"]}, stream.events
        assert after["jobId"] not in {e.data["jobId"] for e in stream.events}
        await wait_until(lambda: gateway.runner.app[HUB].stream_count == 0, timeout=10)
        # What the client does next: the same credential is refused, a fresh one resumes after the last id.
        assert await follow(http, url, SseStream(), headers=headers) == 401
        rest = SseStream()
        assert await asyncio.wait_for(follow(http, gateway.base + "/api/events?sessionId=chat", rest, headers={
            **bearer(user), "Last-Event-ID": str(stream.events[-1].id)}, until=lambda s: len(s.events) >= 1), 10) == 200
        assert rest.events[0].data["jobId"] == after["jobId"]
    finally:
        await gateway.stop()
