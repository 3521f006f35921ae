"""The renderer as a process: giving work back on SIGTERM, riding out a jobstore outage, progress."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys

import aiohttp
import openpyxl

from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

from .conftest import jobstore_settings, start_jobstore, wait_until
from .helpers import scrape
from .renderers import RendererProcess, download, example, submit, wait_finished


async def test_sigterm_finishes_short_jobs_and_gives_back_what_it_cannot(stub, jobstore, tmp_path) -> None:
    renderer = RendererProcess(jobstore.address, tmp_path / "r", DOCJOBS_CODE_EXECUTION="sandbox",
                               DOCJOBS_RENDER_GRACE_S="1", DOCJOBS_SANDBOX_TIMEOUT_S="120",
                               DOCJOBS_SANDBOX_CPU_S="120").start()
    try:
        slow = await submit(stub, "spreadsheet", {"code": "import time\ntime.sleep(3600)"}, max_retries=3)
        # Stopped once the renderer is running the code (a claim still on its way is another case:
        # test_a_claim_cut_short_by_a_stop_is_given_back_at_once).
        await wait_until(lambda: _running(stub, slow.id), timeout=30)
        code = await renderer.shutdown()
    finally:
        renderer.kill()
    assert code == 0, renderer.log
    job = await stub.GetJob(pb.GetJobRequest(job_id=slow.id))
    # Given back at once (not after its lease ran out), with no attempt counted: pending again.
    assert job.status == pb.JOB_STATUS_PENDING, renderer.log
    assert job.retry_count == 0 and job.release_count == 1 and "worker_shutdown" in renderer.log
    assert "renderer stopped" in renderer.log


async def _status(stub: pb_grpc.JobStoreAsyncStub, job_id: str, status: int) -> bool:
    return (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).status == status


async def _running(stub: pb_grpc.JobStoreAsyncStub, job_id: str) -> bool:
    job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    return job.status == pb.JOB_STATUS_PROCESSING and job.progress_message == "running the document code"


async def test_a_claim_cut_short_by_a_stop_is_given_back_at_once(stub, jobstore, tmp_path) -> None:
    """SIGTERM while a claim is on its way back: whether the answer arrived or not, no job is left
    leased to a renderer that is gone (given back at once, not after its 30 s lease)."""
    # A spreadsheet that takes seconds to render: it is still rendering when the renderer stops.
    columns = [{"header": f"c{i}", "format": "decimal"} for i in range(8)]
    slow = {"sheets": [{"name": "Big", "columns": columns, "rows": [[r * 1.5 + c for c in range(8)]
                                                                    for r in range(40_000)]}]}
    for attempt in range(5):
        renderer = RendererProcess(jobstore.address, tmp_path / f"r{attempt}", DOCJOBS_WORKER_ID=f"cut-{attempt}",
                                   DOCJOBS_RENDER_GRACE_S="0").start()
        try:
            job = await submit(stub, "spreadsheet", {"spec": slow}, max_retries=3)
            await wait_until(functools.partial(_status, stub, job.id, pb.JOB_STATUS_PROCESSING), timeout=30)
            assert await renderer.shutdown() == 0, renderer.log
        finally:
            renderer.kill()
        final = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
        assert final.status == pb.JOB_STATUS_PENDING, renderer.log
        await stub.Cancel(pb.CancelRequest(job_id=job.id))


async def test_a_jobstore_outage_is_logged_once_and_ridden_out(database_url, tmp_path) -> None:
    port, metrics_port = free_port(), free_port()
    renderer = RendererProcess(f"127.0.0.1:{port}", tmp_path / "r", DOCJOBS_METRICS_PORT=str(metrics_port)).start()
    try:
        async def several_claims_failed() -> bool:
            try:
                samples = await scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            except aiohttp.ClientError:
                return False  # the metrics endpoint is not up yet
            return samples.get(("docjobs_renderer_claim_errors_total", ()), 0.0) >= 3

        await wait_until(several_claims_failed, timeout=30)  # an outage of several failed claims, not one
        store = await start_jobstore(jobstore_settings(database_url, grpc_port=port))
        try:
            body = example("document")
            job = await submit(store.stub, "document", {"spec": body["spec"]}, title=body["title"])
            final, _ = await wait_finished(store.stub, job.id, timeout=60)
            assert final.status == pb.JOB_STATUS_COMPLETED
            await renderer.shutdown()  # before the jobstore, or that is a second outage
        finally:
            await store.channel.close()
            await store.server.stop()
    finally:
        renderer.kill()
    assert renderer.log.count("jobstore unreachable") == 1, renderer.log
    assert "jobstore reachable again" in renderer.log


async def test_progress_is_reported_while_a_large_spreadsheet_renders(stub, jobstore, tmp_path) -> None:
    # Every file streamed (UploadArtifact, then Complete), as files over 4 MiB always are.
    renderer = RendererProcess(jobstore.address, tmp_path / "r", DOCJOBS_INLINE_ARTIFACT_BYTES="0").start()
    try:
        columns = [{"header": f"c{i}", "format": "decimal"} for i in range(8)]
        rows = [[r * 1.5 + c for c in range(8)] for r in range(20_000)]
        job = await submit(stub, "spreadsheet", {"spec": {"sheets": [{"name": "Big", "columns": columns,
                                                                      "rows": rows}]}})
        final, events = await wait_finished(stub, job.id, timeout=120)
    finally:
        await renderer.shutdown()
    assert final.status == pb.JOB_STATUS_COMPLETED
    progress = [e.progress for e in events if e.kind == pb.EVENT_KIND_PROGRESS]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] >= 90
    result = json.loads(final.result_json)
    info = await download(stub, final.artifact_id, tmp_path / "big.xlsx")
    assert result["artifact_id"] == final.artifact_id and result["size_bytes"] == info.size_bytes > 100_000
    assert hashlib.sha256((tmp_path / "big.xlsx").read_bytes()).hexdigest() == result["sha256"]
    workbook = openpyxl.load_workbook(tmp_path / "big.xlsx", read_only=True)
    try:
        sheet = workbook["Big"]
        assert sheet.max_row == 20_001 and sheet.cell(row=20_001, column=8).value == 19_999 * 1.5 + 7
    finally:
        workbook.close()


def test_renderer_refuses_a_bad_setting_with_one_line(tmp_path) -> None:
    renderer = RendererProcess("127.0.0.1:1", tmp_path, DOCJOBS_CODE_EXECUTION="yes please")
    result = subprocess.run([sys.executable, "-m", "renderer.worker"], env=renderer.env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "renderer: DOCJOBS_CODE_EXECUTION must be one of off, sandbox, got 'yes please'"]
