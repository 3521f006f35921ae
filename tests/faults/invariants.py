"""What must hold after any fault: checked on the database itself, and on what clients saw."""

from __future__ import annotations

import asyncpg


async def check_database(database_url: str, completed: list[str] | None = None) -> None:
    """No job stuck in processing without a live lease; none completed twice; each completed job keeps
    exactly one stored artifact, the one its result names; and `completed` jobs are all completed."""
    conn = await asyncpg.connect(database_url)
    try:
        stuck = await conn.fetch("SELECT id FROM document_jobs WHERE status = 'processing' "
                                 "AND lease_expires_at < now() - interval '5 seconds'")
        assert stuck == [], f"jobs stuck in processing without a live lease: {stuck}"
        twice = await conn.fetch("SELECT job_id, count(*) AS n FROM job_events WHERE kind = 'completed' "
                                 "GROUP BY job_id HAVING count(*) > 1")
        assert twice == [], f"jobs completed more than once: {twice}"
        artifacts = await conn.fetch(
            "SELECT j.id, j.artifact_id, count(a.id) AS kept, "
            "       count(a.id) FILTER (WHERE a.id = j.artifact_id AND a.state = 'stored') AS named "
            "  FROM document_jobs j LEFT JOIN artifacts a ON a.job_id = j.id "
            " WHERE j.status = 'completed' GROUP BY j.id, j.artifact_id "
            "HAVING count(a.id) <> 1 OR count(a.id) FILTER (WHERE a.id = j.artifact_id AND a.state = 'stored') <> 1")
        assert artifacts == [], f"completed jobs without exactly one kept artifact: {artifacts}"
        if completed:
            rows = await conn.fetch("SELECT id::text, status FROM document_jobs WHERE id = ANY($1::uuid[])",
                                    completed)
            statuses = {r["id"]: r["status"] for r in rows}
            missing = [job for job in completed if job not in statuses]
            assert missing == [], f"accepted jobs that are gone: {missing}"
            unfinished = {job: s for job, s in statuses.items() if s != "completed"}
            assert unfinished == {}, f"accepted jobs that did not complete: {unfinished}"
    finally:
        await conn.close()


async def event_ids(database_url: str, job_id: str) -> list[int]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM job_events WHERE job_id = $1 ORDER BY id", job_id)]
    finally:
        await conn.close()


async def check_client_saw_every_event_once(database_url: str, job_id: str, seen: list[int]) -> None:
    """The ids a client received for a job are exactly the job's events, in order, each once."""
    stored = await event_ids(database_url, job_id)
    assert seen == stored, f"job {job_id}: client saw {seen}, the database holds {stored}"
