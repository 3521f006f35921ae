"""LISTEN/NOTIFY as a doorbell: one LISTEN connection per jobstore process, and a debounced NOTIFY.

The events table is the truth; a notification only says "look again" (its payload names the job types
that got claimable work, so waiting Claims on other replicas wake without a query). Notifications are
coalesced: at most one NOTIFY is in flight per process, and whatever rings meanwhile goes out in the next
one, because a transaction that NOTIFYs takes a cluster-wide lock at commit.

NOTIFYs are sent on the LISTEN connection itself, so the process can tell its own notifications (same
backend pid) from other replicas' and ignore them: it already knows what it committed.

When the LISTEN connection drops, it is re-established with capped backoff, and `on_reconnect` runs so
the event dispatcher reads what was committed meanwhile (Postgres does not replay missed notifications).
A bell that could not be sent while the connection was down goes out, waking everything, after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import asyncpg

from .errors import DATABASE_ERRORS
from .queries import Q

log = logging.getLogger(__name__)

CHANNEL = "docjobs_events"
MAX_PAYLOAD = 7000  # Postgres allows 8000 bytes
WAKE_ALL = "*"  # payload that wakes every waiting claim, whatever its job types
# An entry naming a cancelled job (never a job type, which starts with a letter), for the worker sessions
# that hold it on other replicas. A payload too long for them all drops them: a worker then hears of the
# cancel in its next heartbeat's answer, as it always may.
CANCELLED_PREFIX = "!"


class Doorbell:
    def __init__(self, dsn: str, *, on_ring: Callable[[set[str]], None],
                 on_reconnect: Callable[[], None], health_check_s: float = 5.0) -> None:
        self._dsn = dsn
        self._on_ring = on_ring
        self._on_reconnect = on_reconnect
        self._health_check_s = health_check_s
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._send_wanted = asyncio.Event()
        self._pending_types: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsent = False
        self._conn_lock = asyncio.Lock()  # one statement at a time on the LISTEN connection
        self.reconnects = 0

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the LISTEN connection (tests terminate it on purpose)."""
        return self._conn.get_server_pid() if self.listening and self._conn is not None else None

    async def start(self) -> None:
        await self._connect()
        self._tasks = [asyncio.create_task(self._supervise(), name="doorbell-listen"),
                       asyncio.create_task(self._send_loop(), name="doorbell-notify")]

    async def stop(self) -> None:
        self._stopping.set()
        self._send_wanted.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._conn.close()

    def ring(self, pending_types: Iterable[str] = ()) -> None:
        """Ask for a NOTIFY soon; pending_types are job types that got claimable work."""
        self._pending_types.update(pending_types)
        self._send_wanted.set()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        conn.add_termination_listener(lambda _c: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notification)
        self._lost.clear()
        self._conn = conn

    def _on_notification(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, pid: int, _channel: str,
                         payload: object) -> None:
        if pid == conn.get_server_pid():
            return  # our own bell
        types = {t for t in str(payload).split(",") if t}  # a str (the stubs say object)
        self._on_ring(types)

    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self._health_check_s):
                    await self._lost.wait()
            except TimeoutError:
                if await self._healthy():
                    continue
            if self._stopping.is_set():
                return
            await self._reconnect()

    async def _healthy(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            async with self._conn_lock:
                async with asyncio.timeout(self._health_check_s):
                    await conn.fetchval(Q.ping)
            return True
        except DATABASE_ERRORS:
            return False

    async def _reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            old.terminate()
        log.warning("LISTEN connection lost; reconnecting")
        delay = 0.05
        while not self._stopping.is_set():
            try:
                await self._connect()
            except DATABASE_ERRORS as exc:
                log.debug("LISTEN reconnect failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            log.warning("LISTEN connection re-established; catching up from the events table")
            self._on_reconnect()
            if self._unsent:
                self.ring({WAKE_ALL})
            return

    async def _send_loop(self) -> None:
        while not self._stopping.is_set():
            await self._send_wanted.wait()
            self._send_wanted.clear()
            if self._stopping.is_set():
                return
            conn = self._conn
            if conn is None or conn.is_closed():
                self._unsent = True  # rung again after the reconnect
                continue
            types, self._pending_types = self._pending_types, set()
            payload = ",".join(sorted(types))
            if len(payload) > MAX_PAYLOAD:
                payload = WAKE_ALL
            try:
                async with self._conn_lock:
                    await conn.execute(Q.notify, CHANNEL, payload)
                self._unsent = False
            except DATABASE_ERRORS as exc:
                # The rows are committed; replicas that miss this bell find them on their next read.
                log.debug("NOTIFY failed: %s", exc)
                self._unsent = True
