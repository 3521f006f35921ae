"""The jobstore process: wiring, lifecycle (start, ready, drain, stop) and the command-line entry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from docjobs.exits import EXIT_DO_NOT_RESTART
from docjobs.metrics_http import MetricsServer, start_metrics_server
from docjobs.settings import load_or_exit, setup_logging
from docjobs.v1 import jobstore_pb2

from . import metrics, wire
from .auth import BearerTokenInterceptor
from .claims import ClaimWaiters
from .clock import Clock
from .deliveries import Deliveries
from .doorbell import WAKE_ALL, Doorbell
from .errors import DATABASE_ERRORS
from .events import EventDispatcher
from .maintenance import Maintenance
from .metrics import QueueGauges
from .migrations import migrate
from .pgboss import PgBossBridge, PgBossRefused
from .queries import Q
from .service import JobStoreService
from .settings import Settings
from .store import Store
from .watch import Watches

log = logging.getLogger("jobstore")

SERVICE_NAME = jobstore_pb2.DESCRIPTOR.services_by_name["JobStore"].full_name
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]
HEALTH_CHECK_S = 1.0
# The health service name a liveness probe asks: SERVING while the process runs, whatever the database
# does (the overall status "" follows the database and is what readiness asks).
LIVENESS_SERVICE = "liveness"


class JobStoreServer:
    """Everything one jobstore process runs, started and stopped in order."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock if clock is not None else Clock()  # tests pass a ManualClock
        self.shutdown = asyncio.Event()
        self.port = 0
        self.pool: asyncpg.Pool
        self.claims = ClaimWaiters()
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
        self.store = Store(self.pool, self.settings, self.claims, on_commit=self._on_commit, clock=self.clock)
        self.maintenance = Maintenance(self.pool, self.settings, on_change=self._on_commit, clock=self.clock)
        self.watches = Watches(self.store, self.dispatcher, buffer=self.settings.watch_buffer,
                               all_jobs_buffer=self.settings.all_jobs_watch_buffer)
        self.service = JobStoreService(self.store, self.watches, self.settings, Deliveries(self.pool, self.clock))
        await self.dispatcher.start()
        await self.doorbell.start()
        await self.maintenance.start()
        if self.pgboss is not None:
            self.pgboss.start()

        server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=[authenticate])
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

    def _on_ring(self, types: set[str]) -> None:
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


async def serve(settings: Settings) -> None:
    server = JobStoreServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except PgBossRefused as exc:  # starting again cannot help: one line, and no restart loop
        print(f"jobstore: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_DO_NOT_RESTART) from None
    await stop.wait()
    await server.stop()


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
    uvloop.run(serve(settings))  # asyncpg and grpc.aio are both markedly faster on uvloop


if __name__ == "__main__":
    main()
