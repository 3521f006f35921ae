"""The schema: queries that keep using their indexes, and every named query is valid SQL.

(The generated gRPC code is checked against protos/ in test_protos_generated.py.)"""

from __future__ import annotations

import asyncio

import asyncpg

from jobstore.queries import Q

from .test_pgboss import boss_command


async def finished_jobs(conn: asyncpg.Connection, n: int) -> None:
    """A table mostly of finished jobs, as a queue that has run for a while keeps them."""
    await conn.execute("INSERT INTO document_jobs (id, user_id, job_type, payload, status, completed_at)"
                       " SELECT gen_random_uuid(), 'u', 'pdf', '{}', 'completed', now() FROM generate_series(1, $1)", n)


async def test_claim_uses_the_claimable_index_on_a_large_queue(database_url) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await finished_jobs(conn, 20_000)
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, priority)"
            " SELECT gen_random_uuid(), 'u', 'pdf', '{}', g % 3 FROM generate_series(1, 2000) g")
        await conn.execute("ANALYZE document_jobs")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN " + Q.claim, ["pdf"], 10, 30000, "w", None, ""))
    finally:
        await conn.close()
    assert "document_jobs_claimable_by_user" in plan, plan
    assert "Seq Scan on document_jobs" not in plan, plan


async def test_every_named_query_is_valid_sql(database_url) -> None:
    # The pg-boss bridge's queries read pg-boss's own tables: installed here by pg-boss itself, and found
    # as the bridge finds them, through the search path.
    await asyncio.to_thread(boss_command, database_url, "setup")
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "public, pgboss"})
    try:
        for name in Q.names():
            await conn.prepare(getattr(Q, name))  # parses and plans, runs nothing
    finally:
        await conn.close()
    assert "claim" in Q.names()


HEARTBEAT_COLUMNS = {"lease_expires_at", "progress", "progress_message", "updated_at"}


async def test_no_index_holds_a_column_a_heartbeat_changes(database_url) -> None:
    # A heartbeat renews a lease every few seconds per running job. If any index of document_jobs held a
    # column it changes, the update could not be HOT: an entry in every index of the table per heartbeat
    # (bench/sse.py: 250 progress events/s instead of 850 with 10,000 streams).
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("""
            SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS definition
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = 'document_jobs'::regclass""")
    finally:
        await conn.close()
    assert rows
    for row in rows:
        used = {c for c in HEARTBEAT_COLUMNS if c in row["definition"]}
        assert not used, f"{row['name']} holds {used}: {row['definition']}"


async def test_the_lease_reaper_reads_only_processing_jobs_on_a_large_table(database_url) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await finished_jobs(conn, 20_000)
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, status, lease_token, lease_expires_at)"
            " SELECT gen_random_uuid(), 'u', 'pdf', '{}', 'processing', gen_random_uuid(),"
            " now() + g * interval '1 second' FROM generate_series(1, 200) g")
        await conn.execute("ANALYZE document_jobs")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + Q.reap_expired_leases, 100, 1000, 50, None))
    finally:
        await conn.close()
    assert "document_jobs_processing" in plan and "Seq Scan on document_jobs" not in plan, plan
