"""Prometheus metrics of the jobstore and the renderer, scraped over HTTP as Prometheus would."""

from __future__ import annotations

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb

from .conftest import wait_until
from .helpers import claim, enqueue, scrape
from .renderers import RendererProcess, example, submit, wait_finished


async def test_jobstore_metrics_show_the_queue_and_the_calls(jobstore_factory) -> None:  # type: ignore[no-untyped-def]
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


async def test_jobstore_liveness_stays_serving_while_readiness_follows_the_database(jobstore) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(jobstore.channel)
    for service in ("", "liveness", "docjobs.v1.JobStore"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_renderer_metrics_count_outcomes(jobstore, tmp_path) -> None:  # type: ignore[no-untyped-def]
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
