"""`docjobs up`: the whole stack as separate processes on one machine.

Starts an embedded Postgres (unless DATABASE_URL is set), then the jobstore, then the renderers and the
gateway, each as its own process in its own session, and waits for each to be healthy before the next.
Ctrl-C (SIGINT) or SIGTERM stops them in reverse order, each with SIGTERM and a grace period, and the
database last. If a service dies on its own, the whole stack is stopped and the exit status says so.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .health import grpc_healthy, http_ok
from .pgserver import EmbeddedPostgres
from .settings import data_dir, database_url, env_int, env_port

log = logging.getLogger("docjobs")


@dataclass(frozen=True)
class StackSettings:
    database_url: str | None
    data_dir: os.PathLike[str]
    pg_port: int
    grpc_port: int
    http_port: int
    renderers: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackSettings:
        return cls(
            database_url=database_url(env),
            data_dir=data_dir(env),
            pg_port=env_port(env, "DOCJOBS_PG_PORT", 54329),
            grpc_port=env_port(env, "DOCJOBS_GRPC_PORT", 50051),
            http_port=env_port(env, "DOCJOBS_HTTP_PORT", 8080),
            renderers=env_int(env, "DOCJOBS_RENDERERS", 2, minimum=0, maximum=64),
        )


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool] = lambda: True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class StopRequested(Exception):
    """Ctrl-C or SIGTERM while the stack was still starting: stop what started, cleanly."""


class Stack:
    def __init__(self, settings: StackSettings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.env = dict(env)
        self.postgres: EmbeddedPostgres | None = None
        self.services: list[Service] = []
        self._stop = threading.Event()

    def database(self) -> str:
        if self.settings.database_url:
            log.info("using the database at DATABASE_URL")
            return self.settings.database_url
        base = os.fspath(self.settings.data_dir)
        self.postgres = EmbeddedPostgres(Path(base) / "postgres", port=self.settings.pg_port)
        log.info("starting embedded Postgres (data in %s, port %d)", base, self.settings.pg_port)
        return self.postgres.start()

    def plan(self, dsn: str) -> list[Service]:
        env = {**self.env, "DATABASE_URL": dsn, "DOCJOBS_GRPC_PORT": str(self.settings.grpc_port)}
        jobstore_address = f"127.0.0.1:{self.settings.grpc_port}"
        services = [Service("jobstore", [sys.executable, "-m", "jobstore.server"], env, grpc_healthy(jobstore_address))]
        # Renderers never see the database URL.
        renderer_env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
        renderer_env["DOCJOBS_JOBSTORE_ADDRESS"] = jobstore_address
        for n in range(self.settings.renderers):
            services.append(Service(f"renderer-{n + 1}", [sys.executable, "-m", "renderer.worker"],
                                    {**renderer_env, "DOCJOBS_WORKER_ID": f"renderer-{n + 1}"}))
        # The local stack is a demo: no authentication unless asked for (the gateway then binds to
        # loopback only and says so loudly).
        gateway_env = {**renderer_env, "DOCJOBS_AUTH": renderer_env.get("DOCJOBS_AUTH", "none"),
                       "DOCJOBS_HTTP_PORT": str(self.settings.http_port)}
        services.append(Service("gateway", [sys.executable, "-m", "gateway.app"], gateway_env,
                                http_ok(f"http://127.0.0.1:{self.settings.http_port}/healthz")))
        return services

    def start(self) -> None:
        dsn = self.database()
        for service in self.plan(dsn):
            if self._stop.is_set():
                raise StopRequested
            self._start_service(service)

    def _start_service(self, service: Service, timeout: float = 60.0) -> None:
        log.info("starting %s", service.name)
        service.process = subprocess.Popen(service.argv, env=service.env, start_new_session=True,
                                           stdin=subprocess.DEVNULL)
        self.services.append(service)
        deadline = time.monotonic() + timeout
        while not service.ready():
            if self._stop.is_set():
                raise StopRequested
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited with status {service.process.returncode} at start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not become ready within {timeout:.0f}s")
            time.sleep(0.1)
        log.info("%s is ready", service.name)

    def wait(self) -> int:
        """Until a stop signal (0) or a service dying on its own (1)."""
        while not self._stop.wait(0.2):
            for service in self.services:
                if service.process is not None and service.process.poll() is not None:
                    log.error("%s exited with status %s; stopping the stack", service.name,
                              service.process.returncode)
                    return 1
        return 0

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def stop(self, grace: float = 15.0) -> None:
        for service in reversed(self.services):
            proc = service.process
            if proc is None or proc.poll() is not None:
                continue
            log.info("stopping %s", service.name)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", service.name, grace)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.postgres is not None:
            log.info("stopping embedded Postgres")
            self.postgres.stop()


def up(env: Mapping[str, str]) -> int:
    settings = StackSettings.from_env(env)
    stack = Stack(settings, env)
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    try:
        stack.start()
        log.info("docjobs is up: http://127.0.0.1:%d (jobstore gRPC on 127.0.0.1:%d, %d renderer(s)). "
                 "Ctrl-C stops everything.", settings.http_port, settings.grpc_port, settings.renderers)
        return stack.wait()
    except StopRequested:
        return 0
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        stack.stop()
