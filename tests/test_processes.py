"""The jobstore as a real process: concurrent start on an empty database, settings, graceful stop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import grpc
import pytest

from docjobs.channels import jobstore_channel
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from jobstore.migrations import available

from .conftest import GRPC_TOKEN
from .helpers import enqueue
from .processes import JobStoreProcess


async def test_three_jobstores_migrate_one_empty_database_at_once(empty_database_url) -> None:
    stores = [JobStoreProcess(empty_database_url).start() for _ in range(3)]
    try:
        await asyncio.gather(*(asyncio.to_thread(s.wait_healthy) for s in stores))
        conn = await asyncpg.connect(empty_database_url)
        try:
            versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        finally:
            await conn.close()
        assert versions == [m.version for m in available()]
        # All three serve the same queue.
        channels = [jobstore_channel(s.address, GRPC_TOKEN) for s in stores]
        try:
            job = await enqueue(pb_grpc.JobStoreStub(channels[0]))
            for channel in channels:
                got = await pb_grpc.JobStoreStub(channel).GetJob(pb.GetJobRequest(job_id=job.id))
                assert got.id == job.id
        finally:
            for channel in channels:
                await channel.close()
    finally:
        for s in stores:
            s.kill()


@pytest.mark.parametrize(("name", "value"), [
    ("DOCJOBS_GRPC_PORT", "eighty"),
    ("DOCJOBS_GRPC_PORT", "70000"),
    ("DOCJOBS_DB_POOL_SIZE", "1"),
    ("DOCJOBS_LOG_LEVEL", "chatty"),
    ("DATABASE_URL", "mysql://nope"),
])
def test_a_bad_setting_stops_the_jobstore_with_one_line_naming_it(name: str, value: str) -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://127.0.0.1:1/x", name: value}
    result = subprocess.run([sys.executable, "-m", "jobstore.server"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr


def test_a_missing_database_url_is_named() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run([sys.executable, "-m", "jobstore.server"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "DATABASE_URL" in result.stderr


async def test_sigterm_drains_ends_streams_and_exits_cleanly(database_url) -> None:
    store = JobStoreProcess(database_url).start()
    try:
        await asyncio.to_thread(store.wait_healthy)
        channel = jobstore_channel(store.address, GRPC_TOKEN)
        stub = pb_grpc.JobStoreStub(channel)
        job = await enqueue(stub)
        watch = stub.Watch(pb.WatchRequest(job_id=job.id))
        first = await watch.read()
        assert isinstance(first, pb.JobEvent) and first.status == pb.JOB_STATUS_PENDING
        waiting_claim = asyncio.ensure_future(stub.Claim(pb.ClaimRequest(worker_id="w", job_types=["none"],
                                                                         wait_ms=30_000)))
        await asyncio.sleep(0.2)
        code, output = await asyncio.to_thread(store.terminate)
        assert code == 0, output
        assert "jobstore stopped" in output
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await watch.read()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert list((await asyncio.wait_for(waiting_claim, 10)).jobs) == []  # released at once, not after 30 s
        await channel.close()
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                       " AND pid <> pg_backend_pid()") == 0
        finally:
            await conn.close()
    finally:
        store.kill()


async def test_health_and_reflection_are_served(jobstore) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health_stub = health_pb2_grpc.HealthStub(jobstore.channel)
    # typeshed's HealthStub and ServerReflectionStub declare none of the stubs' methods.
    reply = await health_stub.Check(  # type: ignore[attr-defined]
        health_pb2.HealthCheckRequest(service="docjobs.v1.JobStore"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(jobstore.channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in reflection.ServerReflectionInfo(ask()):  # type: ignore[operator]
        names = {s.name for s in answer.list_services_response.service}
        assert {"docjobs.v1.JobStore", "grpc.health.v1.Health"} <= names
        break
