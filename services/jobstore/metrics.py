"""The jobstore's Prometheus metrics: calls and errors per RPC (counted where the servicer maps errors)
and, refreshed at scrape time (at most once a second), the queue as the statistics view sees it."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from .claims import CLAIM_QUERIES, CLAIM_STATEMENTS, HANDOFFS
from .store import Store

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
RPCS = Counter("docjobs_jobstore_rpcs", "gRPC calls handled, by method", ["method"], registry=REGISTRY)
RPC_ERRORS = Counter("docjobs_jobstore_rpc_errors", "gRPC calls that ended with an error status, by method and code",
                     ["method", "code"], registry=REGISTRY)
OPEN_WATCHES = Gauge("docjobs_jobstore_open_watch_streams", "Watch streams open on this process",
                     registry=REGISTRY)
WATCH_OVERFLOWS = Counter("docjobs_jobstore_watch_overflows",
                          "Watch streams that fell behind (their buffer of live events filled), by kind: a job "
                          "watch re-reads the table, scope and all_jobs end UNAVAILABLE", ["kind"], registry=REGISTRY)
JOBS = Gauge("docjobs_jobstore_jobs", "Jobs by type and status (the whole queue)", ["job_type", "status"],
             registry=REGISTRY)
DUE = Gauge("docjobs_jobstore_due_pending_jobs", "Pending jobs that are due now, by type (what renderers scale on)",
            ["job_type"], registry=REGISTRY)
OLDEST_DUE_AGE = Gauge("docjobs_jobstore_oldest_due_job_age_seconds", "Age of the oldest due pending job",
                       registry=REGISTRY)
PGBOSS_JOBS = Counter("docjobs_jobstore_pgboss_jobs",
                      "pg-boss jobs the bridge handled, by outcome: claimed (a docjobs job made or taken over), "
                      "refused (the payload), completed or failed (the pg-boss job ended by the bridge), "
                      "ended_by_pgboss (cancelled or failed on pg-boss's side: the docjobs job cancelled)", ["outcome"],
                      registry=REGISTRY)
PGBOSS_ROUND_ERRORS = Counter("docjobs_jobstore_pgboss_round_errors",
                              "pg-boss bridge rounds that failed (a database away, an error)", registry=REGISTRY)
SCRAPE_ERRORS = Counter("docjobs_jobstore_stats_errors", "Statistics reads that failed at scrape time",
                        registry=REGISTRY)
REGISTRY.register(CLAIM_QUERIES)
REGISTRY.register(HANDOFFS)
REGISTRY.register(CLAIM_STATEMENTS)

REFRESH_S = 1.0


class QueueGauges:
    """Refreshes the queue gauges from the statistics view; concurrent scrapes share one read."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = asyncio.Lock()
        self._read_at = 0.0

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < REFRESH_S:
                return
            try:
                async with asyncio.timeout(5.0):
                    stats = await self._store.stats()
            except Exception as exc:  # a scrape must still answer, with the last values
                SCRAPE_ERRORS.inc()
                log.warning("queue statistics for /metrics: %s", exc)
                return
            self._read_at = time.monotonic()
            JOBS.clear()
            DUE.clear()
            for row in stats["counts"]:
                JOBS.labels(row["job_type"], row["status"]).set(row["job_count"])
                if row["status"] == "pending":
                    DUE.labels(row["job_type"]).set(row["due_count"])
            OLDEST_DUE_AGE.set(stats["oldest_due_age"])
