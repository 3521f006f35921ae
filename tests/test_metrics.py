"""Prometheus metrics of the jobstore and the renderer, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Gauge

from docjobs.metrics_http import start_metrics_server
from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb

from .conftest import wait_until
from .helpers import claim, enqueue, scrape
from .renderers import RendererProcess, example, submit, wait_finished


async def test_jobstore_metrics_show_the_queue_and_the_calls(jobstore_factory) -> None:
    port = free_port()
    jobstore = await jobstore_factory(metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"
    before = await scrape(url)
    for _ in range(3):
        await enqueue(jobstore.stub, job_type="pdf")
    await enqueue(jobstore.stub, job_type="pdf", delay_ms=3_600_000)
    assert len(await claim(jobstore.stub, types=("pdf",))) == 1
    with pytest.raises(grpc.aio.AioRpcError):
        await jobstore.stub.Enqueue(pb.EnqueueRequest(job_type="", user_id="u", payload_json="{}"))

    async def refreshed() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = await scrape(url)  # the queue gauges are read again at most once a second
        return samples if ("docjobs_jobstore_due_pending_jobs", (("job_type", "pdf"),)) in samples else None

    after = await wait_until(refreshed, timeout=10, interval=0.2)
    assert after[("docjobs_jobstore_due_pending_jobs", (("job_type", "pdf"),))] == 2
    assert after[("docjobs_jobstore_jobs", (("job_type", "pdf"), ("status", "pending")))] == 3
    assert after[("docjobs_jobstore_jobs", (("job_type", "pdf"), ("status", "processing")))] == 1

    def delta(name: str, labels: tuple[tuple[str, str], ...]) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert delta("docjobs_jobstore_rpcs_total", (("method", "Enqueue"),)) == 5
    assert delta("docjobs_jobstore_rpcs_total", (("method", "Claim"),)) == 1
    assert delta("docjobs_jobstore_rpc_errors_total", (("code", "INVALID_ARGUMENT"), ("method", "Enqueue"))) == 1


async def test_jobstore_liveness_stays_serving_while_readiness_follows_the_database(jobstore) -> None:
    health = health_pb2_grpc.HealthStub(jobstore.channel)
    for service in ("", "liveness", "docjobs.v1.JobStore"):
        # typeshed's HealthStub declares none of the stub's methods.
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))  # type: ignore[attr-defined]
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_renderer_metrics_count_outcomes(jobstore, tmp_path) -> None:
    port = free_port()
    renderer = RendererProcess(jobstore.address, tmp_path / "r", DOCJOBS_METRICS_PORT=str(port)).start()
    try:
        good = await submit(jobstore.stub, "pdf", {"spec": example("pdf")["spec"]})
        bad = await submit(jobstore.stub, "pdf", {"spec": {"blocks": [{"type": "no-such-block"}]}})
        for job in (good, bad):
            await wait_finished(jobstore.stub, job.id)
        url = f"http://127.0.0.1:{port}"

        async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            try:
                return await scrape(f"{url}/metrics")
            except aiohttp.ClientError:
                return None

        samples = await wait_until(scraped, timeout=30)
        assert samples[("docjobs_renderer_jobs_total", (("job_type", "pdf"), ("outcome", "completed")))] == 1
        assert samples[("docjobs_renderer_jobs_total", (("job_type", "pdf"), ("outcome", "failed")))] == 1
        assert samples[("docjobs_renderer_render_seconds_count", (("job_type", "pdf"), ("mode", "spec")))] >= 1
        assert samples[("docjobs_renderer_jobs_in_flight", ())] == 0
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
            assert response.status == 200
    finally:
        await renderer.shutdown()


async def _raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()  # the server answers one request and closes
    finally:
        writer.close()
        await writer.wait_closed()


async def test_the_metrics_endpoint_refreshes_before_each_scrape_and_answers_anything_else_cleanly() -> None:
    registry = CollectorRegistry()
    scrapes = Gauge("test_scrapes", "scrapes seen by the refresh hook", registry=registry)

    async def refresh() -> None:
        await asyncio.sleep(0)  # an async call on the process's loop, as the jobstore's database read is
        scrapes.inc()

    server = await start_metrics_server("127.0.0.1", 0, registry, refresh)
    try:
        silent = await asyncio.open_connection("127.0.0.1", server.port)  # connects, never sends a request
        url = f"http://127.0.0.1:{server.port}"
        assert (await scrape(f"{url}/metrics"))[("test_scrapes", ())] == 1
        assert (await scrape(f"{url}/metrics?name[]=x"))[("test_scrapes", ())] == 2
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        head = await _raw_request(server.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
        for request, status in [
            (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
            (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", b"405"),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),  # TLS to a plain port
            (b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        ]:
            answer = await _raw_request(server.port, request)
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), (request[:40], answer[:80])
        assert (await scrape(f"{url}/metrics"))[("test_scrapes", ())] == 4  # HEAD refreshed too
        silent[1].close()
    finally:
        await server.stop()
