"""DOCJOBS_JOBSTORE_PROCESSES: several jobstore processes on one port (SO_REUSEPORT), each a whole jobstore
with its own pool and LISTEN connection, started, watched and stopped by the first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

import psutil
import pytest

from docjobs.channels import jobstore_channel
from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from .conftest import GRPC_TOKEN, wait_until
from .helpers import query_value, scrape
from .processes import JobStoreProcess

POOL = 4


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def metrics_port() -> int:
    """A port whose next is free too: the second process serves its metrics there."""
    while True:
        port = free_port()
        if port < 65535 and bindable(port + 1):
            return port


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.fixture
async def two(database_url: str, metrics_port: int):
    """Two processes, both serving: the second has its metrics endpoint up, which it opens after its gRPC port."""
    store = JobStoreProcess(database_url, env={"DOCJOBS_JOBSTORE_PROCESSES": "2", "DOCJOBS_DB_POOL_SIZE": str(POOL),
                                               "DOCJOBS_METRICS_PORT": str(metrics_port)})
    store.start()
    try:
        store.wait_healthy()
        await wait_until(lambda: listening(metrics_port + 1) or None, timeout=30)
        yield store
    finally:
        store.kill()  # also when it never became ready: its output pipe is closed


def jobstore_processes(store: JobStoreProcess) -> list[psutil.Process]:
    assert store.process is not None
    first = psutil.Process(store.process.pid)
    return [first, *(p for p in first.children() if "jobstore.server" in " ".join(p.cmdline()))]


async def database_connections(database_url: str) -> int:
    return int(await query_value(database_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                               "current_database() AND pid <> pg_backend_pid()"))


async def test_two_processes_share_the_port_and_each_serves_calls(two, database_url, metrics_port) -> None:
    assert len(jobstore_processes(two)) == 2
    # The kernel hands each new connection to one of the two: forty connections reach both.
    for _ in range(40):
        async with jobstore_channel(two.address, GRPC_TOKEN) as channel:
            await wait_for_ready(pb_grpc.JobStoreStub(channel))
    served = []
    for port in (metrics_port, metrics_port + 1):
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")
        served.append(samples.get(("docjobs_jobstore_rpcs_total", (("method", "GetStats"),)), 0.0))
    assert sum(served) == 40 and min(served) > 0, served
    # Each holds its own LISTEN connection, and all of them together at most processes x (pool + 1).
    listening = await query_value(database_url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
    assert listening == 2
    async with jobstore_channel(two.address, GRPC_TOKEN) as channel:
        stub = pb_grpc.JobStoreStub(channel)
        await asyncio.gather(*(stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id=f"u{i}", payload_json="{}"))
                               for i in range(200)))
    assert await database_connections(database_url) <= 2 * (POOL + 1)


async def wait_for_ready(stub: pb_grpc.JobStoreAsyncStub) -> None:
    await stub.GetStats(pb.GetStatsRequest(), wait_for_ready=True)


async def test_a_claim_parked_on_either_process_is_woken_by_an_enqueue_on_the_other(two) -> None:
    channels = [jobstore_channel(two.address, GRPC_TOKEN) for _ in range(8)]
    try:
        stubs = [pb_grpc.JobStoreStub(channel) for channel in channels]
        for stub in stubs:
            await wait_for_ready(stub)
        parked = [asyncio.ensure_future(stub.Claim(pb.ClaimRequest(worker_id=f"w{i}", job_types=["parked"],
                                                                   wait_ms=30_000, lease_ms=60_000)))
                  for i, stub in enumerate(stubs)]
        await asyncio.sleep(0.5)  # not a condition anyone can see: the claims are parked on the server
        for _ in range(8):
            await stubs[0].Enqueue(pb.EnqueueRequest(job_type="parked", user_id="p", payload_json="{}"))
        async with asyncio.timeout(20):
            replies = await asyncio.gather(*parked)
        assert sum(len(reply.jobs) for reply in replies) == 8
    finally:
        for channel in channels:
            await channel.close()


async def test_the_first_process_stops_every_process_on_sigterm(two) -> None:
    processes = jobstore_processes(two)
    assert len(processes) == 2
    code, output = two.terminate()
    assert code == 0, output
    _gone, alive = psutil.wait_procs(processes, timeout=20)
    assert not alive


async def test_a_process_that_dies_stops_the_others_for_the_supervisor_to_restart(two) -> None:
    _first, other = jobstore_processes(two)
    other.send_signal(signal.SIGKILL)
    assert two.process is not None
    code = await asyncio.to_thread(two.process.wait, 30)
    assert code == 1
    output = two.process.stdout.read().decode() if two.process.stdout else ""
    assert "jobstore process 1 exited with status -9: stopping every process" in output, output


async def test_the_others_end_when_the_first_is_killed(two) -> None:
    first, other = jobstore_processes(two)
    os.kill(first.pid, signal.SIGKILL)
    _gone, alive = psutil.wait_procs([other], timeout=30)
    assert not alive
