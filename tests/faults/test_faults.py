"""Breaking things on purpose, over real processes started the way `docjobs up` starts them: every job
accepted still ends exactly once, and every client sees every event of its job exactly once."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openpyxl
import pytest

from docjobs.channels import jobstore_channel
from docjobs.pgserver import EmbeddedPostgres
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from ..conftest import GRPC_TOKEN, wait_until
from ..gateway_client import SseEvent, bearer, read_sse_like_eventsource
from ..processes import GatewayProcess, JobStoreProcess
from ..renderers import RendererProcess, example
from .invariants import check_client_saw_every_event_once, check_database

# A code job that takes about two seconds and says how far it got.
SLOW_CODE = """
import time, openpyxl
for step in range(20):
    time.sleep(0.1)
wb = openpyxl.Workbook()
wb.active["A1"] = "survived"
wb.save(output_path)
"""
FAST_JOBSTORE = {"DOCJOBS_RETRY_BASE_MS": "100", "DOCJOBS_RETRY_CAP_MS": "500", "DOCJOBS_SHUTDOWN_GRACE_S": "1"}


class Processes:
    """Every process a test starts, stopped (killed if need be) at the end, whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.all: list[Any] = []

    def jobstore(self, database_url: str, name: str = "jobstore", **env: str) -> JobStoreProcess:
        process = JobStoreProcess(database_url, env={**FAST_JOBSTORE, **env}, log_path=self.root / f"{name}.log")
        self.all.append(process)
        return process.start()

    def renderer(self, address: str, name: str, **env: str) -> RendererProcess:
        process = RendererProcess(address, self.root / name, DOCJOBS_WORKER_ID=name, **env)
        self.all.append(process)
        return process.start()

    def gateway(self, address: str, **env: str) -> GatewayProcess:
        process = GatewayProcess(address, self.root / "gateway.log", port=None, **env)
        self.all.append(process)
        return process.start()

    def stop(self) -> None:
        for process in reversed(self.all):
            process.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Any:
    running = Processes(tmp_path)
    yield running
    running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2)) as session:
        yield session


async def post_until_accepted(http: aiohttp.ClientSession, base: Callable[[], str], body: dict[str, Any], key: str,
                              user: str = "alice", timeout: float = 60.0) -> dict[str, Any]:
    """What a careful client does: POST with an Idempotency-Key, and retry the same key on 503 or a
    broken connection until the job is accepted (202)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            async with http.post(base() + "/api/jobs", json=body,
                                 headers={**bearer(user), "Idempotency-Key": key}) as response:
                if response.status == 202:
                    return dict(await response.json())
                assert response.status == 503, f"{response.status}: {await response.text()}"
                assert (await response.json())["error"]["code"] == "unavailable"
        except (TimeoutError, aiohttp.ClientConnectionError):
            pass
        assert loop.time() < deadline, "the job was never accepted"
        await asyncio.sleep(0.1)


def ids(events: list[SseEvent]) -> list[int]:
    return [e.id for e in events if e.id is not None]


def statuses(events: list[SseEvent]) -> list[str]:
    return [e.data["status"] for e in events if e.name == "status"]


async def test_a_renderer_killed_mid_render_hands_its_job_to_another(processes, http, database_url) -> None:
    jobstore = processes.jobstore(database_url)
    await asyncio.to_thread(jobstore.wait_healthy)
    gateway = processes.gateway(jobstore.address)
    await asyncio.to_thread(gateway.wait_ready)
    sandboxed = {"DOCJOBS_CODE_EXECUTION": "sandbox", "DOCJOBS_LEASE_MS": "3000", "DOCJOBS_HEARTBEAT_S": "0.5"}
    first = processes.renderer(jobstore.address, "renderer-1", **sandboxed)

    created = await post_until_accepted(http, lambda: gateway.base, {
        "documentType": "spreadsheet", "title": "Survivor", "sessionId": "s", "code": SLOW_CODE}, "survivor")
    killed = asyncio.Event()

    async def on_event(event: SseEvent) -> None:
        if event.name == "progress" and not killed.is_set():  # renderer-1 is in the middle of it
            os.kill(first.process.pid, signal.SIGKILL)
            killed.set()

    reader = asyncio.create_task(read_sse_like_eventsource(http, lambda: gateway.base + created["eventsUrl"],
                                                           on_event=on_event))
    await asyncio.wait_for(killed.wait(), 30)
    processes.renderer(jobstore.address, "renderer-2", **sandboxed)
    events = await asyncio.wait_for(reader, 60)

    assert events[-1].name == "job-complete"
    # processing on renderer-1, back to pending when its lease ran out, processing again, complete.
    assert statuses(events)[:2] == ["pending", "processing"]
    assert statuses(events)[-2:] == ["pending", "processing"]
    retry = [e for e in events if e.name == "status" and e.data["status"] == "pending"][-1]
    assert retry.data["lastError"]["code"] == "lease_expired"
    await check_client_saw_every_event_once(database_url, created["jobId"], ids(events))
    async with http.get(f"{gateway.base}/api/jobs/{created['jobId']}", headers=bearer("alice")) as response:
        job = await response.json()
    assert job["status"] == "completed" and job["attempts"] == 2
    async with http.get(gateway.base + events[-1].data["result"]["downloadUrl"]) as response:
        document = await response.read()
    sheet = openpyxl.load_workbook(io.BytesIO(document)).active
    assert sheet is not None and sheet["A1"].value == "survived"
    await check_database(database_url, [created["jobId"]])


async def test_a_jobstore_killed_under_a_steady_stream_loses_nothing(processes, http, database_url) -> None:
    jobstore = processes.jobstore(database_url)
    await asyncio.to_thread(jobstore.wait_healthy)
    gateway = processes.gateway(jobstore.address)
    await asyncio.to_thread(gateway.wait_ready)
    for n in (1, 2):
        processes.renderer(jobstore.address, f"renderer-{n}")
    body = example("document")
    accepted: list[dict[str, Any]] = []
    watchers: list[asyncio.Task[list[SseEvent]]] = []
    restarted = asyncio.Event()

    async def produce() -> None:
        for n in range(40):
            created = await post_until_accepted(http, lambda: gateway.base, body, f"steady-{n}")
            accepted.append(created)
            watchers.append(asyncio.create_task(read_sse_like_eventsource(
                http, lambda url=created["eventsUrl"]: gateway.base + url, attempts=300)))
            await asyncio.sleep(0.05)

    producer = asyncio.create_task(produce())
    await wait_until(lambda: len(accepted) >= 15, timeout=30)
    jobstore.kill()  # SIGKILL: no drain, no goodbye
    await asyncio.sleep(0.5)  # an outage the clients must ride out, not an instant restart
    jobstore.start()
    await asyncio.to_thread(jobstore.wait_healthy)
    restarted.set()
    await asyncio.wait_for(producer, 60)
    streams = await asyncio.wait_for(asyncio.gather(*watchers), 90)

    assert len({c["jobId"] for c in accepted}) == 40
    for created, events in zip(accepted, streams, strict=True):
        assert events[-1].name == "job-complete", created["jobId"]
        await check_client_saw_every_event_once(database_url, created["jobId"], ids(events))
    await check_database(database_url, [c["jobId"] for c in accepted])


async def test_postgres_stopped_and_started_again(processes, http, tmp_path) -> None:
    postgres = EmbeddedPostgres(tmp_path / "own-postgres")
    postgres.start()
    try:
        jobstore = processes.jobstore(postgres.dsn)
        await asyncio.to_thread(jobstore.wait_healthy)
        gateway = processes.gateway(jobstore.address)
        await asyncio.to_thread(gateway.wait_ready)
        processes.renderer(jobstore.address, "renderer-1")
        body = example("document")
        before = [await post_until_accepted(http, lambda: gateway.base, body, f"before-{n}") for n in range(5)]

        postgres.stop()
        async def not_ready() -> bool:
            async with http.get(gateway.base + "/readyz") as response:
                return response.status == 503
        await wait_until(not_ready, timeout=20, interval=0.1)
        async with http.post(gateway.base + "/api/jobs", json=body, headers=bearer("alice")) as response:
            assert response.status == 503, await response.text()
            error = (await response.json())["error"]
            assert error["code"] == "unavailable" and "try again" in error["message"]
        async with http.get(gateway.base + "/api/stats", headers=bearer("alice")) as response:
            assert response.status == 503
        postgres.start()  # the same data directory and port

        async def ready() -> bool:
            async with http.get(gateway.base + "/readyz") as response:
                return response.status == 200
        await wait_until(ready, timeout=30, interval=0.1)
        after = [await post_until_accepted(http, lambda: gateway.base, body, f"after-{n}") for n in range(5)]
        streams = await asyncio.wait_for(asyncio.gather(*[
            read_sse_like_eventsource(http, lambda url=c["eventsUrl"]: gateway.base + url, attempts=300)
            for c in before + after]), 60)
        for created, events in zip(before + after, streams, strict=True):
            assert events[-1].name == "job-complete"
            await check_client_saw_every_event_once(postgres.dsn, created["jobId"], ids(events))
        await check_database(postgres.dsn, [c["jobId"] for c in before + after])
        assert "Traceback" not in (processes.root / "jobstore.log").read_text()
    finally:
        processes.stop()
        postgres.stop()


async def test_a_gateway_killed_under_open_streams(processes, http, database_url) -> None:
    jobstore = processes.jobstore(database_url)
    await asyncio.to_thread(jobstore.wait_healthy)
    gateway = processes.gateway(jobstore.address)
    await asyncio.to_thread(gateway.wait_ready)
    processes.renderer(jobstore.address, "renderer-1", DOCJOBS_CODE_EXECUTION="sandbox",
                       DOCJOBS_RENDER_CONCURRENCY="3")
    jobs = [await post_until_accepted(http, lambda: gateway.base, {
        "documentType": "spreadsheet", "title": f"Slow {n}", "sessionId": "s", "code": SLOW_CODE}, f"slow-{n}")
        for n in range(6)]
    seen: dict[str, int] = {c["jobId"]: 0 for c in jobs}

    def counter(job_id: str) -> Callable[[SseEvent], Any]:
        async def on_event(_event: SseEvent) -> None:
            seen[job_id] += 1
        return on_event

    readers = [asyncio.create_task(read_sse_like_eventsource(
        http, lambda url=c["eventsUrl"]: gateway.base + url, attempts=300, on_event=counter(c["jobId"])))
        for c in jobs]
    await wait_until(lambda: all(seen.values()), timeout=30)
    gateway.kill()
    gateway.start()  # the same port: browsers reconnect to the same URL with Last-Event-ID
    streams = await asyncio.wait_for(asyncio.gather(*readers), 90)
    for created, events in zip(jobs, streams, strict=True):
        assert events[-1].name == "job-complete"
        await check_client_saw_every_event_once(database_url, created["jobId"], ids(events))
    await check_database(database_url, [c["jobId"] for c in jobs])


async def test_two_jobstores_and_three_renderers_lose_one_of_each(processes, database_url) -> None:
    stores = [processes.jobstore(database_url, f"jobstore-{n}") for n in (1, 2)]
    for store in stores:
        await asyncio.to_thread(store.wait_healthy)
    # Renderers balance over both jobstores, as they would over a headless Service's records.
    both = "ipv4:" + ",".join(s.address for s in stores)
    renderers = [processes.renderer(both, f"renderer-{n}", DOCJOBS_LEASE_MS="3000", DOCJOBS_HEARTBEAT_S="0.5")
                 for n in (1, 2, 3)]
    async with jobstore_channel(stores[1].address, GRPC_TOKEN) as channel:
        stub = pb_grpc.JobStoreStub(channel)
        kinds = ("document", "spreadsheet", "pdf", "presentation")
        jobs = []
        for n in range(60):
            kind = kinds[n % 4]
            reply = await stub.Enqueue(pb.EnqueueRequest(
                job_type=kind, user_id="load", title=f"Job {n}", priority=n % 3,
                payload_json=json.dumps({"spec": example(kind)["spec"]})))
            jobs.append(reply.job.id)

        async def watch(job_id: str) -> list[int]:
            return [e.id async for e in stub.Watch(pb.WatchRequest(job_id=job_id))]

        watchers = [asyncio.create_task(watch(job_id)) for job_id in jobs[-10:]]
        conn = await asyncpg.connect(database_url)
        try:
            async def completed() -> int:
                return int(await conn.fetchval("SELECT count(*) FROM document_jobs WHERE status = 'completed'"))
            await wait_until(lambda: _at_least(completed, 15), timeout=60, interval=0.05)
            stores[0].kill()
            os.kill(renderers[0].process.pid, signal.SIGKILL)
            await wait_until(lambda: _at_least(completed, 60), timeout=120, interval=0.2)
        finally:
            await conn.close()
        for job_id, seen in zip(jobs[-10:], await asyncio.gather(*watchers), strict=True):
            await check_client_saw_every_event_once(database_url, job_id, seen)
    await check_database(database_url, jobs)


async def _at_least(count: Callable[[], Any], n: int) -> bool:
    return bool(await count() >= n)
