"""Load, sized for CI: 1,000 jobs of mixed types and priorities through the gateway, three renderers, 100
SSE watchers at once, and a watch on the number of Postgres connections the whole time."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
import asyncpg
import pytest

from .faults.invariants import check_client_saw_every_event_once, check_database
from .faults.test_faults import Processes, ids
from .gateway_client import SseEvent, bearer, read_sse

JOBS = 1_000  # 2,000 took a minute of the suite's ten; the queue's own load tests are in bench/
WATCHERS = 100
POOL_SIZE = 6
OBSERVER = "docjobs-load-test"  # the test's own connections, left out of the count
# Its own deadlines below (posting, streams, draining) are what bound it; the suite's 120 s per test was
# reached on two cores shared with another test worker.
pytestmark = pytest.mark.timeout(600)

# Small documents of each type: the load is the queue, the streams and the workers, not the libraries.
SPECS: dict[str, dict[str, Any]] = {
    "spreadsheet": {"sheets": [{"name": "Data", "columns": [{"header": "Item"}, {"header": "Qty"}],
                                "rows": [["bolts", 4], ["nuts", 8]]}]},
    "document": {"blocks": [{"type": "heading", "level": 1, "text": "Note"},
                            {"type": "paragraph", "text": "Load test."}]},
    "pdf": {"blocks": [{"type": "heading", "level": 1, "text": "Note"}, {"type": "paragraph", "text": "Load."}]},
    "presentation": {"slides": [{"layout": "title", "title": "Load", "subtitle": "test"}]},
}


async def test_a_thousand_jobs_three_renderers_a_hundred_watchers(tmp_path, database_url) -> None:
    processes = Processes(tmp_path)
    connections: list[int] = []
    stop_sampling = asyncio.Event()
    database = database_url.rsplit("/", 1)[1]

    async def sample_connections() -> None:
        conn = await asyncpg.connect(database_url, server_settings={"application_name": OBSERVER})
        try:
            while not stop_sampling.is_set():
                connections.append(await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2 "
                    "AND backend_type = 'client backend'",  # not autovacuum workers
                    database, OBSERVER))
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    try:
        jobstore = processes.jobstore(database_url, DOCJOBS_DB_POOL_SIZE=str(POOL_SIZE))
        await asyncio.to_thread(jobstore.wait_healthy)
        sampler = asyncio.create_task(sample_connections())
        gateway = processes.gateway(jobstore.address)
        await asyncio.to_thread(gateway.wait_ready)
        for n in (1, 2, 3):
            processes.renderer(jobstore.address, f"renderer-{n}", DOCJOBS_RENDER_CONCURRENCY="2")

        kinds = itertools.cycle(SPECS)
        bodies = [{"documentType": kind, "title": f"Load {n}", "sessionId": f"s{n % 50}", "priority": n % 5,
                   "spec": SPECS[kind]} for n, kind in zip(range(JOBS), kinds, strict=False)]
        created: list[dict[str, Any]] = [{} for _ in bodies]
        watched: dict[str, asyncio.Task[list[SseEvent]]] = {}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as http:
            async def watch(url: str) -> list[SseEvent]:
                return (await read_sse(http, gateway.base + url)).events

            async def post(worker: int) -> None:
                for n in range(worker, JOBS, 16):
                    # 40 users: each watches 2 or 3 of its jobs at once, within DOCJOBS_SSE_STREAMS_PER_USER
                    async with http.post(gateway.base + "/api/jobs", json=bodies[n],
                                         headers=bearer(f"user-{(n // 10) % 40}")) as response:
                        assert response.status == 202, await response.text()
                        created[n] = await response.json()
                    if n % (JOBS // WATCHERS) == 0:  # every tenth job has a browser watching it
                        watched[created[n]["jobId"]] = asyncio.create_task(watch(created[n]["eventsUrl"]))

            await asyncio.wait_for(asyncio.gather(*[post(w) for w in range(16)]), 120)
            assert len(watched) == WATCHERS
            await asyncio.wait_for(asyncio.gather(*watched.values()), 240)

        conn = await asyncpg.connect(database_url, server_settings={"application_name": OBSERVER})
        try:
            async def unfinished() -> int:
                return int(await conn.fetchval(
                    "SELECT count(*) FROM document_jobs WHERE status NOT IN ('completed', 'failed', 'cancelled')"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 240
            while await unfinished():
                assert loop.time() < deadline, "the queue did not drain"
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        stop_sampling.set()
        await sampler
    finally:
        stop_sampling.set()
        processes.stop()

    job_ids = [c["jobId"] for c in created]
    await check_database(database_url, job_ids)
    for job_id, task in watched.items():
        events = task.result()
        assert events[-1].name == "job-complete"
        assert ids(events) == sorted(set(ids(events)))
        await check_client_saw_every_event_once(database_url, job_id, ids(events))
    # The jobstore's pool plus its LISTEN connection, however many renderers and SSE clients.
    assert connections and max(connections) <= POOL_SIZE + 1, max(connections)
