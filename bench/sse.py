"""SSE benchmark (run by `make bench`): many concurrent streams on one gateway process.

Starts an embedded Postgres, a jobstore process and a gateway process (JWT auth), then:
  1. opens N SSE streams (default 10,000), one per job, each a pending job; measures the gateway's
     resident memory before and with all streams open, per stream;
  2. drives events: a worker claims every job (N "processing" events at once: the time until every
     client has its event is reported), then, once that burst has been delivered, reports progress on
     the jobs at about R events/s (default 2,000) for a few seconds; each event's delivery latency is
     the time from the worker's heartbeat being answered (the event is committed) to the client reading it;
     the heartbeats go on a work session (the Work RPC), as renderers send them;
  3. completes every job, so every stream ends by itself;
  4. POST-to-complete latency for a trivial job with an idle worker waiting in a long-poll claim.

Usage: python bench/sse.py [--streams N] [--rate R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import jwt
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # bench.common, tests.processes; appended, after the standard library

from bench.common import GRPC_TOKEN, add_json_option, benchmark_database, write_json  # noqa: E402
from docjobs.channels import jobstore_channel  # noqa: E402
from docjobs.pgserver import free_port  # noqa: E402
from docjobs.v1 import jobstore_pb2 as pb  # noqa: E402
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc  # noqa: E402
from docjobs.worksession import WorkSession  # noqa: E402
from tests.processes import JobStoreProcess  # noqa: E402

SECRET = "bench-secret-0123456789-0123456789-0123"
SPEC = {"documentType": "pdf", "title": "t", "spec": {"blocks": [{"type": "pageBreak"}]}}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def open_stream(session: aiohttp.ClientSession, url: str, sent: dict[str, float], latencies: list[float],
                      opened: asyncio.Event, counter: list[int], total: int, statuses: list[int],
                      all_statuses: asyncio.Event) -> None:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
        counter[0] += 1
        if counter[0] == total:
            opened.set()
        name = ""
        async for raw in response.content:
            line = raw.decode()
            if line.startswith("event:"):
                name = line[6:].strip()
                if name == "status":
                    statuses[0] += 1
                    if statuses[0] == 2 * total:  # pending and processing, on every stream
                        all_statuses.set()
            elif line.startswith("data:") and name == "progress":
                data = json.loads(line[5:])
                key = f"{data['jobId']}:{data['progress']}"
                started = sent.pop(key, None)
                if started is not None:
                    latencies.append((time.perf_counter() - started) * 1000)
            elif line.startswith("data:") and name in ("job-complete", "job-failed"):
                return


async def run(args: argparse.Namespace, jobstore: str, gateway: str, gateway_pid: int) -> None:
    # 1,000 users with a few streams each (a user may hold DOCJOBS_SSE_STREAMS_PER_USER streams, 16).
    expires = int(time.time()) + 3600  # the gateway refuses tokens that never expire
    headers = [{"Authorization": "Bearer " + jwt.encode({"sub": f"bench-{u}", "exp": expires}, SECRET,
                                                        algorithm="HS256")}
               for u in range(1000)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session, \
            jobstore_channel(jobstore, GRPC_TOKEN) as channel:
        stub = pb_grpc.JobStoreStub(channel)
        created = []
        for start in range(0, args.streams, 200):
            batch = [session.post(gateway + "/api/jobs", json=SPEC, headers=headers[i % len(headers)])
                     for i in range(start, min(args.streams, start + 200))]
            for request in batch:
                async with request as r:
                    answer = await r.json()
                    if r.status != 202:
                        raise SystemExit(f"POST /api/jobs: {r.status} {answer}")
                    created.append(answer)
        process = psutil.Process(gateway_pid)
        rss_before = process.memory_info().rss
        sent: dict[str, float] = {}
        latencies: list[float] = []
        opened = asyncio.Event()
        counter = [0]
        statuses = [0]
        all_statuses = asyncio.Event()
        streams = [asyncio.create_task(open_stream(session, gateway + c["eventsUrl"], sent, latencies, opened,
                                                   counter, args.streams, statuses, all_statuses))
                   for c in created]
        await asyncio.wait_for(opened.wait(), 300)
        await asyncio.sleep(2)
        rss_open = process.memory_info().rss
        claimed: list[pb.ClaimedJob] = []
        while len(claimed) < args.streams:
            reply = await stub.Claim(pb.ClaimRequest(worker_id="bench", job_types=["pdf"], max_jobs=100,
                                                     lease_ms=600_000))
            claimed.extend(reply.jobs)
        # Every stream gets its "processing" status: one event per stream at once. Measure the steady rate
        # after that burst has reached the clients, not behind it.
        claimed_at = time.perf_counter()
        await asyncio.wait_for(all_statuses.wait(), 120)
        burst_ms = (time.perf_counter() - claimed_at) * 1000
        # Progress events at about args.rate per second, spread over the jobs, from paced senders: each waits
        # for its heartbeat's answer (the event is then committed), so one sender per 50 events/s keeps the
        # rate when a commit takes up to 20 ms. The heartbeats go on a work session, as renderers send them.
        work = WorkSession(stub, "bench", ["pdf"], 600_000, on_jobs=lambda _jobs: None)
        work.start()
        await asyncio.wait_for(work.connected.wait(), 30)
        senders = max(8, int(args.rate // 50))
        counts = [0] * senders

        async def sender(k: int) -> None:
            interval = senders / args.rate
            deadline = time.perf_counter() + args.seconds
            next_at = time.perf_counter()
            n = k
            while time.perf_counter() < deadline:
                c = claimed[n % len(claimed)]
                progress = 1 + (n // len(claimed)) % 98
                sent[f"{c.job.id}:{progress}"] = time.perf_counter()
                await work.heartbeat(pb.HeartbeatRequest(job_id=c.job.id, lease_token=c.lease_token,
                                                         progress=progress))
                counts[k] += 1
                n += senders
                next_at += interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

        await asyncio.gather(*(sender(k) for k in range(senders)))
        achieved = sum(counts) / args.seconds
        await work.stop()
        await asyncio.sleep(1)
        for start in range(0, len(claimed), 100):
            await asyncio.gather(*(stub.Complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
                                   for c in claimed[start:start + 100]))
        await asyncio.wait_for(asyncio.gather(*streams), 300)
        # POST to completed for a trivial job, with an idle worker parked in a claim.
        post_to_done = []
        for _ in range(50):
            waiting = asyncio.ensure_future(stub.Claim(pb.ClaimRequest(worker_id="idle", job_types=["pdf"],
                                                                       wait_ms=10_000)))
            await asyncio.sleep(0.02)
            started = time.perf_counter()
            async with session.post(gateway + "/api/jobs", json=SPEC, headers=headers[0]) as r:
                job = await r.json()
            c = (await waiting).jobs[0]
            await stub.Complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
            async with session.get(gateway + job["eventsUrl"]) as r:
                async for raw in r.content:
                    if raw.startswith(b"event: job-complete"):
                        break
            post_to_done.append((time.perf_counter() - started) * 1000)
    per_stream = (rss_open - rss_before) / args.streams
    print(f"docjobs SSE benchmark: {args.streams} streams on one gateway process, {os.cpu_count()} cores")
    print(f"  gateway memory            {rss_before / 2**20:7.1f} MiB idle, "
          f"{rss_open / 2**20:7.1f} MiB with all open")
    print(f"  per open stream           {per_stream / 1024:7.1f} KiB  "
          f"(target <= 16 KiB; ratio {per_stream / 16384:.2f})")
    print(f"  status burst              {burst_ms:7.0f} ms from the last claim until every stream had its "
          f"'processing' ({args.streams} events at once)")
    print(f"  progress events           {achieved:7.0f} /s for {args.seconds} s (asked {args.rate:.0f} /s; "
          f"target 2,000), {len(latencies)} delivered")
    print(f"  commit -> client p50      {statistics.median(latencies):7.1f} ms")
    print(f"  commit -> client p99      {percentile(latencies, 99):7.1f} ms  (target < 100 ms; ratio "
          f"{percentile(latencies, 99) / 100:.2f})")
    print(f"  POST -> job-complete p50  {statistics.median(post_to_done):7.1f} ms, "
          f"p99 {percentile(post_to_done, 99):.1f} ms (trivial job, idle worker)")
    write_json(args.json, "sse", {
        "streams": args.streams, "rss_idle_mib": rss_before / 2**20, "rss_open_mib": rss_open / 2**20,
        "kib_per_stream": per_stream / 1024, "status_burst_ms": burst_ms, "progress_events_per_s": achieved,
        "progress_delivered": len(latencies), "delivery_p50_ms": statistics.median(latencies),
        "delivery_p99_ms": percentile(latencies, 99), "post_to_complete_p50_ms": statistics.median(post_to_done),
        "post_to_complete_p99_ms": percentile(post_to_done, 99)}, args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    add_json_option(parser)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # two sockets a stream, and the gateway's
    with benchmark_database() as (_tmp, dsn):
        store = JobStoreProcess(dsn, env={"DOCJOBS_LOG_LEVEL": "warning"})
        store.start()
        port = free_port()
        env = {**os.environ, "DOCJOBS_JOBSTORE_ADDRESS": store.address, "DOCJOBS_AUTH": "jwt",
               "DOCJOBS_JWT_SECRET": SECRET, "DOCJOBS_HTTP_PORT": str(port), "DOCJOBS_LOG_LEVEL": "warning"}
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.app"], env=env)
        try:
            store.wait_healthy()
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).close()  # jobstore reached
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            asyncio.run(run(args, store.address, f"http://127.0.0.1:{port}", gateway.pid))
        finally:
            gateway.terminate()
            gateway.wait(30)
            store.terminate()


if __name__ == "__main__":
    main()
