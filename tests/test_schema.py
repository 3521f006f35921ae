"""The schema: queries that keep using their indexes, and every named query is valid SQL.

(The generated gRPC code is checked against protos/ in test_protos_generated.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

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
            "EXPLAIN " + Q.claim, ["pdf"], 10, 30000, ["w"] * 10, None, ""))
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


def _rows_read(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of `table` returned, over all their loops (EXPLAIN ANALYZE, JSON)."""
    found = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        found += int(plan["Actual Rows"] * plan["Actual Loops"])
    for child in plan.get("Plans", []):
        found += _rows_read(child, table)
    return found


async def test_a_batch_of_a_worker_reads_only_its_own_jobs_whatever_the_statistics_say(database_url) -> None:
    # A queue's table goes from a few running jobs to thousands faster than autoanalyze notices. Planned
    # for "25 processing rows", a heartbeat batch joined its jobs by hash over every processing job (the
    # reaper's index): 10,000 rows read per batch of 15 and bench/sse.py at a third of its rate. Every
    # batch statement of a worker looks its jobs up by id, one index descent each, whatever the plan's
    # estimates (a generic plan, as a prepared statement gets after its fifth run).
    batch = 10
    conn = await asyncpg.connect(database_url, server_settings={"plan_cache_mode": "force_generic_plan"})
    try:
        await conn.execute("INSERT INTO document_jobs (id, user_id, job_type, payload)"
                           " SELECT gen_random_uuid(), 'u' || g, 'pdf', '{}' FROM generate_series(1, 5000) g")
        await conn.execute("ANALYZE document_jobs")  # as autoanalyze saw them: all pending
        await conn.execute("UPDATE document_jobs SET status = 'processing', lease_token = gen_random_uuid(),"
                           " lease_expires_at = now() + interval '1 hour', started_at = now()")
        jobs = await conn.fetch("SELECT id, lease_token FROM document_jobs ORDER BY random() LIMIT $1", 7 * batch)
        groups = [jobs[k * batch:(k + 1) * batch] for k in range(7)]
        ids = [[j["id"] for j in group] for group in groups]
        tokens = [[j["lease_token"] for j in group] for group in groups]
        statements: dict[str, tuple[str, list[Any]]] = {
            "heartbeat": (Q.heartbeat, [ids[0], tokens[0], [60_000] * batch, [50] * batch, ["half"] * batch, None]),
            "heartbeat_waiting": (Q.heartbeat_waiting, [ids[1][:1], tokens[1][:1], [60_000], [50], ["half"], None]),
            "complete": (Q.complete, [ids[2], tokens[2], ["{}"] * batch, [None] * batch, None]),
            "release": (Q.release, [ids[3], tokens[3]]),
            "fail": (Q.fail, [ids[4][0], tokens[4][0], "boom", "it broke", True, 100, 1000, 0.5, None]),
            "release_job": (Q.release_job, [ids[5][0], tokens[5][0], "shutdown", "stopping", 3, 100, 1000, 0.5, None]),
            "complete_with_artifact": (Q.complete_with_artifact, [ids[6][0], tokens[6][0], "{}", uuid.uuid4(), "a.pdf",
                                       "application/pdf", 3, "0" * 64, [b"pdf"], None]),
        }
        read = {}
        for name, (query, args) in statements.items():
            explained = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
            read[name] = _rows_read(json.loads(explained)[0]["Plan"], "document_jobs")
    finally:
        await conn.close()
    # Each job is read where it is locked and where it is changed, at most.
    assert read == {name: min(read[name], 2 * batch) for name in read}, read
    assert read["heartbeat"] >= batch, read  # the batch was found


async def test_enqueues_and_completions_answer_every_column_of_the_job_but_its_payload(database_url) -> None:
    """A payload can be 4 MiB: the statements whose answers never show it (the enqueues: the caller sent it;
    the completions) leave it in the database, and leave out no other column (the lists are written out)."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'document_jobs'")}
        expected = columns - {"payload"} | {"last_event_id"}
        big = json.dumps({"spec": "x" * 100_000})
        one = await conn.fetchrow(Q.enqueue, uuid.uuid4(), "u", "", "", "pdf", "", big, 0, 3, None, None, None,
                                  None, None)
        many = await conn.fetch(Q.enqueue_many, [uuid.uuid4()], ["u"], [""], [""], ["pdf"], [""], [big], [0], [3],
                                [None], [None], [None], [None], None)
        assert one is not None
        answers: dict[str, asyncpg.Record | None] = {"enqueue": one, "enqueue_many": many[0]}
        for row in (one, many[0]):
            token = uuid.uuid4()
            await conn.execute("UPDATE document_jobs SET status = 'processing', lease_token = $2,"
                               " lease_expires_at = now() + interval '1 minute' WHERE id = $1", row["id"], token)
            if row is one:
                [answers["complete"]] = await conn.fetch(Q.complete, [row["id"]], [token], ["{}"], [None], None)
            else:
                answers["complete_with_artifact"] = await conn.fetchrow(
                    Q.complete_with_artifact, row["id"], token, "{}", uuid.uuid4(), "a.pdf", "application/pdf", 1,
                    "0" * 64, [b"x"], None)
        for name, answer in answers.items():
            assert answer is not None, name
            assert set(answer.keys()) == expected, (name, set(answer.keys()) ^ expected)
        # The payloads themselves were stored whole.
        assert await conn.fetchval("SELECT count(*) FROM document_jobs WHERE payload::text = $1::jsonb::text",
                                   big) == 2
    finally:
        await conn.close()
