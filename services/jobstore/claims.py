"""Claims waiting for work (long-poll), woken by job type when claimable jobs appear."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class ClaimWaiter:
    __slots__ = ("event", "job_types")

    def __init__(self, job_types: frozenset[str]) -> None:
        self.job_types = job_types
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when the timeout ran out."""
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
            return True
        except TimeoutError:
            return False


class ClaimWaiters:
    """Registered before a claim queries, so a wake-up between the query and the wait is not lost."""

    def __init__(self) -> None:
        self._waiters: set[ClaimWaiter] = set()

    def __len__(self) -> int:
        return len(self._waiters)

    def register(self, job_types: Iterable[str]) -> ClaimWaiter:
        waiter = ClaimWaiter(frozenset(job_types))
        self._waiters.add(waiter)
        return waiter

    def unregister(self, waiter: ClaimWaiter) -> None:
        self._waiters.discard(waiter)

    def wake(self, job_types: Iterable[str] | None = None) -> None:
        """Wake waiters for any of job_types; None (or an empty set) wakes every waiter."""
        types = set(job_types) if job_types is not None else set()
        for waiter in self._waiters:
            if not types or waiter.job_types & types:
                waiter.event.set()
