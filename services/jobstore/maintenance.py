"""Periodic maintenance: the lease reaper, expiry, and retention cleanup.

Every jobstore replica runs the loop; each tick does its work inside a transaction that holds a
transaction-level advisory lock, taken with try-lock, so one replica at a time does it and none waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from .clock import Clock
from .errors import DATABASE_ERRORS
from .queries import Q
from .settings import Settings

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY = 0x646F636A6F6273 + 1
BATCH = 500
CLEANUP_EVERY_TICKS = 60
ABANDONED_UPLOAD_S = 3600.0


@dataclass
class TickResult:
    ran: bool = False
    reaped: int = 0
    expired: int = 0
    deleted_jobs: int = 0


class Maintenance:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, *,
                 on_change: Callable[[set[str]], None], clock: Clock | None = None) -> None:
        self._pool = pool
        self._clock = clock if clock is not None else Clock()
        self._settings = settings
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ticks = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maintenance")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.tick()
                failures = 0
            except DATABASE_ERRORS as exc:
                if failures == 0:
                    log.warning("maintenance tick failed: %s", exc)
                failures += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.maintenance_interval_s):
                    await self._stopping.wait()

    async def tick(self) -> TickResult:
        """One round of maintenance, if no other replica holds the lock right now."""
        result = TickResult()
        cleanup = self._ticks % CLEANUP_EVERY_TICKS == 0
        self._ticks += 1
        claimable: set[str] = set()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(Q.try_maintenance_lock, MAINTENANCE_LOCK_KEY):
                return result
            result.ran = True
            now = self._clock.sql_now()  # one time for the whole tick
            while True:
                rows = await conn.fetch(Q.reap_expired_leases, self._settings.retry_base_ms,
                                        self._settings.retry_cap_ms, BATCH, now)
                result.reaped += len(rows)
                claimable.update(r["job_type"] for r in rows if r["status"] == "pending")
                if len(rows) < BATCH:
                    break
            while True:
                rows = await conn.fetch(Q.expire_jobs, BATCH, now)
                result.expired += len(rows)
                if len(rows) < BATCH:
                    break
            if cleanup:
                result.deleted_jobs = await self._cleanup(conn)
        if result.reaped or result.expired:
            log.info("maintenance: %d expired leases, %d expired jobs", result.reaped, result.expired)
        if result.reaped or result.expired or result.deleted_jobs:
            self._on_change(claimable)
        return result

    async def _cleanup(self, conn: asyncpg.pool.PoolConnectionProxy) -> int:
        now = self._clock.sql_now()
        deleted = 0
        while True:
            count = int(await conn.fetchval(Q.delete_finished_jobs, self._settings.retention_s, BATCH, now))
            deleted += count
            if count < BATCH:
                break
        await conn.execute(Q.delete_orphaned_events, self._settings.retention_s, BATCH, now)
        await conn.execute(Q.delete_unkept_artifacts)
        await conn.execute(Q.delete_abandoned_uploads, ABANDONED_UPLOAD_S, now)
        if deleted:
            log.info("retention: deleted %d finished jobs with their events and artifacts", deleted)
        return deleted

    async def cleanup_now(self) -> int:
        """Run the retention cleanup at once (tests and operators)."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._cleanup(conn)
