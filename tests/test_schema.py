"""The schema: generated code in step with protos/, and queries that keep using their indexes."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import asyncpg

from jobstore.queries import Q


def test_generated_grpc_code_matches_the_protos(tmp_path: Path, repo_root: Path) -> None:
    subprocess.run([sys.executable, str(repo_root / "scripts" / "gen_protos.py"), str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    assert generated, "nothing was generated"
    committed = repo_root / "services"
    stale = [str(p) for p in generated if not (committed / p).exists()
             or not filecmp.cmp(tmp_path / p, committed / p, shallow=False)]
    assert not stale, f"run `make proto` and commit: out of date: {stale}"


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
            "EXPLAIN " + Q.claim, ["pdf"], 10, 30000, "w"))
    finally:
        await conn.close()
    assert "document_jobs_claimable" in plan, plan
    assert "Seq Scan on document_jobs" not in plan, plan


async def test_every_named_query_is_valid_sql(database_url) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for name in Q.names():
            await conn.prepare(getattr(Q, name))  # parses and plans, runs nothing
    finally:
        await conn.close()
    assert "claim" in Q.names()
