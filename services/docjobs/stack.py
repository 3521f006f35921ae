"""`docjobs up`: the whole stack as separate processes on one machine, supervised.

Starts an embedded Postgres (unless DATABASE_URL is set), then the jobstore, then the renderers and the
gateway, each as its own process in its own session, and waits for each to be healthy before the next.

Then it supervises them. A process that exits on its own (a renderer killed by the OOM killer, a crashed
Postgres) is started again after a backoff that doubles with each recent restart, and each restart is one
line in the log. The services need nothing else for that: renderers give up their claims by lease, and
the jobstore and the renderers reconnect by themselves. The stack stops (services in reverse order, the
database last) only on:

* Ctrl-C (SIGINT) or SIGTERM: exit status 0;
* a crash loop: one process would be restarted more than `max_restarts` times within `window_s`;
* a process exiting with EXIT_DO_NOT_RESTART (docjobs.exits): it says a restart cannot help;

the last two with exit status 1. Each stop is one line in the log saying why.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .channels import TOKEN_ENV, grpc_token, new_token
from .exits import EXIT_DO_NOT_RESTART
from .health import grpc_healthy, http_ok
from .pgserver import EmbeddedPostgres, PostgresStartError
from .settings import data_dir, database_url, env_float, env_int, env_port

log = logging.getLogger("docjobs")

Clock = Callable[[], float]


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor restarts a process that exited on its own, and when it gives up.

    The n-th restart within `window_s` waits `backoff_s * 2**(n-1)`, at most `backoff_max_s`; a process
    that would be restarted more than `max_restarts` times within `window_s` is crash-looping.
    """

    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RestartPolicy:
        return cls(
            backoff_s=env_float(env, "DOCJOBS_RESTART_BACKOFF_S", 0.5, minimum=0.0, maximum=600.0),
            backoff_max_s=env_float(env, "DOCJOBS_RESTART_BACKOFF_MAX_S", 30.0, minimum=0.0, maximum=3600.0),
            max_restarts=env_int(env, "DOCJOBS_CRASH_LOOP_RESTARTS", 5, minimum=0, maximum=1000),
            window_s=env_float(env, "DOCJOBS_CRASH_LOOP_WINDOW_S", 60.0, minimum=1.0, maximum=86_400.0),
        )


class Restarts:
    """One process's recent restarts, judged by the policy. The clock is a parameter, so that tests of
    the backoff and of the crash-loop window are exact."""

    def __init__(self, policy: RestartPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._times: deque[float] = deque()

    def recent(self) -> int:
        """Restarts within the window, up to now."""
        horizon = self.clock() - self.policy.window_s
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        return len(self._times)

    def next_delay(self) -> float | None:
        """Seconds to wait before restarting the process that just exited, or None: it is crash-looping."""
        recent = self.recent()
        if recent >= self.policy.max_restarts:
            return None
        return float(min(self.policy.backoff_max_s, self.policy.backoff_s * 2 ** recent))

    def record(self) -> None:
        self._times.append(self.clock())


@dataclass(frozen=True)
class StackSettings:
    database_url: str | None
    data_dir: os.PathLike[str]
    pg_port: int
    grpc_port: int
    http_port: int
    renderers: int
    restart: RestartPolicy = RestartPolicy()
    # The jobstore's shared secret, handed to every process of this run: DOCJOBS_GRPC_TOKEN when set (a
    # tool of the operator's may then call the jobstore too), else a fresh one per run.
    grpc_token: str = field(default_factory=new_token, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackSettings:
        return cls(
            database_url=database_url(env),
            data_dir=data_dir(env),
            pg_port=env_port(env, "DOCJOBS_PG_PORT", 54329),
            grpc_port=env_port(env, "DOCJOBS_GRPC_PORT", 50051),
            http_port=env_port(env, "DOCJOBS_HTTP_PORT", 8080),
            renderers=env_int(env, "DOCJOBS_RENDERERS", 2, minimum=0, maximum=64),
            restart=RestartPolicy.from_env(env),
            grpc_token=grpc_token(env) if env.get(TOKEN_ENV) else new_token(),
        )


class Unit(Protocol):
    """A process the supervisor starts, watches and stops."""

    name: str

    def launch(self) -> None: ...

    def exit_status(self) -> int | None:
        """None while it runs; its exit status (negative: killed by that signal) once it has ended."""

    def stop(self, grace: float) -> None: ...


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool] = lambda: True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def launch(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True, stdin=subprocess.DEVNULL)

    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, grace: float) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        log.info("stopping %s", self.name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, grace)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Database:
    """The embedded Postgres as a unit: a restart runs the server's own start (which waits until it
    accepts connections); a start that fails counts as one more exit."""

    name = "embedded Postgres"

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self._failed: int | None = None

    def launch(self) -> None:
        self._failed = None
        try:
            self.server.start()
        except (PostgresStartError, subprocess.CalledProcessError, OSError) as exc:
            log.error("embedded Postgres could not be started: %s", exc)
            status = self.server.poll()
            self._failed = status if status is not None else 1

    def exit_status(self) -> int | None:
        return self._failed if self._failed is not None else self.server.poll()

    def stop(self, grace: float) -> None:
        log.info("stopping embedded Postgres")
        self.server.stop()


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


class StopRequested(Exception):
    """Ctrl-C or SIGTERM while the stack was still starting: stop what started, cleanly."""


class Stack:
    def __init__(self, settings: StackSettings, env: Mapping[str, str], *, clock: Clock = time.monotonic,
                 poll_s: float = 0.1) -> None:
        self.settings = settings
        self.env = dict(env)
        self.clock = clock
        self.poll_s = poll_s
        self.postgres: EmbeddedPostgres | None = None
        self.units: list[Unit] = []  # in start order; stopped in reverse
        self._restarts: dict[str, Restarts] = {}
        self._due: dict[str, float] = {}  # name -> when its pending restart is due
        # Set by request_stop, the signal handler. Not a threading.Event: a Python signal handler runs
        # in the main thread between two bytecodes, perhaps while that thread holds the Event's lock
        # inside Event.wait(), and Event.set() would then wait for that lock forever (a hung Ctrl-C).
        self._stop_requested = False
        self.stop_reason = "a stop request"

    def database(self) -> str:
        if self.settings.database_url:
            log.info("using the database at DATABASE_URL")
            return self.settings.database_url
        base = os.fspath(self.settings.data_dir)
        self.postgres = EmbeddedPostgres(Path(base) / "postgres", port=self.settings.pg_port)
        log.info("starting embedded Postgres (data in %s, port %d)", base, self.settings.pg_port)
        dsn = self.postgres.start()
        self._watch(Database(self.postgres))
        return dsn

    def plan(self, dsn: str) -> list[Service]:
        env = {**self.env, "DATABASE_URL": dsn, "DOCJOBS_GRPC_PORT": str(self.settings.grpc_port),
               TOKEN_ENV: self.settings.grpc_token}
        jobstore_address = f"127.0.0.1:{self.settings.grpc_port}"
        # The pg-boss bridge, when on, signs its download links as this stack's gateway does (its auth mode
        # below) and makes them absolute with the gateway's address.
        jobstore_env = {**env, "DOCJOBS_AUTH": env.get("DOCJOBS_AUTH", "none"),
                        "DOCJOBS_PUBLIC_URL": env.get("DOCJOBS_PUBLIC_URL", f"http://127.0.0.1:{self.settings.http_port}")}
        services = [Service("jobstore", [sys.executable, "-m", "jobstore.server"], jobstore_env,
                            grpc_healthy(jobstore_address))]
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
            if self._stop_requested:
                raise StopRequested
            self._start_service(service)

    def _watch(self, unit: Unit) -> None:
        self.units.append(unit)
        self._restarts[unit.name] = Restarts(self.settings.restart, self.clock)

    def _start_service(self, service: Service, timeout: float = 60.0) -> None:
        log.info("starting %s", service.name)
        service.launch()
        self._watch(service)
        deadline = time.monotonic() + timeout
        while not service.ready():
            if self._stop_requested:
                raise StopRequested
            status = service.exit_status()
            if status is not None:
                raise RuntimeError(f"{service.name} {describe_exit(status)} at start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not become ready within {timeout:.0f}s")
            time.sleep(0.1)
        log.info("%s is ready", service.name)

    def supervise(self) -> int:
        """Restart what exits on its own, until a stop signal (0), a crash loop or a process that must
        not be restarted (1)."""
        while not self._sleep_unless_stopped(self.poll_s):
            outcome = self.check()
            if outcome is not None:
                return outcome
        log.info("stopping the stack: %s received", self.stop_reason)
        return 0

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep unless a stop was requested (a signal does not cut the sleep short); whether one was."""
        if not self._stop_requested:
            time.sleep(seconds)
        return self._stop_requested

    def check(self) -> int | None:
        """One round: start what is due, judge what has exited. An exit status for the stack, or None."""
        now = self.clock()
        for unit in self.units:
            due = self._due.get(unit.name)
            if due is not None:
                if now >= due and not self._stop_requested:
                    del self._due[unit.name]
                    self._restarts[unit.name].record()
                    try:
                        unit.launch()
                    except OSError as exc:  # no fork (memory): judged as one more exit next round
                        log.error("%s could not be started: %s", unit.name, exc)
                continue
            status = unit.exit_status()
            if status is None:
                continue
            if status == EXIT_DO_NOT_RESTART:
                log.error("stopping the stack: %s %s, which says a restart cannot help (its reason is in the "
                          "lines above)", unit.name, describe_exit(status))
                return 1
            restarts = self._restarts[unit.name]
            delay = restarts.next_delay()
            policy = self.settings.restart
            if delay is None:
                log.error("stopping the stack: %s is crash-looping: it %s after %d restart(s) within %g s",
                          unit.name, describe_exit(status), restarts.recent(), policy.window_s)
                return 1
            log.warning("%s %s; restarting it in %.1f s (restart %d of at most %d within %g s)", unit.name,
                        describe_exit(status), delay, restarts.recent() + 1, policy.max_restarts, policy.window_s)
            self._due[unit.name] = now + delay
        return None

    def request_stop(self, signum: int = 0, *_: object) -> None:
        if signum:
            self.stop_reason = signal.Signals(signum).name + (" (Ctrl-C)" if signum == signal.SIGINT else "")
        self._stop_requested = True  # only a flag: see __init__

    def stop(self, grace: float = 15.0) -> None:
        for unit in reversed(self.units):
            unit.stop(grace)


def up(env: Mapping[str, str]) -> int:
    settings = StackSettings.from_env(env)
    stack = Stack(settings, env)
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    try:
        stack.start()
        log.info("docjobs is up: http://127.0.0.1:%d (jobstore gRPC on 127.0.0.1:%d, %d renderer(s)). "
                 "Ctrl-C stops everything.", settings.http_port, settings.grpc_port, settings.renderers)
        return stack.supervise()
    except StopRequested:
        log.info("stopping the stack: %s received while starting", stack.stop_reason)
        return 0
    except RuntimeError as exc:
        log.error("stopping the stack: %s", exc)
        return 1
    finally:
        stack.stop()
