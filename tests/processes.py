"""Starting real service processes for tests, the way `docjobs up` starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from docjobs.pgserver import free_port


class JobStoreProcess:
    def __init__(self, database_url: str, env: Mapping[str, str] | None = None, port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, "DATABASE_URL": database_url, "DOCJOBS_GRPC_PORT": str(self.port),
                    "DOCJOBS_MAINTENANCE_INTERVAL_S": "0.2", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_path  # None: output kept in a pipe (read at exit); a file for long runs

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> JobStoreProcess:
        if self.log_path is None:
            self.process = subprocess.Popen([sys.executable, "-m", "jobstore.server"], env=self.env,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "jobstore.server"], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def healthy(self) -> bool:
        try:
            with grpc.insecure_channel(self.address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            assert self.process is not None
            if self.process.poll() is not None:
                output = (self.process.stdout.read().decode() if self.process.stdout
                          else self.log_path.read_text(errors="replace") if self.log_path else "")
                raise AssertionError(f"jobstore exited with {self.process.returncode}:\n{output}")
            if time.monotonic() > deadline:
                raise AssertionError("jobstore did not become healthy")
            time.sleep(0.05)

    def terminate(self, timeout: float = 20.0) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            out, _ = self.process.communicate()
        return self.process.returncode, (out or b"").decode()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate()


class GatewayProcess:
    """The gateway as its own process (JWT auth with the tests' secret), on a fixed port across restarts."""

    def __init__(self, jobstore_address: str, log_path: Path, port: int | None = None, **env: str) -> None:
        from .gateway_client import SECRET

        self.port = port or free_port()
        self.env = {**os.environ, "DOCJOBS_JOBSTORE_ADDRESS": jobstore_address, "DOCJOBS_HTTP_PORT": str(self.port),
                    "DOCJOBS_AUTH": "jwt", "DOCJOBS_JWT_SECRET": SECRET, "DOCJOBS_SSE_HEARTBEAT": "0.5", **env}
        self.env.pop("DATABASE_URL", None)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gateway.app"], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("gateway did not become ready")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
