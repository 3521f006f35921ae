"""Claims that wait together for the claim connection share one statement (jobstore/store.py, ClaimConnection).

Each worker's claim used to wait in line for the one claim connection: with several workers whose slots
freed up during one claim, each paid a statement and a commit in turn. These tests hold the jobstore to
making claims that wait together, for the same job types and lease, in one statement; to giving each its
own share, its own worker id and lease, in the one fair order; and to keeping claims of other types apart.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from jobstore.claims import CLAIM_STATEMENTS
from jobstore.store import CarrierFailed, ClaimConnection

from .conftest import wait_until


def statements() -> float:
    return float(CLAIM_STATEMENTS._value.get())


@pytest.fixture
async def conn(database_url) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def claims(database_url) -> AsyncIterator[ClaimConnection]:
    claim_connection = ClaimConnection(database_url)
    yield claim_connection
    await claim_connection.close()


async def fill(conn: asyncpg.Connection, users: int, per_user: int, job_type: str = "pdf") -> None:
    await conn.execute(
        "INSERT INTO document_jobs (id, user_id, job_type, payload, created_at)"
        " SELECT gen_random_uuid(), 'user-' || lpad((g % $1::integer)::text, 2, '0'), $3::text, '{}',"
        "        now() + g * interval '1 millisecond'"
        "   FROM generate_series(0, $1::integer * $2::integer - 1) g", users, per_user, job_type)


async def together(claims: ClaimConnection, asks: list[tuple[list[str], int, str]]) -> list[list[Any]]:
    """The claims `asks` (job types, max jobs, worker id) started while the connection is busy, so that they
    wait for it together; their rows."""
    async with claims._lock:  # the connection busy with another claim
        tasks = [asyncio.create_task(claims.claim(types, n, 30_000, worker, None)) for types, n, worker in asks]
        await wait_until(lambda: len(claims._waiting) == len(asks))
    return await asyncio.gather(*tasks)


async def test_claims_waiting_together_share_one_statement_each_with_its_share(conn, claims) -> None:
    await fill(conn, users=10, per_user=3)
    before = statements()
    got = await together(claims, [(["pdf"], 4, "w-a"), (["pdf"], 3, "w-b"), (["pdf"], 5, "w-c")])
    assert statements() - before == 1
    assert [len(rows) for rows in got] == [4, 3, 5]
    for rows, worker in zip(got, ["w-a", "w-b", "w-c"], strict=True):
        assert {r["worker_id"] for r in rows} == {worker}
    # One fair order, handed out along it: the first ten jobs are the ten users' first ones.
    in_order = [r for rows in got for r in rows]
    assert [r["claim_place"] for r in in_order] == list(range(1, 13))
    assert len({r["user_id"] for r in in_order[:10]}) == 10
    # As stored: each job leased to its own worker, and its processing event says so.
    stored = {r["id"]: r for r in await conn.fetch(
        "SELECT j.id, j.worker_id, j.status, e.data FROM document_jobs j"
        " JOIN job_events e ON e.job_id = j.id AND e.status = 'processing'")}
    assert len(stored) == 12
    for r in in_order:
        assert stored[r["id"]]["status"] == "processing"
        assert stored[r["id"]]["worker_id"] == r["worker_id"]
        assert json.loads(stored[r["id"]]["data"])["worker_id"] == r["worker_id"]


async def test_when_jobs_run_short_the_earlier_claims_are_served_first(conn, claims) -> None:
    await fill(conn, users=2, per_user=3)
    got = await together(claims, [(["pdf"], 4, "w-a"), (["pdf"], 4, "w-b"), (["pdf"], 4, "w-c")])
    assert [len(rows) for rows in got] == [4, 2, 0]
    # Nothing claimed for nobody: six jobs, each held by the worker that got it.
    assert await conn.fetchval("SELECT count(*) FROM document_jobs WHERE status = 'processing'") == 6


async def test_claims_of_other_types_or_leases_get_statements_of_their_own(conn, claims) -> None:
    await fill(conn, users=3, per_user=2, job_type="pdf")
    await fill(conn, users=3, per_user=2, job_type="spreadsheet")
    before = statements()
    async with claims._lock:
        tasks = [asyncio.create_task(claims.claim(["pdf"], 2, 30_000, "w-pdf", None)),
                 asyncio.create_task(claims.claim(["spreadsheet"], 2, 30_000, "w-sheet", None)),
                 asyncio.create_task(claims.claim(["pdf"], 2, 60_000, "w-long", None)),
                 asyncio.create_task(claims.claim(["pdf"], 2, 30_000, "w-pdf-2", None))]
        await wait_until(lambda: len(claims._waiting) == 4)
    pdf, sheet, long_lease, pdf_2 = await asyncio.gather(*tasks)
    # pdf with a 30 s lease together; spreadsheet apart; pdf with a 60 s lease apart.
    assert statements() - before == 3
    assert {r["job_type"] for r in pdf + pdf_2 + long_lease} == {"pdf"}
    assert {r["job_type"] for r in sheet} == {"spreadsheet"}
    assert [len(pdf), len(sheet), len(long_lease), len(pdf_2)] == [2, 2, 2, 2]
    leases = {r["worker_id"]: r["lease_expires_at"] - r["started_at"] for r in pdf + pdf_2 + long_lease}
    for worker, lease in leases.items():
        assert round(lease.total_seconds()) == (60 if worker == "w-long" else 30), (worker, lease)


async def test_one_workers_two_claims_in_one_statement_get_different_jobs(conn, claims) -> None:
    """The unary Claim may be called twice at once by one worker id: each call gets its own share."""
    await fill(conn, users=4, per_user=2)
    first, second = await together(claims, [(["pdf"], 3, "same"), (["pdf"], 4, "same")])
    assert [len(first), len(second)] == [3, 4]
    assert not {r["id"] for r in first} & {r["id"] for r in second}


async def test_a_statement_takes_no_more_jobs_than_one_claim_may(conn, claims) -> None:
    """Counting each user's share costs users x (jobs - users + 1) index entries: a batch stays within what
    one claim may ask for (100), the rest wait for the next statement."""
    await fill(conn, users=60, per_user=4)
    before = statements()
    got = await together(claims, [(["pdf"], 60, "w-a"), (["pdf"], 30, "w-b"), (["pdf"], 20, "w-c"),
                                  (["pdf"], 10, "w-d")])
    assert [len(rows) for rows in got] == [60, 30, 20, 10]
    assert statements() - before == 2  # 60 + 30 + 10, then 20


async def test_a_carried_claim_returns_without_waiting_for_the_statements_after_it(conn, claims) -> None:
    await fill(conn, users=3, per_user=2, job_type="pdf")
    await fill(conn, users=3, per_user=2, job_type="spreadsheet")
    ended: list[str] = []
    async with claims._lock:
        tasks = {name: asyncio.create_task(claims.claim([job_type], 1, 30_000, name, None))
                 for name, job_type in (("a", "pdf"), ("x", "spreadsheet"), ("b", "pdf"))}
        for name, task in tasks.items():
            task.add_done_callback(functools.partial(lambda name, _task: ended.append(name), name))
        await wait_until(lambda: len(claims._waiting) == 3)
    await asyncio.gather(*tasks.values())
    # a's statement carried b: b has its job when a does, before x's statement (after a's) has answered.
    assert ended.index("b") < ended.index("x"), ended


async def test_a_failed_statement_fails_its_holder_and_lets_the_claims_it_carried_look_again(
        conn, claims, database_url) -> None:
    await fill(conn, users=3, per_user=2)
    async with claims._lock:
        tasks = [asyncio.create_task(claims.claim(["pdf"], 1, 30_000, f"w-{i}", None)) for i in range(3)]
        await wait_until(lambda: len(claims._waiting) == 3)
        # The claim connection's next statement is cancelled by the server as it starts.
        await conn.execute("CREATE FUNCTION cancel_claims() RETURNS trigger LANGUAGE plpgsql AS $$"
                           " BEGIN RAISE EXCEPTION 'refused for the test' USING ERRCODE = 'query_canceled'; END $$")
        await conn.execute("CREATE TRIGGER cancel_claims BEFORE UPDATE ON document_jobs"
                           " FOR EACH ROW EXECUTE FUNCTION cancel_claims()")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    held = [r for r in results if isinstance(r, asyncpg.QueryCanceledError)]
    carried = [r for r in results if isinstance(r, CarrierFailed)]
    assert len(held) == 1 and len(carried) == 2, results
    assert isinstance(carried[0], ConnectionError) and carried[0] is not carried[1]  # retried as a hiccup
    assert await conn.fetchval("SELECT count(*) FROM document_jobs WHERE status <> 'pending'") == 0
    await conn.execute("DROP TRIGGER cancel_claims ON document_jobs")
    # The claims look again, and the connection works.
    again = await together(claims, [(["pdf"], 1, f"w-{i}") for i in range(3)])
    assert [len(rows) for rows in again] == [1, 1, 1]
