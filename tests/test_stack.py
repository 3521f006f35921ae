"""`docjobs up` (what `make run` runs): the stack as separate processes, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import docx
import grpc
import openpyxl
import pptx
import psutil
import pypdf
import pytest

from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from renderer.specs import EXTENSIONS

from .renderers import example


def _wait_for_job_store(address: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> pb_grpc.JobStoreStub:
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(address)
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
        assert job.status == pb.JOB_STATUS_PENDING
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
