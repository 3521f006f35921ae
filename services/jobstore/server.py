"""The jobstore process: wiring, lifecycle (start, ready, drain, stop) and the command-line entry."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import replace

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from docjobs.channels import MAX_MESSAGE_BYTES
from docjobs.exits import EXIT_DO_NOT_RESTART
from docjobs.metrics_http import MetricsServer, start_metrics_server
from docjobs.settings import load_or_exit, setup_logging
from docjobs.v1 import jobstore_pb2

from . import metrics, wire
from .auth import BearerTokenInterceptor
from .claims import ClaimWaiters
from .clock import Clock
from .deliveries import Deliveries
from .doorbell import CANCELLED_PREFIX, WAKE_ALL, Doorbell
from .errors import DATABASE_ERRORS
from .events import EventDispatcher
from .maintenance import Maintenance
from .metrics import QueueGauges
from .migrations import migrate
from .pgboss import PgBossBridge, PgBossRefused
from .queries import Q
from .service import JobStoreService
from .session import Sessions
from .settings import Settings
from .store import Store
from .watch import Watches

log = logging.getLogger("jobstore")

SERVICE_NAME = jobstore_pb2.DESCRIPTOR.services_by_name["JobStore"].full_name
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]
# DOCJOBS_JOBSTORE_PROCESSES: the first process starts the others, each told its index (and its first
# process's pid) here. They share the port with SO_REUSEPORT, which the kernel balances by connection; a
# lone process leaves it off, so that a second jobstore on its port is an error rather than a silent half.
PROCESS_INDEX_ENV = "DOCJOBS_JOBSTORE_PROCESS_INDEX"
PARENT_PID_ENV = "DOCJOBS_JOBSTORE_PARENT_PID"
HEALTH_CHECK_S = 1.0
# The health service name a liveness probe asks: SERVING while the process runs, whatever the database
# does (the overall status "" follows the database and is what readiness asks).
LIVENESS_SERVICE = "liveness"


class JobStoreServer:
    """Everything one jobstore process runs, started and stopped in order."""

    def __init__(self, settings: Settings, clock: Clock | None = None, *, shared_port: bool = False) -> None:
        self.settings = settings
        self.shared_port = shared_port  # one of DOCJOBS_JOBSTORE_PROCESSES on one port
        self.clock = clock if clock is not None else Clock()  # tests pass a ManualClock
        self.shutdown = asyncio.Event()
        self.port = 0
        self.pool: asyncpg.Pool
        self.claims = ClaimWaiters()
        self.sessions = Sessions()
        self.dispatcher: EventDispatcher
        self.doorbell: Doorbell
        self.store: Store
        self.maintenance: Maintenance
        self.watches: Watches
        self.service: JobStoreService
        self.pgboss: PgBossBridge | None = None  # DOCJOBS_PGBOSS_QUEUE set: the pg-boss bridge
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._metrics: MetricsServer | None = None

    async def start(self) -> int:
        authenticate = BearerTokenInterceptor(self.settings.grpc_token)  # a short secret fails here, first
        self.pool = await _connect_pool(self.settings)
        async with self.pool.acquire() as conn:
            await migrate(conn)
        if self.settings.pgboss_queue:  # an untested pg-boss schema is refused before anything runs
            self.pgboss = PgBossBridge(self.pool, self.settings, on_commit=self._on_commit, clock=self.clock)
            try:
                await self.pgboss.check()
            except BaseException:
                await self.pool.close()
                raise
        self.dispatcher = EventDispatcher(self.pool, on_claimable=self.claims.wake)
        self.doorbell = Doorbell(self.settings.database_url, on_ring=self._on_ring,
                                 on_reconnect=self._on_reconnect)
        self.store = Store(self.pool, self.settings, self.claims, on_commit=self._on_commit,
                           on_cancel=self._on_cancel, clock=self.clock)
        self.maintenance = Maintenance(self.pool, self.settings, on_change=self._on_commit, clock=self.clock)
        self.watches = Watches(self.store, self.dispatcher, buffer=self.settings.watch_buffer,
                               all_jobs_buffer=self.settings.all_jobs_watch_buffer)
        self.service = JobStoreService(self.store, self.watches, self.settings, Deliveries(self.pool, self.clock),
                                       self.sessions)
        await self.dispatcher.start()
        await self.doorbell.start()
        await self.maintenance.start()
        if self.pgboss is not None:
            self.pgboss.start()

        options = [*GRPC_OPTIONS, ("grpc.so_reuseport", 1 if self.shared_port else 0)]
        server = grpc.aio.server(options=options, interceptors=[authenticate])
        wire.add_servicer(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], server)
        self.port = server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.grpc_host}:{self.settings.grpc_port}")
        await server.start()
        self._server = server
        await self._set_serving(True)
        await _maybe_await(self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING))
        if self.settings.metrics_port:
            gauges = QueueGauges(self.store)
            self._metrics = await start_metrics_server(self.settings.grpc_host, self.settings.metrics_port,
                                                       metrics.REGISTRY, gauges.refresh)
        self._health_task = asyncio.create_task(self._watch_health(), name="health")
        log.info("jobstore serving on %s:%d", self.settings.grpc_host, self.port)
        return self.port

    async def stop(self) -> None:
        """Drain: report NOT_SERVING, end streams and waiting claims, let calls finish, close the pool."""
        log.info("jobstore shutting down")
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await _maybe_await(self.health.enter_graceful_shutdown())
        self.shutdown.set()
        self.dispatcher.close_subscriptions()  # open Watch streams end now; their clients resume elsewhere
        self.store.shutting_down.set()
        self.claims.wake(None)
        self.sessions.stopping()  # their pushes end, and their streams once what they asked is answered
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_s)
        if self._metrics is not None:
            await self._metrics.stop()
        if self.pgboss is not None:
            await self.pgboss.stop()
        await self.maintenance.stop()
        await self.doorbell.stop()
        await self.dispatcher.stop()
        await self.store.close()
        await self.pool.close()
        log.info("jobstore stopped")

    def _on_commit(self, claimable_types: set[str]) -> None:
        """Something this process committed: wake its own waiting claims (it ignores its own bells),
        then ring for the other replicas and let the dispatcher read the new events."""
        if claimable_types:
            self.claims.wake(claimable_types)
        self.doorbell.ring(claimable_types)
        self.dispatcher.poke()

    def _on_cancel(self, job_id: str) -> None:
        """A job was cancelled here: this process's sessions hear it at once, the other replicas' by the bell."""
        self.sessions.cancelled(job_id)
        self.doorbell.ring({CANCELLED_PREFIX + job_id})

    def _on_ring(self, types: set[str]) -> None:
        cancelled = {t for t in types if t.startswith(CANCELLED_PREFIX)}
        if cancelled:
            types = types - cancelled
            for entry in cancelled:
                self.sessions.cancelled(entry.removeprefix(CANCELLED_PREFIX))
        if WAKE_ALL in types:
            self.claims.wake(None)
        elif types:
            self.claims.wake(types)
        self.dispatcher.poke()

    def _on_reconnect(self) -> None:
        self.dispatcher.poke()
        self.claims.wake(None)

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await _maybe_await(self.health.set(name, status))

    async def _watch_health(self) -> None:
        """SERVING while the database answers; NOT_SERVING (readiness fails) while it does not."""
        serving = True
        while not self.shutdown.is_set():
            await asyncio.sleep(HEALTH_CHECK_S)
            try:
                async with asyncio.timeout(HEALTH_CHECK_S * 2):
                    await self.pool.fetchval(Q.ping)
                ok = True
            except DATABASE_ERRORS:
                ok = False
            if ok != serving and not self.shutdown.is_set():
                serving = ok
                log.warning("database %s", "reachable again" if ok else "unreachable: reporting NOT_SERVING")
                await self._set_serving(ok)


async def _maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value):
        await value


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Pooled connections keep no session state (no session locks, LISTEN, cursors or SET), so the
    reset round trip asyncpg runs on every release would be pure cost."""


async def _connect_pool(settings: Settings) -> asyncpg.Pool:
    """Connect, waiting for a database that is still starting (logged once, not per try)."""
    delay = 0.1
    logged = False
    while True:
        try:
            # One connection of the pool size is the claim connection (store.ClaimConnection).
            return await asyncpg.create_pool(settings.database_url, min_size=1, max_size=settings.pool_size - 1,
                                             max_inactive_connection_lifetime=60.0, command_timeout=60.0,
                                             reset=_no_reset)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError) as exc:
            if not logged:
                log.warning("waiting for the database: %s", exc)
                logged = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def serve(settings: Settings, index: int = 0) -> int:
    """Run one jobstore process until SIGTERM or SIGINT; the first of DOCJOBS_JOBSTORE_PROCESSES starts and
    watches the others. The exit status: 0 on a stop asked for, 1 when another process died first."""
    shared = settings.processes > 1
    if index > 0 and settings.metrics_port:
        settings = replace(settings, metrics_port=settings.metrics_port + index)  # one endpoint each
    server = JobStoreServer(settings, shared_port=shared)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except PgBossRefused as exc:  # starting again cannot help: one line, and no restart loop
        print(f"jobstore: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_DO_NOT_RESTART) from None
    others = ProcessGroup(settings.processes) if shared and index == 0 else None
    status = 0
    if others is None:
        await stop.wait()
    else:
        await others.start()
        died = asyncio.create_task(others.first_exit())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({died, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if died.done() and not stop.is_set():  # on Ctrl-C the others get the signal too, and may end first
            which, code = died.result()
            log.error("jobstore process %d exited with status %s: stopping every process (the supervisor "
                      "starts the jobstore again)", which, code)
            status = 1
        died.cancel()
        stopped.cancel()
    try:
        await server.stop()
    finally:
        if others is not None:
            await others.stop(settings.shutdown_grace_s + 5)
    return status


class ProcessGroup:
    """The other processes of DOCJOBS_JOBSTORE_PROCESSES, started by the first (after its own start, so
    that the migrations are done once), each a whole jobstore on the shared port. They end with it: a
    SIGTERM when it stops, and a kernel signal if it dies without one."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        for index in range(1, self.count):
            self.processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobstore.server", env={**env, PROCESS_INDEX_ENV: str(index)}))

    async def first_exit(self) -> tuple[int, int]:
        """(index, exit status) of the first of them to end."""
        waits = {asyncio.create_task(process.wait()): index for index, process in enumerate(self.processes, 1)}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        first = next(iter(done))
        return waits[first], first.result()

    async def stop(self, grace_s: float) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            try:
                async with asyncio.timeout(grace_s):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


def _end_with_parent(parent_pid: int) -> None:
    """A process of DOCJOBS_JOBSTORE_PROCESSES ends when the first one dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the signal was asked for
        raise SystemExit(0)


def _one_line(record: logging.LogRecord) -> bool:
    """asyncpg's pool logs a lost database with a traceback; an outage is expected operation here, so it
    becomes one line naming the error (the doorbell and the health task say the rest)."""
    if record.exc_info and record.exc_info[1] is not None:
        record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
        record.args = ()
        record.exc_info = None
    return True


def main() -> None:
    settings = load_or_exit("jobstore", Settings.from_env)
    setup_logging(settings.log_level)
    logging.getLogger("asyncpg.pool").addFilter(_one_line)
    index = int(os.environ.get(PROCESS_INDEX_ENV, "0") or 0)
    if index > 0:
        _end_with_parent(int(os.environ[PARENT_PID_ENV]))
    # asyncpg and grpc.aio are both markedly faster on uvloop
    raise SystemExit(uvloop.run(serve(settings, index)))


if __name__ == "__main__":
    main()
