"""Starting real service processes for tests, the way `docjobs up` starts them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from docjobs.health import grpc_healthy
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
        return grpc_healthy(self.address, timeout=1)()

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
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()  # also when it had ended by itself: its output pipe is closed


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


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0, interval: float = 0.05,
             log: Callable[[], str] | None = None) -> object:
    """Poll a condition until it holds (its value is returned); fails naming it (and with the log) otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s" + (f"\n{log()}" if log else ""))
        time.sleep(interval)


class StackProcess:
    """`docjobs up` as a real process on free ports, its output and its services' in one log file."""

    def __init__(self, log_path: Path, database_url: str | None = None, **env: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        self.env.update(DOCJOBS_GRPC_PORT=str(self.grpc_port), DOCJOBS_HTTP_PORT=str(self.http_port),
                        DOCJOBS_PG_PORT=str(free_port()), DOCJOBS_DATA_DIR=str(log_path.parent / "data"),
                        DOCJOBS_RENDER_CONCURRENCY="1")
        self.env.update(env)
        if database_url is not None:
            self.env["DATABASE_URL"] = database_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> StackProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "docjobs.cli", "up"], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def wait_up(self, timeout: float = 90.0) -> StackProcess:
        def up() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log
            return "docjobs is up" in self.log

        wait_for(up, "docjobs up", timeout, log=lambda: self.log)
        return self

    def children(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def service(self, name: str) -> psutil.Process | None:
        """The running process of one service (`jobstore`, `renderer-1`, `gateway`, `postgres`)."""
        for child in self.children():
            try:
                if name == "postgres":
                    if child.name() == "postgres":
                        return child
                    continue
                module = {"jobstore": "jobstore.server", "gateway": "gateway.app"}.get(name, "renderer.worker")
                if module in child.cmdline() and (module != "renderer.worker"
                                                  or child.environ().get("DOCJOBS_WORKER_ID") == name):
                    return child
            except psutil.Error:
                continue
        return None

    def restarted(self, name: str, old: psutil.Process) -> psutil.Process:
        """Wait until `name` runs again as a process other than `old`, and return it."""
        def new() -> psutil.Process | None:
            assert self.process is not None and self.process.poll() is None, self.log
            found = self.service(name)
            return found if found is not None and found.pid != old.pid else None

        found = wait_for(new, f"{name} restarted", log=lambda: self.log)
        assert isinstance(found, psutil.Process)
        return found

    def wait_exit(self, timeout: float = 90.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 90.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        return self.process.wait(timeout)

    def kill_tree(self) -> None:
        """The supervisor and everything it started (each service runs in a session of its own), so that a
        failing test leaves nothing running."""
        if self.process is None or self.process.poll() is not None:
            return
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.process.kill()
        self.process.wait()
