"""LISTEN/NOTIFY as a doorbell: one LISTEN connection per jobstore process, and a debounced NOTIFY.

The events table is the truth; a notification only says "look again" (its payload names the job types
that got claimable work, so waiting Claims on other replicas wake without a query). Notifications are
coalesced: at most one NOTIFY is in flight per process, and whatever rings meanwhile goes out in the next
one, because a transaction that NOTIFYs takes a cluster-wide lock at commit.

A bell that says only "new events" (a completion, a claim, progress: no job type got claimable work, no
job was cancelled) goes out at most once per `events_interval_s` (10 ms): under load such bells came one
after another, a NOTIFY (a statement, a transaction) every couple of milliseconds, a tenth of the
jobstore's CPU on the queue benchmark (docs/performance.md). What reads the event log on another
replica hears of such events about that much later (plus a NOTIFY still in flight), and only while bells
come faster than that; this process's own watchers and waiting claims never wait for a bell. A bell that
wakes claims (job types) or carries a cancel goes out at once, taking with it whatever waited, and so
does the bell still waiting when the doorbell stops (the last commits of draining sessions).

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
EVENTS_INTERVAL_S = 0.01  # the least time between two NOTIFYs of a bell that says only "new events"
STOP_FLUSH_S = 2.0  # how long stop() lets a bell still waiting go out


class Doorbell:
    def __init__(self, dsn: str, *, on_ring: Callable[[set[str]], None],
                 on_reconnect: Callable[[], None], health_check_s: float = 5.0,
                 events_interval_s: float = EVENTS_INTERVAL_S) -> None:
        self._dsn = dsn
        self._on_ring = on_ring
        self._on_reconnect = on_reconnect
        self._health_check_s = health_check_s
        self._events_interval_s = events_interval_s
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._send_wanted = asyncio.Event()
        self._pending_types: set[str] = set()
        self._urgent = asyncio.Event()  # a bell with job types or a cancel: it waits for no interval
        self._last_sent = float("-inf")  # when the last NOTIFY went out (the loop's clock)
        self._rung = False  # rung since the last NOTIFY was sent
        self.sent = 0  # NOTIFYs sent
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
        self._urgent.set()
        self._send_wanted.set()
        if len(self._tasks) > 1:  # the last commits' bell goes out first, if it is still waiting
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(STOP_FLUSH_S):
                    await asyncio.shield(self._tasks[1])
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
        """Ask for a NOTIFY soon; pending_types are job types that got claimable work (or cancelled job
        entries): with none, the NOTIFY waits out what is left of the events interval."""
        types = set(pending_types)
        if types:
            self._pending_types.update(types)
            self._urgent.set()
        self._rung = True
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
        """One NOTIFY at a time, for whatever was rung since the last; once stopping, what was rung and not
        yet sent goes out at once, then the loop ends."""
        loop = asyncio.get_running_loop()
        while not (self._stopping.is_set() and not self._rung):
            await self._send_wanted.wait()
            wait = self._last_sent + self._events_interval_s - loop.time()
            if wait > 0 and not self._urgent.is_set() and not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._urgent.wait()  # a bell that wakes claims (or a stop) cuts it short
            self._send_wanted.clear()
            self._urgent.clear()
            if self._stopping.is_set() and not self._rung:
                return
            conn = self._conn
            if conn is None or conn.is_closed():
                self._unsent = True  # rung again after the reconnect
                if self._stopping.is_set():
                    return
                continue
            types, self._pending_types = self._pending_types, set()
            self._rung = False
            payload = ",".join(sorted(types))
            if len(payload) > MAX_PAYLOAD:
                payload = WAKE_ALL
            try:
                async with self._conn_lock:
                    await conn.execute(Q.notify, CHANNEL, payload)
                self._unsent = False
                self.sent += 1
            except DATABASE_ERRORS as exc:
                # The rows are committed; replicas that miss this bell find them on their next read.
                log.debug("NOTIFY failed: %s", exc)
                self._unsent = True
            self._last_sent = loop.time()
