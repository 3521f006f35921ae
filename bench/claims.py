"""The claim statement on its own (run by hand, never by `make test`): what one claim costs in its Postgres
backend, on the queue shapes the fair claim order has to handle.

Starts an embedded Postgres (fsync on), migrates a database and fills it with pending jobs straight in
SQL, then claims on one connection set up as the jobstore's claim connection (jobstore.store
ClaimConnection: its settings, its ring position), completing each batch once 8 more are in flight (so
about 80 jobs are always in progress), with the jobstore's own `claim` and `complete` statements.
Reports, per shape, the CPU time of the claiming backend per claim (from /proc, so another load on the
machine stretches it less than it stretches wall time) and the wall time per claim.

Shapes: `users` (20,000 jobs of 50 users, as bench/queue.py enqueues them) and `backlog` (100,000 jobs
of one user, then 20 each of five others; 2,000 claims).

Usage: python bench/claims.py [--batch B] [--shape users|backlog ...]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # bench.common; appended, after the standard library

from bench.common import benchmark_database  # noqa: E402
from jobstore.migrations import migrate  # noqa: E402
from jobstore.queries import Q  # noqa: E402
from jobstore.store import ClaimConnection  # noqa: E402

TYPES = ["spreadsheet", "document", "pdf", "presentation"]
IN_FLIGHT = 8
SHAPES = {
    # name: (SQL that fills the queue, claims to make at most)
    "users": ("INSERT INTO document_jobs (id, user_id, job_type, payload, priority, created_at)"
              " SELECT gen_random_uuid(), 'user-' || (g % 50), (ARRAY['pdf', 'spreadsheet', 'document',"
              " 'presentation'])[g % 4 + 1], '{}', g % 3, now() + g * interval '1 microsecond'"
              " FROM generate_series(1, 20000) g", 10_000),
    "backlog": ("INSERT INTO document_jobs (id, user_id, job_type, payload, priority, created_at)"
                " SELECT gen_random_uuid(), CASE WHEN g <= 100000 THEN 'backlog' ELSE 'other-' || (g % 5) END,"
                " 'pdf', '{}', g % 3, now() + g * interval '1 microsecond' FROM generate_series(1, 100100) g",
                2_000),
}


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(dsn: str, shape: str, batch: int) -> str:
    fill, most = SHAPES[shape]
    setup = await asyncpg.connect(dsn)
    try:
        await migrate(setup)
        await setup.execute(fill)
        await setup.execute("VACUUM ANALYZE document_jobs")
        conn = await asyncpg.connect(dsn, server_settings=ClaimConnection.SETTINGS)
        try:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            claim = await conn.prepare(Q.claim)
            held: collections.deque[list[asyncpg.Record]] = collections.deque()
            walls: list[float] = []
            last_user = ""
            cpu_before = backend_cpu_s(pid)
            while len(walls) < most:
                started = time.perf_counter()
                rows = await claim.fetch(TYPES, batch, 60_000, ["bench"] * batch, None, last_user)
                walls.append(time.perf_counter() - started)
                if not rows:
                    break
                last_user = rows[-1]["user_id"]
                held.append(rows)
                if len(held) > IN_FLIGHT:
                    done = held.popleft()
                    await setup.fetch(Q.complete, [r["id"] for r in done], [r["lease_token"] for r in done],
                                      ["{}"] * len(done), [None] * len(done), None)
            cpu = backend_cpu_s(pid) - cpu_before
        finally:
            await conn.close()
    finally:
        await setup.close()
    walls.sort()
    return (f"  {shape:8s} {len(walls):6d} claims of {batch}: backend CPU {cpu / len(walls) * 1000:6.3f} ms/claim,"
            f" wall p50 {statistics.median(walls) * 1000:6.2f} ms, p99 {walls[int(len(walls) * 0.99)] * 1000:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    args = parser.parse_args()
    print(f"docjobs claim statement: {os.cpu_count()} cores, Postgres fsync on, {IN_FLIGHT} batches in flight")
    for shape in args.shape:
        with benchmark_database() as (_tmp, dsn):
            print(asyncio.run(measure(dsn, shape, args.batch)), flush=True)


if __name__ == "__main__":
    main()
