"""Queue benchmark through the real gRPC path (run by `make bench`, never by `make test`).

Starts an embedded Postgres (fsync on, default durable settings) and a jobstore process, then from
this process:
  1. enqueues N jobs (64 concurrent calls) and reports enqueues/s;
  2. runs K workers, each on a work session (as renderers are) with B slots, that completes every job
     pushed to it (no rendering), and reports jobs/s from the start to the last completion;
  3. measures enqueue-to-start latency for an idle worker on its session (one slot granted): a single job
     is enqueued, and the time from sending Enqueue to receiving the pushed job is recorded, R times;
  4. samples the number of Postgres connections of the benchmark database during all of it.

Usage: python bench/queue.py [--jobs N] [--workers K] [--batch B] [--latency-rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # bench.common, tests.processes; appended, after the standard library

from bench.common import GRPC_TOKEN, add_json_option, benchmark_database, write_json  # noqa: E402
from docjobs.channels import jobstore_channel  # noqa: E402
from docjobs.v1 import jobstore_pb2 as pb  # noqa: E402
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc  # noqa: E402
from docjobs.worksession import WorkSession  # noqa: E402
from tests.processes import JobStoreProcess  # noqa: E402

TYPES = ["spreadsheet", "document", "pdf", "presentation"]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def sample_connections(dsn: str, stop: asyncio.Event, peak: list[int]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            n = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                    " AND pid <> pg_backend_pid()")
            peak[0] = max(peak[0], n)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def enqueue_all(stub: pb_grpc.JobStoreAsyncStub, n: int, concurrency: int = 64) -> float:
    counter = iter(range(n))

    async def one_client() -> None:
        for i in counter:
            await stub.Enqueue(pb.EnqueueRequest(job_type=TYPES[i % 4], user_id=f"user-{i % 50}",
                                                 priority=i % 3, payload_json='{"spec": {"noop": true}}'))

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def drain(stub: pb_grpc.JobStoreAsyncStub, n: int, workers: int, batch: int) -> float:
    done = 0
    finished = asyncio.Event()
    finishing: set[asyncio.Future[None]] = set()

    def worker(k: int) -> WorkSession:
        async def finish(claimed: pb.ClaimedJob) -> None:
            nonlocal done
            work.grant(1)  # the credit rides on the completion
            await work.complete(pb.CompleteRequest(job_id=claimed.job.id, lease_token=claimed.lease_token))
            done += 1
            if done >= n:
                finished.set()

        def took(jobs: list[pb.ClaimedJob]) -> None:
            for claimed in jobs:
                task = asyncio.ensure_future(finish(claimed))
                finishing.add(task)
                task.add_done_callback(finishing.discard)

        work = WorkSession(stub, f"bench-{k}", TYPES, 60_000, on_jobs=took)
        return work

    sessions = [worker(k) for k in range(workers)]
    started = time.perf_counter()
    for work in sessions:
        work.start()
        work.grant(batch)
    await finished.wait()
    elapsed = time.perf_counter() - started
    for work in sessions:
        await work.close()
    return n / elapsed


async def latency(stub: pb_grpc.JobStoreAsyncStub, rounds: int) -> dict[str, list[float]]:
    """Three views of one interval, in ms: from sending Enqueue (the client's whole wait), from Enqueue's
    acknowledgement (the job exists) to the worker holding the job, and in the database from the
    job's created_at to its started_at (the jobstore's own share)."""
    samples: dict[str, list[float]] = {"call": [], "ack": [], "db": []}
    pushed: asyncio.Queue[pb.ClaimedJob] = asyncio.Queue()

    def take(jobs: list[pb.ClaimedJob]) -> None:
        for claimed in jobs:
            pushed.put_nowait(claimed)

    work = WorkSession(stub, "idle", ["pdf"], 60_000, on_jobs=take)
    work.start()
    await work.connected.wait()
    for i in range(rounds):
        work.grant(1)
        await asyncio.sleep(0.02)  # the push is parked in its wait for work
        started = time.perf_counter()
        await stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="lat", payload_json=f'{{"n": {i}}}'))
        acked = time.perf_counter()
        c = await pushed.get()
        got = time.perf_counter()
        samples["call"].append((got - started) * 1000)
        samples["ack"].append((got - acked) * 1000)
        samples["db"].append((c.job.started_at.ToNanoseconds() - c.job.created_at.ToNanoseconds()) / 1e6)
        await work.complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
    await work.close()
    return samples


async def run(args: argparse.Namespace, dsn: str, address: str) -> None:
    stop = asyncio.Event()
    peak = [0]
    sampler = asyncio.create_task(sample_connections(dsn, stop, peak))
    async with jobstore_channel(address, GRPC_TOKEN) as channel:
        stub = pb_grpc.JobStoreStub(channel)
        await stub.GetStats(pb.GetStatsRequest(), wait_for_ready=True)
        enqueue_rate = await enqueue_all(stub, args.jobs)
        drain_rate = await drain(stub, args.jobs, args.workers, args.batch)
        lat = await latency(stub, args.latency_rounds)
        stats = await stub.GetStats(pb.GetStatsRequest())
    stop.set()
    await sampler
    completed = sum(c.count for c in stats.counts if c.status == pb.JOB_STATUS_COMPLETED)
    assert completed == args.jobs + args.latency_rounds, completed
    print(f"docjobs queue benchmark: {args.jobs} jobs, {args.workers} workers on sessions of {args.batch} slots, "
          f"{os.cpu_count()} cores, Postgres fsync on")
    print(f"  enqueue                 {enqueue_rate:8.0f} jobs/s  (64 concurrent Enqueue calls)")
    print(f"  claim + complete        {drain_rate:8.0f} jobs/s  (target >= 1500; ratio {drain_rate / 1500:.2f})")
    print(f"  enqueue-to-start, idle worker on its session, {args.latency_rounds} rounds "
          "(targets p50 <= 3, p99 <= 15):")
    for key, label in (("ack", "from Enqueue acknowledged"), ("call", "from Enqueue sent"),
                       ("db", "created_at to started_at")):
        values = lat[key]
        print(f"    {label:26s} p50 {statistics.median(values):6.2f} ms   p99 {percentile(values, 99):6.2f} ms")
    print(f"  Postgres connections    {peak[0]:8d}         (peak; pool size {args.pool} + 1 LISTEN)")
    latency_figures = {f"start_{key}_p{q}_ms": (statistics.median(lat[key]) if q == 50 else percentile(lat[key], 99))
                       for key in ("ack", "call", "db") for q in (50, 99)}
    write_json(args.json, "queue", {"enqueue_per_s": enqueue_rate, "claim_complete_jobs_per_s": drain_rate,
                                    **latency_figures, "postgres_connections_peak": peak[0]}, args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=10, help="slots (credit) of each worker's session")
    parser.add_argument("--latency-rounds", type=int, default=300)
    parser.add_argument("--pool", type=int, default=10)
    add_json_option(parser)
    args = parser.parse_args()
    with benchmark_database() as (_tmp, dsn):
        store = JobStoreProcess(dsn, env={"DOCJOBS_DB_POOL_SIZE": str(args.pool), "DOCJOBS_LOG_LEVEL": "warning"})
        store.start()
        try:
            store.wait_healthy()
            asyncio.run(run(args, dsn, store.address))
        finally:
            store.terminate()


if __name__ == "__main__":
    main()
