"""Claims waiting for work (long-poll), woken by job type when claimable jobs appear.

A commit wakes one waiter per job type it made claimable, not every waiter: with fifty idle workers,
waking them all for one job made fifty claim statements queue on the claim connection (one found the
job, forty-nine found nothing), and the job's claim waited behind them. The one woken is the warmest
worker: a waiter still looking (its claim statement not yet answered: most often the worker that has just
finished a job, whose next claim came with its completion) looks again once its look has ended, rather
than a worker idle for minutes starting the job with cold caches (bench/scale.py: a small pdf job took
38 ms end to end on a woken idle renderer of fifty, 17.5 ms on the one that had just finished); with none
looking, the newest sleeper of those taking the fewest job types, as a hand-off chooses.

A waiter that claims something passes the wake on (`Store.claim`): there may be more where its jobs came
from, so the next waiter of those types looks too, and the chain ends at the first one that finds
nothing. A waiter that was woken and cannot look (its caller went away, its wait ran out, the jobstore
stops) passes its wake on too, so no wake is lost.

A job enqueued while a waiter of its type sleeps goes to that waiter directly (`Store.enqueue`, "hand-off"):
the enqueue statement stores it claimed by the waiter's worker, and the waiter returns it without a claim
statement of its own. Only when nothing of the type can be waiting to be claimed here: every waiter of the
type has looked and found nothing (since the commits that could have woken it, and none was woken since;
it may still be reading when the next job is due) and none is mid-query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter

# Registered by metrics.py (which imports the store, and so this module).
CLAIM_QUERIES = Counter("docjobs_jobstore_claim_queries",
                        "Claims looked up for workers, by whether they found jobs: many that find none mean "
                        "workers are polling or being woken for nothing", ["found"], registry=None)
CLAIM_STATEMENTS = Counter("docjobs_jobstore_claim_statements",
                           "Claim statements run: claims that wait together for the claim connection share one",
                           registry=None)
FOUND = CLAIM_QUERIES.labels(found="true")
FOUND_NONE = CLAIM_QUERIES.labels(found="false")
HANDOFFS = Counter("docjobs_jobstore_handoffs",
                   "Jobs handed at their enqueue to a claim that waited for work, with no claim statement of "
                   "their own",
                   registry=None)


class Handoff:
    """What a waiter's worker claims with, and, once the enqueue statement has run, the jobs it was handed
    as a claim returns them: the one job, or none when the statement stored nothing claimed (an
    idempotency key already taken, or it failed)."""

    __slots__ = ("lease_ms", "result", "wake_owed", "worker_id")

    def __init__(self, worker_id: str, lease_ms: int) -> None:
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.result: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.wake_owed = False  # a wake came for its types and found no other waiter: its claim passes it on


class ClaimWaiter:
    __slots__ = ("asleep", "event", "handoff", "job_types", "lease_ms", "looked", "worker_id")

    def __init__(self, job_types: frozenset[str], worker_id: str, lease_ms: int) -> None:
        self.job_types = job_types
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.event = asyncio.Event()
        # Looked and found nothing, in this round (Store.claim): a job enqueued from then on can be handed
        # to it, while it reads when the next job is due as well as in its wait.
        self.looked = False
        self.asleep = False  # in its wait
        self.handoff: Handoff | None = None

    @property
    def woken(self) -> bool:
        return self.event.is_set()

    async def wait(self, timeout: float) -> bool:
        """True when woken (or handed a job), False when the timeout ran out."""
        self.asleep = True
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self.asleep = False


class ClaimWaiters:
    """Registered before a claim queries, so a wake-up between the query and the wait is not lost.

    A waiter is registered for one round of `Store.claim` (a query, then a wait) and woken at most once;
    the next round registers anew. So a woken waiter still registered has not queried since it was woken
    (or is querying, and queries again), and its query will see whatever woke it."""

    def __init__(self) -> None:
        self._waiters: dict[ClaimWaiter, None] = {}  # in the order they came

    def __len__(self) -> int:
        return len(self._waiters)

    def register(self, job_types: Iterable[str], worker_id: str = "", lease_ms: int = 0) -> ClaimWaiter:
        waiter = ClaimWaiter(frozenset(job_types), worker_id, lease_ms)
        self._waiters[waiter] = None
        return waiter

    def hand_off(self, job_type: str) -> Handoff | None:
        """Reserve a waiter of job_type for a job about to be enqueued, if every waiter of that type here is
        asleep (none woken, none looking, none reserved already); None otherwise. The enqueue settles the
        Handoff's result with the job it stored claimed, or with none.

        Of those that take the fewest job types (a worker that takes others too is kept for them), the one
        that came last, unlike a wake's: a worker that has just finished a job is the warmest (its
        processes' pages and caches are in use), and with fifty idle renderers, handing each job to the
        one idle longest made every job start on a cold one (bench/scale.py)."""
        chosen = None
        for waiter in self._waiters:
            if job_type in waiter.job_types:
                if not waiter.looked or waiter.woken or waiter.handoff is not None:
                    return None
                chosen = _warmer(chosen, waiter)
        if chosen is None:
            return None
        chosen.handoff = Handoff(chosen.worker_id, chosen.lease_ms)
        chosen.event.set()  # it wakes to wait for the handoff's result, and no other wake picks it
        return chosen.handoff

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
            looking = sleeper = reserved = None
            for waiter in self._waiters:
                if job_type in waiter.job_types:
                    if waiter.woken:
                        if waiter.handoff is not None:
                            reserved = waiter  # woken to take the job handed to it: it will not look for more
                            continue
                        break  # it will look
                    if not waiter.looked:
                        looking = looking or waiter  # the first: its statement was sent first
                    else:
                        sleeper = _warmer(sleeper, waiter)
            else:
                chosen = looking or sleeper
                if chosen is not None:
                    chosen.event.set()
                elif reserved is not None and reserved.handoff is not None:
                    reserved.handoff.wake_owed = True


def _warmer(chosen: ClaimWaiter | None, waiter: ClaimWaiter) -> ClaimWaiter:
    """Of two waiters in the order they came, the one a job should go to: the one taking fewer job types
    (a worker that takes others too is kept for them), else the later one (the warmer worker)."""
    if chosen is None or len(waiter.job_types) <= len(chosen.job_types):
        return waiter
    return chosen
