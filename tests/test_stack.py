"""`docjobs up` (what `make run` runs): the stack as separate processes, supervised (a process that dies
is started again), stopped cleanly by Ctrl-C, and stopped with its reason on a crash loop or a process
that must not be restarted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import docx
import grpc
import openpyxl
import pptx
import psutil
import pypdf
import pytest

from docjobs.channels import jobstore_channel_blocking
from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from renderer.specs import EXTENSIONS

from .conftest import GRPC_TOKEN
from .processes import StackProcess, wait_for
from .renderers import example


def _wait_for_job_store(address: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> pb_grpc.JobStoreStub:
    deadline = time.monotonic() + timeout
    channel = jobstore_channel_blocking(address, GRPC_TOKEN)
    stub = pb_grpc.JobStoreStub(channel)
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            stub.GetStats(pb.GetStatsRequest(), timeout=1)
            return stub
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.1)


READERS = {
    "spreadsheet": lambda p: openpyxl.load_workbook(p)["Summary"]["A2"].value == "North" or pytest.fail("xlsx"),
    "document": lambda p: docx.Document(str(p)).tables[0].rows[0].cells[0].text == "Team" or pytest.fail("docx"),
    "pdf": lambda p: "Invoice INV-2026-0117" in pypdf.PdfReader(str(p)).pages[0].extract_text() or pytest.fail("pdf"),
    "presentation": lambda p: len(pptx.Presentation(str(p)).slides) == 5 or pytest.fail("pptx"),
}


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """The supervisor and every service it started (each runs in a session of its own and holds the
    supervisor's output pipe), so that a failing test leaves nothing running."""
    if proc.poll() is not None:
        return
    for child in psutil.Process(proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    proc.kill()
    proc.communicate()


def _wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.1)


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    # As root under a private directory (pytest's), the cluster lives elsewhere, linked from pgdata.
    pgdata = str((data_dir / "postgres" / "pgdata").resolve())
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and pgdata in cmdline:
            found.append(proc)
    return found


def test_docjobs_up_starts_postgres_and_jobstore_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    http_port = free_port()
    env.update(DOCJOBS_DATA_DIR=str(data_dir), DOCJOBS_GRPC_PORT=str(grpc_port), DOCJOBS_PG_PORT=str(free_port()),
               DOCJOBS_HTTP_PORT=str(http_port), DOCJOBS_RENDERERS="2")
    proc = subprocess.Popen([sys.executable, "-m", "docjobs.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        stub = _wait_for_job_store(f"127.0.0.1:{grpc_port}", proc)
        _wait_for_http(f"http://127.0.0.1:{http_port}/healthz", proc)
        job = stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{}")).job
        # Pending, or already processing: a renderer whose claim waits for work takes it in the enqueue's
        # own statement (the hand-off, docs/architecture.md).
        assert job.status in (pb.JOB_STATUS_PENDING, pb.JOB_STATUS_PROCESSING)
        # Every example through the gateway (no-auth demo mode) and the two renderers, opened in its reader.
        for job_type in ("spreadsheet", "document", "pdf", "presentation"):
            body = json.dumps(example(job_type)).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/jobs", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                created = json.loads(response.read())
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{created['eventsUrl']}", timeout=60) as r:
                stream = r.read().decode()
            assert "event: job-complete" in stream, stream
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{created['downloadUrl']}", timeout=60) as r:
                target = tmp_path / f"{job_type}.{EXTENSIONS[job_type]}"
                target.write_bytes(r.read())
            READERS[job_type](target)
        assert _postgres_processes(data_dir), "the embedded Postgres runs from DOCJOBS_DATA_DIR"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = proc.communicate(timeout=60)
    finally:
        _kill_tree(proc)
    log = out.decode()
    assert proc.returncode == 0, log
    assert "stopping jobstore" in log and "stopping embedded Postgres" in log
    assert log.index("stopping gateway") < log.index("stopping renderer-1") < log.index("stopping jobstore") \
        < log.index("stopping embedded Postgres")
    assert "NO AUTHENTICATION" in log
    assert _postgres_processes(data_dir) == []
    # Data survives a restart: the job is still there.
    proc = subprocess.Popen([sys.executable, "-m", "docjobs.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        stub = _wait_for_job_store(f"127.0.0.1:{grpc_port}", proc)
        assert stub.GetJob(pb.GetJobRequest(job_id=job.id)).id == job.id
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        _kill_tree(proc)
    assert proc.returncode == 0


def test_docjobs_up_refuses_a_bad_setting_with_one_line() -> None:
    env = {**os.environ, "DOCJOBS_RENDERERS": "lots"}
    result = subprocess.run([sys.executable, "-m", "docjobs.cli", "up"], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["docjobs: DOCJOBS_RENDERERS must be an integer, got 'lots'"]


def test_docjobs_up_uses_database_url_when_set(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "unused"
    grpc_port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "DOCJOBS_DATA_DIR": str(data_dir),
           "DOCJOBS_GRPC_PORT": str(grpc_port)}
    proc = subprocess.Popen([sys.executable, "-m", "docjobs.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        stub = _wait_for_job_store(f"127.0.0.1:{grpc_port}", proc)
        stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{}"))
        assert not (data_dir / "postgres").exists()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        _kill_tree(proc)
    assert proc.returncode == 0, out.decode()
    assert "embedded Postgres" not in out.decode()


# Supervision. Each test runs `docjobs up` with a restart policy of its own (settings), so that the crash-loop
# window never depends on how fast the machine is.

def _rows_spec(rows: int) -> dict[str, object]:
    """A spreadsheet that takes a few seconds to render: a render to kill in the middle."""
    columns = [{"header": "Region"}, {"header": "Units", "format": "integer"},
               {"header": "Price", "format": "currency"}, {"header": "Amount", "format": "currency"}]
    return {"sheets": [{"name": "Data", "columns": columns, "rows": [
        [["North", "South", "East", "West"][r % 4], r % 97, 9.99 + r % 13, {"formula": f"B{r + 2}*C{r + 2}"}]
        for r in range(rows)]}]}


def _post(base: str, body: dict[str, object]) -> dict[str, str] | None:
    """POST /api/jobs; None while the stack cannot take it (503 while the database restarts)."""
    request = urllib.request.Request(f"{base}/api/jobs", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, (exc.code, exc.read())
        return None
    except OSError:
        return None


def _healthy(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
        return bool(response.status == 200)


def test_a_renderer_killed_in_the_middle_of_a_render_is_restarted_and_the_job_completes(
        tmp_path: Path, database_url: str) -> None:
    stack = StackProcess(tmp_path / "up.log", database_url, DOCJOBS_RENDERERS="1", DOCJOBS_LEASE_MS="3000",
                         DOCJOBS_MAINTENANCE_INTERVAL_S="0.2", DOCJOBS_RETRY_BASE_MS="100",
                         DOCJOBS_RETRY_CAP_MS="200", DOCJOBS_RESTART_BACKOFF_S="0.2").start()
    try:
        stack.wait_up()
        renderer = stack.service("renderer-1")
        assert renderer is not None
        created = _post(stack.base, {"documentType": "spreadsheet", "title": "Big", "sessionId": "s",
                                     "spec": _rows_spec(30_000)})
        assert created is not None
        with jobstore_channel_blocking(f"127.0.0.1:{stack.grpc_port}", GRPC_TOKEN) as channel:
            stub = pb_grpc.JobStoreStub(channel)

            def job() -> pb.Job:
                return stub.GetJob(pb.GetJobRequest(job_id=created["jobId"]))

            wait_for(lambda: job().status == pb.JOB_STATUS_PROCESSING and job().progress > 0, "the render under way",
                     log=lambda: stack.log)
            renderer.send_signal(signal.SIGKILL)  # what the OOM killer does: that process, nothing else
            stack.restarted("renderer-1", renderer)
            wait_for(lambda: job().status == pb.JOB_STATUS_COMPLETED, "the job completed", timeout=120,
                     log=lambda: stack.log)
            finished = job()
        assert finished.retry_count == 1 and finished.worker_id == "renderer-1", (finished, stack.log)
        assert stack.process is not None and stack.process.poll() is None
        assert _healthy(stack.base)
        with urllib.request.urlopen(f"{stack.base}{created['eventsUrl']}", timeout=30) as response:
            stream = response.read().decode()
        assert "event: job-complete" in stream, stream
        assert stack.stop() == 0, stack.log
    finally:
        stack.kill_tree()
    log = stack.log
    assert "renderer-1 was killed by SIGKILL; restarting it in 0.2 s (restart 1 of at most 5 within 60 s)" in log
    assert "stopping the stack: SIGINT (Ctrl-C) received" in log


def test_the_embedded_postgres_killed_is_restarted_and_the_stack_recovers(tmp_path: Path) -> None:
    stack = StackProcess(tmp_path / "up.log", DOCJOBS_RENDERERS="1", DOCJOBS_RESTART_BACKOFF_S="0.2").start()
    try:
        stack.wait_up()
        postmaster = stack.service("postgres")
        assert postmaster is not None
        postmaster.send_signal(signal.SIGKILL)  # the postmaster only; its backends notice and exit
        stack.restarted("postgres", postmaster)
        created = wait_for(lambda: _post(stack.base, example("pdf")), "a job accepted again", log=lambda: stack.log)
        assert isinstance(created, dict)
        with urllib.request.urlopen(f"{stack.base}{created['eventsUrl']}", timeout=60) as response:
            stream = response.read().decode()
        assert "event: job-complete" in stream, stream
        assert stack.process is not None and stack.process.poll() is None
        assert stack.stop() == 0, stack.log
    finally:
        stack.kill_tree()
    assert "embedded Postgres was killed by SIGKILL; restarting it in" in stack.log
    assert _postgres_processes(tmp_path / "data") == []


def test_a_service_that_keeps_dying_stops_the_stack_with_the_reason(tmp_path: Path, database_url: str) -> None:
    stack = StackProcess(tmp_path / "up.log", database_url, DOCJOBS_RENDERERS="1", DOCJOBS_RESTART_BACKOFF_S="0.05",
                         DOCJOBS_CRASH_LOOP_RESTARTS="2", DOCJOBS_CRASH_LOOP_WINDOW_S="3600").start()
    try:
        stack.wait_up()
        renderer = stack.service("renderer-1")
        others = [stack.service("jobstore"), stack.service("gateway")]
        assert renderer is not None
        for _ in range(2):
            renderer.send_signal(signal.SIGKILL)
            renderer = stack.restarted("renderer-1", renderer)
        renderer.send_signal(signal.SIGKILL)  # a third death within the window: more than two restarts
        assert stack.wait_exit() == 1, stack.log
    finally:
        stack.kill_tree()
    log = stack.log
    assert "stopping the stack: renderer-1 is crash-looping: it was killed by SIGKILL after 2 restart(s) " \
           "within 3600 s" in log
    assert log.count("restarting it in") == 2
    assert log.index("crash-looping") < log.index("stopping gateway") < log.index("stopping jobstore")
    assert not any(p is None or p.is_running() for p in others)


def test_a_renderer_that_must_not_be_restarted_stops_the_stack_at_once(tmp_path: Path, database_url: str) -> None:
    # A renderer whose sandbox cannot start (its data directory cannot exist: a file is in the way) says
    # a restart cannot help, with its reason; the stack stops without a single restart.
    (tmp_path / "a-file").write_text("")
    stack = StackProcess(tmp_path / "up.log", database_url, DOCJOBS_RENDERERS="1",
                         DOCJOBS_DATA_DIR=str(tmp_path / "a-file" / "data")).start()
    try:
        assert stack.wait_exit() == 1, stack.log
    finally:
        stack.kill_tree()
    log = stack.log
    assert "renderer renderer-1 cannot start: its render sandbox cannot start ([Errno 20] Not a directory" in log
    assert "stopping the stack: renderer-1 exited with status 78, which says a restart cannot help" in log
    assert "restarting it" not in log
    assert "stopping jobstore" in log
