"""The schema: queries that keep using their indexes, and every named query is valid SQL.

(The generated gRPC code is checked against protos/ in test_protos_generated.py.)"""

from __future__ import annotations

import asyncio

import asyncpg

from jobstore.queries import Q

from .test_pgboss import boss_command


async def test_claim_uses_the_claimable_index_on_a_large_queue(database_url) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, status, completed_at)"
            " SELECT gen_random_uuid(), 'u', 'pdf', '{}', 'completed', now() FROM generate_series(1, 20000)")
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
