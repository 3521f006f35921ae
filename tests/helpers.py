"""Small helpers shared by the tests."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc


async def enqueue(stub: pb_grpc.JobStoreAsyncStub, user_id: str = "user-1", job_type: str = "spreadsheet",
                  payload: dict[str, Any] | None = None, **fields: Any) -> pb.Job:
    response = await stub.Enqueue(pb.EnqueueRequest(
        job_type=job_type, user_id=user_id,
        payload_json=json.dumps(payload if payload is not None else {"spec": {"sheets": []}}), **fields))
    return response.job


async def claim(stub: pb_grpc.JobStoreAsyncStub, worker: str = "worker-1", types: tuple[str, ...] = (
        "spreadsheet", "document", "pdf", "presentation"), max_jobs: int = 1, wait_ms: int = 0,
        lease_ms: int = 30_000) -> list[pb.ClaimedJob]:
    response = await stub.Claim(pb.ClaimRequest(worker_id=worker, job_types=list(types), max_jobs=max_jobs,
                                                wait_ms=wait_ms, lease_ms=lease_ms))
    return list(response.jobs)


async def collect_events(stub: pb_grpc.JobStoreAsyncStub, request: pb.WatchRequest, count: int | None = None,
                         ) -> list[pb.JobEvent]:
    """Events from a Watch stream: until it ends, or until count events arrived."""
    events: list[pb.JobEvent] = []
    call = stub.Watch(request)
    async for event in call:
        events.append(event)
        if count is not None and len(events) >= count:
            call.cancel()
            break
    return events


async def query_value(database_url: str, sql: str, *args: Any) -> Any:
    """One value read straight from the database (what a test checks behind the API's back)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def lock_waits(database_url: str) -> int:
    """How many statements wait for a lock on a job row, read on a connection of its own (a transaction keeps
    the first look at pg_stat_activity it took, so the connection holding the lock cannot be the one asking)."""
    return int(await query_value(database_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                               " AND query LIKE '%document_jobs%' AND pid <> pg_backend_pid()"))


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus /metrics page as {(sample name, sorted labels): value}."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}
