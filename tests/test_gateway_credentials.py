"""Credentials over time: a job's stream ends when the token it was opened with expires, and a page whose
signed URL expired gets a fresh one without submitting a job (GET /api/jobs/{jobId} for a job's
eventsUrl, GET /api/events/url for a sessionEventsUrl). Over real HTTP, against a real jobstore."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.app import HUB

from .conftest import new_user, wait_until
from .gateway_client import SseStream, bearer, start_gateway, token
from .renderers import example
from .test_gateway_service import service_token
from .test_session_events import follow, run_job


def expiry(url: str) -> int:
    return int(jwt.decode(url.split("token=")[1], options={"verify_signature": False})["exp"])


async def post(http, gateway, user: str, session: str = "chat") -> dict[str, str]:
    async with http.post(gateway.base + "/api/jobs", json={**example("pdf"), "sessionId": session},
                         headers=bearer(user)) as r:
        assert r.status == 202, await r.text()
        return dict(await r.json())


@pytest.mark.parametrize("signed", [False, True], ids=["bearer", "url-token"])
async def test_a_job_stream_ends_when_its_token_expires_and_sends_nothing_after(
        http, jobstore, stub, signed) -> None:
    gateway = await start_gateway(jobstore.address, url_token_ttl_s=3)  # heartbeats every 0.5 s
    try:
        user = new_user()
        job = await post(http, gateway, user)
        if signed:
            url, headers, expires = gateway.base + job["eventsUrl"], {}, expiry(job["eventsUrl"])
        else:
            expires = int(time.time()) + 3
            url = f"{gateway.base}/api/jobs/{job['jobId']}/events"
            headers = {"Authorization": f"Bearer {token(user, exp=expires)}"}
        stream = SseStream()
        reader = asyncio.create_task(follow(http, url, stream, headers=headers))
        await wait_until(lambda: len(stream.events) >= 1, timeout=10)
        await wait_until(lambda: time.time() >= expires + 0.05, timeout=10)
        await run_job(stub, job["jobId"])  # completes once the stream's token has expired
        assert await asyncio.wait_for(reader, 10) == 200  # the stream ended by itself, before the job did
        assert [e.name for e in stream.events] == ["status"], stream.events
        await wait_until(lambda: gateway.runner.app[HUB].stream_count == 0, timeout=10)
        assert await follow(http, url, SseStream(), headers=headers) == 401
    finally:
        await gateway.stop()


async def test_an_expired_job_url_is_refused_and_reading_the_job_gives_a_fresh_one(http, jobstore, stub) -> None:
    gateway = await start_gateway(jobstore.address, url_token_ttl_s=1)
    try:
        user = new_user()
        job = await post(http, gateway, user)
        await wait_until(lambda: time.time() >= expiry(job["eventsUrl"]), timeout=10)
        assert await follow(http, gateway.base + job["eventsUrl"], SseStream()) == 401
        for headers in (bearer(user), service_token()):  # the user's page, or its backend for it
            async with http.get(f"{gateway.base}/api/jobs/{job['jobId']}", headers=headers) as r:
                assert r.status == 200
                fresh = (await r.json())["eventsUrl"]
            assert expiry(fresh) > time.time()
            stream = SseStream()
            assert await asyncio.wait_for(follow(http, gateway.base + fresh, stream,
                                                 until=lambda s: len(s.events) >= 1), 10) == 200
            assert stream.events[0].data["jobId"] == job["jobId"]
    finally:
        await gateway.stop()


async def test_an_expired_session_url_is_refused_and_the_url_route_gives_a_fresh_one(http, jobstore) -> None:
    gateway = await start_gateway(jobstore.address, url_token_ttl_s=1)
    try:
        alice, mallory = new_user(), new_user()
        job = await post(http, gateway, alice, "chat a/b")
        other = await post(http, gateway, alice, "chat-2")
        await wait_until(lambda: time.time() >= expiry(job["sessionEventsUrl"]), timeout=10)
        assert await follow(http, gateway.base + job["sessionEventsUrl"], SseStream()) == 401

        async def fresh_url(query: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
            async with http.get(f"{gateway.base}/api/events/url{query}", headers=headers) as r:
                return r.status, await r.json()

        for query, headers in (("?sessionId=chat%20a%2Fb", bearer(alice)),
                               (f"?sessionId=chat%20a%2Fb&userId={alice}", service_token())):
            status, answer = await fresh_url(query, headers)
            assert status == 200, answer
            url = answer["sessionEventsUrl"]
            assert url.startswith("/api/events?sessionId=chat%20a%2Fb&token=") and expiry(url) > time.time()
            stream = SseStream()
            assert await asyncio.wait_for(follow(http, gateway.base + url, stream, headers={
                "Last-Event-ID": "0"}, until=lambda s: len(s.events) >= 1), 10) == 200
            assert {e.data["jobId"] for e in stream.events} == {job["jobId"]}  # that session's only
        # Without a session: every job of the user.
        status, answer = await fresh_url("", bearer(alice))
        assert status == 200 and answer["sessionEventsUrl"].startswith("/api/events?token=")
        stream = SseStream()
        await asyncio.wait_for(follow(http, gateway.base + answer["sessionEventsUrl"], stream,
                                      until=lambda s: len(s.events) >= 2), 10)
        assert {e.data["jobId"] for e in stream.events} == {job["jobId"], other["jobId"]}
        # Only a bearer token gets one: not the URL token (expired or not), not another user, not nobody.
        assert (await fresh_url("?" + job["sessionEventsUrl"].split("?")[1], {}))[0] == 401
        assert (await fresh_url(f"?userId={alice}", bearer(mallory)))[0] == 403
        assert (await fresh_url("?sessionId=chat-2", service_token()))[0] == 400
        assert (await fresh_url("?sessionId=" + "x" * 201, bearer(alice)))[0] == 400
    finally:
        await gateway.stop()


CLIENT = Path(__file__).resolve().parent.parent / "services" / "gateway" / "static" / "client" / "docjobs.js"
# The browser client under node (its fetch and streams are the browser's): a session watch on a bearer
# token, with refreshToken; one JSON line per event, refresh and error.
WATCHER = """
import { watchSession } from %(client)s;
const say = (line) => process.stdout.write(JSON.stringify(line) + "\\n");
watchSession({ gateway: process.env.GATEWAY, token: process.env.FIRST, sessionId: "chat",
               refreshToken: async () => { say({ refreshed: true }); return process.env.FRESH; } },
             { onEvent: (e) => say({ id: e.id, jobId: e.jobId, type: e.type }),
               onError: (err) => say({ error: err.status }) });
"""


async def test_the_client_resumes_with_a_fresh_token_when_its_stream_ends_at_expiry(http, jobstore) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing (Debian's nodejs package)")
    gateway = await start_gateway(jobstore.address)
    user = new_user()
    expires = int(time.time()) + 3
    process = await asyncio.create_subprocess_exec(
        node, "--input-type=module", "-e", WATCHER % {"client": json.dumps(CLIENT.as_uri())},
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "GATEWAY": gateway.base, "FIRST": token(user, exp=expires),
                                             "FRESH": token(user)})
    stdout = process.stdout
    assert stdout is not None
    lines: list[dict[str, Any]] = []

    async def until(predicate: Callable[[dict[str, Any]], bool]) -> None:
        async with asyncio.timeout(20):
            while not any(predicate(line) for line in lines):
                lines.append(json.loads(await stdout.readline()))

    try:
        first = await post(http, gateway, user)
        await until(lambda line: line.get("jobId") == first["jobId"])
        await wait_until(lambda: time.time() >= expires + 0.05, timeout=10)
        later = await post(http, gateway, user)  # after the first token expired
        await until(lambda line: line.get("jobId") == later["jobId"])
    finally:
        process.kill()
        await process.wait()
        await gateway.stop()
    assert {"refreshed": True} in lines and not any("error" in line for line in lines), lines
    events = [line for line in lines if "id" in line]
    ids = [int(line["id"]) for line in events]
    assert ids == sorted(set(ids)), ids  # resumed after the last event: nothing twice
    assert lines.index({"refreshed": True}) < lines.index(events[-1])
