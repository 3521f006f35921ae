"""`docjobs up` (what `make run` runs): the stack as separate processes, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import psutil

from docjobs.pgserver import free_port
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

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
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_docjobs_up_starts_postgres_and_jobstore_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    http_port = free_port()
    env.update(DOCJOBS_DATA_DIR=str(data_dir), DOCJOBS_GRPC_PORT=str(grpc_port), DOCJOBS_PG_PORT=str(free_port()),
               DOCJOBS_HTTP_PORT=str(http_port), DOCJOBS_RENDERERS="1")
    proc = subprocess.Popen([sys.executable, "-m", "docjobs.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        stub = _wait_for_job_store(f"127.0.0.1:{grpc_port}", proc)
        _wait_for_http(f"http://127.0.0.1:{http_port}/healthz", proc)
        job = stub.Enqueue(pb.EnqueueRequest(job_type="pdf", user_id="u", payload_json="{}")).job
        assert job.status == pb.JOB_STATUS_PENDING
        # The whole path through the gateway (no-auth demo mode) and a renderer.
        body = json.dumps(example("pdf")).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/jobs", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            created = json.loads(response.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{created['eventsUrl']}", timeout=60) as response:
            stream = response.read().decode()
        assert "event: job-complete" in stream
        assert _postgres_processes(data_dir), "the embedded Postgres runs from DOCJOBS_DATA_DIR"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
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
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
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
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert "embedded Postgres" not in out.decode()
