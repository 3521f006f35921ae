"""Supervision of the render sandbox, over real renderer processes and a real jobstore: a zygote killed
under its jobs gives them back (no attempt counted) and is restarted; one that cannot be restarted makes
the renderer stop claiming, report not ready, and exit with a status its supervisor restarts."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from docjobs.exits import EXIT_DO_NOT_RESTART
from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from jobstore.store import FREE_RELEASES
from renderer.worker import EXIT_SANDBOX_LOST

from .conftest import wait_until
from .renderers import RendererProcess, example, submit, wait_finished

# Slow enough to be killed while it runs; the same code completes on the restarted zygote.
SLOW_CODE = """
import time
from openpyxl import Workbook
time.sleep(2)
book = Workbook()
book.active["A1"] = "after the restart"
book.save(output_path)
"""


def zygote_of(renderer: RendererProcess, module: str = "renderer.sandbox.zygote") -> psutil.Process | None:
    """The renderer's render zygote (a child of it), or with module="renderer.sandbox.codezygote" its code
    zygote (inside bubblewrap, under the render zygote)."""
    assert renderer.process is not None
    try:
        processes = psutil.Process(renderer.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for process in processes:
        try:
            # bubblewrap's own command line names the code zygote too: the zygote is the process itself
            if (module in process.cmdline() and process.name() != "bwrap"
                    and process.status() != psutil.STATUS_ZOMBIE):
                return process
        except psutil.NoSuchProcess:
            continue
    return None


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of processes still running (a zombie has ended: only its parent's wait is left)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running


async def _job(stub: pb_grpc.JobStoreAsyncStub, job_id: str) -> pb.Job:
    return await stub.GetJob(pb.GetJobRequest(job_id=job_id))


async def _healthz(port: int) -> int | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as reply:
            return reply.status
    except aiohttp.ClientError:
        return None


@pytest.mark.parametrize(("mode", "killed", "user"), [("code", "renderer.sandbox.zygote", None),
                                                      ("code", "renderer.sandbox.codezygote", "nobody"),
                                                      ("spec", "renderer.sandbox.zygote", None)],
                         ids=["code job, render zygote killed",
                              "code job, code zygote killed, renderer an ordinary user",
                              "spec job, render zygote killed"])
async def test_a_zygote_killed_under_a_job_gives_it_back_and_it_completes_on_the_restarted_one(
        stub, jobstore, tmp_path, open_directory, mode, killed, user) -> None:
    """user: None, the renderer runs as the tests' user (root here: the box without a user namespace of
    its own); "nobody", as an ordinary user, the box in user namespaces only, as Compose and Kubernetes
    run it."""
    if user is not None and (os.geteuid() != 0 or shutil.which("setpriv") is None):
        pytest.skip("needs root to start the renderer as another user")
    data_dir = tmp_path / "r" if user is None else open_directory
    renderer = RendererProcess(jobstore.address, data_dir, as_user=user, DOCJOBS_CODE_EXECUTION="sandbox").start()
    try:
        if mode == "code":
            payload: dict[str, object] = {"code": SLOW_CODE}
            started = "running the document code"
        else:
            columns = [{"header": f"c{i}", "format": "decimal"} for i in range(8)]
            rows = [[r * 1.5 + c for c in range(8)] for r in range(40_000)]
            payload = {"spec": {"sheets": [{"name": "Big", "columns": columns, "rows": rows}]}}
            started = "row "
        # No retry allowed: were the zygote's death counted against the job, the job would end failed.
        job = await submit(stub, "spreadsheet", payload, max_retries=0)

        async def rendering() -> bool:
            now = await _job(stub, job.id)
            return now.status == pb.JOB_STATUS_PROCESSING and started in now.progress_message

        await wait_until(rendering, timeout=60)
        first = zygote_of(renderer)
        target = zygote_of(renderer, killed)
        assert first is not None and target is not None, renderer.log
        if user is not None:  # the sandbox is the ordinary user's, as seen from the host
            assert {first.uids().real, target.uids().real} == {pwd.getpwnam(user).pw_uid}
        # Every process of the sandbox as it stands: the zygotes, their boxes, the job's own.
        doomed = [first, *first.children(recursive=True)]
        assert len(doomed) >= (4 if mode == "code" else 2), doomed
        target.send_signal(signal.SIGKILL)
        # Nothing of the old sandbox outlives it, wherever it was reparented to.
        await wait_until(lambda: not alive(doomed), timeout=30)
        final, events = await wait_finished(stub, job.id, timeout=120)
        assert final.status == pb.JOB_STATUS_COMPLETED, (final.error, renderer.log)
        assert final.retry_count == 0 and final.release_count == 1
        released = [e for e in events if e.kind == pb.EVENT_KIND_STATUS and e.status == pb.JOB_STATUS_PENDING
                    and e.message.startswith("released:")]
        assert len(released) == 1 and not released[0].error.code, events
        restarted = zygote_of(renderer)
        assert restarted is not None and restarted.pid != first.pid
        assert "render zygote restarted" in renderer.log
        assert await renderer.shutdown() == 0, renderer.log
    finally:
        renderer.kill()


async def test_a_zygote_that_cannot_restart_stops_claims_reports_not_ready_and_exits_to_be_restarted(
        stub, jobstore, tmp_path) -> None:
    metrics_port = free_port()
    data_dir = tmp_path / "r"
    renderer = RendererProcess(jobstore.address, data_dir, DOCJOBS_METRICS_PORT=str(metrics_port)).start()
    try:
        await wait_until(lambda: _healthz(metrics_port), timeout=60)
        assert await _healthz(metrics_port) == 200
        zygote = zygote_of(renderer)
        assert zygote is not None and renderer.process is not None
        # The sandbox's directory is gone and a file stands in its place: no zygote can start there
        # again, however often it is tried (as root too).
        base_dir = data_dir / f"renderer-{renderer.process.pid}"
        assert base_dir.is_dir()
        shutil.rmtree(base_dir)
        base_dir.write_text("not a directory")
        zygote.send_signal(signal.SIGKILL)
        await wait_until(lambda: _healthz_is(metrics_port, 503), timeout=10)
        # Nothing is claimed meanwhile (a claimed job could only fail or be given back).
        job = await submit(stub, "document", {"spec": example("document")["spec"]}, max_retries=0)
        status = await asyncio.to_thread(renderer.process.wait, 60)
        assert status == EXIT_SANDBOX_LOST and status != EXIT_DO_NOT_RESTART, renderer.log
        assert "could not be restarted" in renderer.log
        after = await _job(stub, job.id)
        assert after.status == pb.JOB_STATUS_PENDING and not after.started_at.seconds, renderer.log
    finally:
        renderer.kill()


async def _healthz_is(port: int, status: int) -> bool:
    return await _healthz(port) == status


# A document of about 1.2 MB (random hexadecimal compresses to half), more than the renderer's disk holds.
BIG_DOCUMENT = """
import os
from docx import Document
document = Document()
document.add_paragraph(os.urandom(1_200_000).hex())
document.save(output_path)
"""


def documents_under(directory: Path) -> list[Path]:
    return list(directory.rglob("*.docx"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs of 1 MiB of its own."""
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs as the renderer's data directory")
    data_dir = tmp_path / "small-disk"
    data_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "docjobs-test", str(data_dir)], check=True)
    try:
        yield data_dir
    finally:
        subprocess.run(["umount", "--lazy", str(data_dir)], check=True)


async def test_a_job_the_renderers_full_disk_cannot_hold_is_given_back_not_failed(stub, jobstore,
                                                                                   small_disk: Path) -> None:
    """The renderer's own disk is full: the job did nothing wrong, so it is given back (no attempt
    counted, another renderer may have room), and this renderer backs off before it takes jobs again.
    Given back more than FREE_RELEASES times, each further release counts an attempt: with no retry
    allowed the job then fails, with the reason, rather than going round for ever. Before, the job failed
    at once as `code_failed`, its code blamed for the host's disk."""
    renderer = RendererProcess(jobstore.address, small_disk, DOCJOBS_CODE_EXECUTION="sandbox").start()
    try:
        job = await submit(stub, "document", {"code": BIG_DOCUMENT}, max_retries=0)
        final, events = await wait_finished(stub, job.id, timeout=180)
    finally:
        renderer.kill()
        log = renderer.log
    assert final.status == pb.JOB_STATUS_FAILED and final.error.code == "sandbox_unavailable", (final, log)
    assert "No space left on device" in final.error.message
    assert final.release_count == FREE_RELEASES + 1
    released = [e for e in events if e.kind == pb.EVENT_KIND_STATUS and e.status == pb.JOB_STATUS_PENDING
                and e.message.startswith("released:")]
    assert len(released) == FREE_RELEASES and not any(e.error.code for e in released), events
    assert all("cannot be copied out: No space left on device" in e.message for e in released), released
    assert log.count("given back (sandbox_unavailable)") == FREE_RELEASES + 1, log
    # What each try wrote before the disk was full was removed: it does not keep the disk full.
    assert not documents_under(small_disk), documents_under(small_disk)
