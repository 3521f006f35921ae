"""Claims waiting for work (long-poll), woken by job type when claimable jobs appear.

A commit wakes one waiter per job type it made claimable, not every waiter: with fifty idle workers,
waking them all for one job made fifty claim statements queue on the claim connection (one found the
job, forty-nine found nothing), and the job's claim waited behind them. A waiter that claims something
passes the wake on (`Store.claim`): there may be more where its jobs came from, so the next waiter of
those types looks too, and the chain ends at the first one that finds nothing. A waiter that was woken
and cannot look (its caller went away, its wait ran out, the jobstore stops) passes its wake on too, so
no wake is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prometheus_client import Counter

# Registered by metrics.py (which imports the store, and so this module).
CLAIM_QUERIES = Counter("docjobs_jobstore_claim_queries",
                        "Claim statements run, by whether they found jobs: many that find none mean workers "
                        "are polling or being woken for nothing", ["found"], registry=None)
FOUND = CLAIM_QUERIES.labels(found="true")
FOUND_NONE = CLAIM_QUERIES.labels(found="false")


class ClaimWaiter:
    __slots__ = ("event", "job_types")

    def __init__(self, job_types: frozenset[str]) -> None:
        self.job_types = job_types
        self.event = asyncio.Event()

    @property
    def woken(self) -> bool:
        return self.event.is_set()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when the timeout ran out."""
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
            return True
        except TimeoutError:
            return False


class ClaimWaiters:
    """Registered before a claim queries, so a wake-up between the query and the wait is not lost.

    A waiter is registered for one round of `Store.claim` (a query, then a wait) and woken at most once;
    the next round registers anew. So a woken waiter still registered has not queried since it was woken
    (or is querying, and queries again), and its query will see whatever woke it."""

    def __init__(self) -> None:
        self._waiters: dict[ClaimWaiter, None] = {}  # in the order they came: the longest waiting is woken first

    def __len__(self) -> int:
        return len(self._waiters)

    def register(self, job_types: Iterable[str]) -> ClaimWaiter:
        waiter = ClaimWaiter(frozenset(job_types))
        self._waiters[waiter] = None
        return waiter

    def unregister(self, waiter: ClaimWaiter) -> None:
        self._waiters.pop(waiter, None)

    def wake(self, job_types: Iterable[str] | None = None) -> None:
        """Wake, for each of job_types, one waiter that claims it, unless one is woken already and has
        not looked yet. None (or an empty set) wakes every waiter: after a reconnect, or to stop."""
        types = set(job_types) if job_types is not None else set()
        if not types:
            for waiter in self._waiters:
                waiter.event.set()
            return
        for job_type in types:
            first_asleep = None
            for waiter in self._waiters:
                if job_type in waiter.job_types:
                    if waiter.woken:
                        break
                    if first_asleep is None:
                        first_asleep = waiter
            else:
                if first_asleep is not None:
                    first_asleep.event.set()
