"""Waiting claims are woken one at a time, and no wake is lost (jobstore/claims.py).

Before, a commit woke every waiting claim: with thirty idle workers one job cost thirty claim statements
queued on the claim connection, and the job's own claim waited behind them. These tests hold the
jobstore to waking one waiter per job type, passing the wake on while there is more to claim, and handing
a wake on when its waiter cannot use it."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.claims import CLAIM_STATEMENTS, FOUND, FOUND_NONE
from jobstore.clock import ManualClock
from jobstore.store import NewJob

from .conftest import wait_until
from .helpers import claim, enqueue

LONG_WAIT_MS = 60_000  # a waiter left asleep by a lost wake would still be waiting when the test gives up


def count(child: Any) -> float:
    return float(child._value.get())


Waiting = list[asyncio.Task[list[pb.ClaimedJob]]]


async def waiting_claims(jobstore: Any, n: int, types: tuple[str, ...] = ("pdf",)) -> Waiting:
    """n claims asleep: each has looked once, found nothing and waits."""
    before, looked = len(jobstore.server.claims), count(FOUND_NONE)
    tasks = [asyncio.create_task(claim(jobstore.stub, worker=f"w{i}", types=types, wait_ms=LONG_WAIT_MS))
             for i in range(n)]
    await wait_until(lambda: len(jobstore.server.claims) == before + n and count(FOUND_NONE) >= looked + n
                     and all_asleep(jobstore))
    return tasks


def all_asleep(jobstore: Any) -> bool:
    """Every registered claim is in its wait (it looked, found nothing and asked when a job is due)."""
    return all(w.asleep for w in jobstore.server.claims._waiters)


async def test_one_job_wakes_one_of_thirty_waiting_claims_not_all(jobstore) -> None:
    tasks = await waiting_claims(jobstore, 30)
    empty_before, found_before = count(FOUND_NONE), count(FOUND)
    # A batch of one: a single Enqueue would hand the job to the oldest waiter (tests/test_handoff.py).
    [job] = [j.job for j in (await jobstore.stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[
        pb.EnqueueRequest(job_type="pdf", user_id="user-1", payload_json="{}")]))).jobs]
    winner = (await asyncio.wait_for(next(asyncio.as_completed(tasks)), 10))
    assert [c.job.id for c in winner] == [job.id]
    # Everybody else is back asleep: 29 waiting, none woken and not yet looking.
    await wait_until(lambda: len(jobstore.server.claims) == 29
                     and not any(w.woken for w in jobstore.server.claims._waiters))
    assert count(FOUND) - found_before == 1
    # The winner passed the wake on (there might have been more): one waiter looked and found nothing.
    # Waking all of them cost 29 empty statements.
    assert count(FOUND_NONE) - empty_before <= 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_batch_of_jobs_reaches_every_waiting_claim(jobstore) -> None:
    tasks = await waiting_claims(jobstore, 25)
    response = await jobstore.stub.EnqueueMany(pb.EnqueueManyRequest(jobs=[
        pb.EnqueueRequest(job_type="pdf", user_id=f"user-{i}", payload_json='{"spec": {}}') for i in range(25)]))
    got = await asyncio.wait_for(asyncio.gather(*tasks), 10)  # one wake for the batch, passed from claim to claim
    claimed = [c.job.id for jobs in got for c in jobs]
    assert sorted(claimed) == sorted(j.job.id for j in response.jobs)


async def test_waiters_of_different_types_each_get_theirs(jobstore) -> None:
    pdf_only = await waiting_claims(jobstore, 3, ("pdf",))
    both = await waiting_claims(jobstore, 3, ("pdf", "spreadsheet"))
    sheets_only = await waiting_claims(jobstore, 3, ("spreadsheet",))
    # The oldest waiters take pdfs; the jobs of the other type must still find the ones that take them.
    jobs = [await enqueue(jobstore.stub, job_type=t) for t in ("pdf",) * 4 + ("spreadsheet",) * 4]
    await wait_until(lambda: sum(t.done() for t in pdf_only + both + sheets_only) == 8, timeout=10)
    claimed = [c.job.id for t in pdf_only + both + sheets_only if t.done() for c in t.result()]
    assert sorted(claimed) == sorted(j.id for j in jobs)
    rest = [t for t in pdf_only + both + sheets_only if not t.done()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


async def store_claims_asleep(jobstore: Any, *waits: float) -> list[asyncio.Task[list[Any]]]:
    """Store.claim calls for pdf jobs, one per wait (in seconds), registered in this order, each having
    looked once and found nothing."""
    store, tasks = jobstore.server.store, []
    for n, wait in enumerate(waits):
        asleep = (len(jobstore.server.claims) + 1, count(FOUND_NONE) + 1)
        tasks.append(asyncio.create_task(store.claim(f"w{n}", ["pdf"], 1, wait, 30_000)))
        await wait_until(functools.partial(is_asleep, jobstore, asleep))
    return tasks


def is_asleep(jobstore: Any, expected: tuple[int, float]) -> bool:
    return (len(jobstore.server.claims), count(FOUND_NONE)) == expected and all_asleep(jobstore)


def pdf_job(run_at: datetime | None = None) -> NewJob:
    return NewJob(job_type="pdf", payload_json="{}", title="t", user_id="u", session_id="", message_id="",
                  priority=0, max_retries=None, run_at=run_at, expires_at=None, idempotency_key=None)


async def test_a_woken_claim_whose_caller_left_hands_the_job_to_the_next(jobstore) -> None:
    first, second = await store_claims_asleep(jobstore, 60.0, 60.0)
    # enqueue_many: a single enqueue would hand the job to a waiter (tests/test_handoff.py).
    [(row, _)] = await jobstore.server.store.enqueue_many([pdf_job()])
    # The commit woke the newest waiter (the warmest worker); its caller goes away before it looks.
    assert [w.woken for w in jobstore.server.claims._waiters] == [False, True]
    second.cancel()
    [got] = await asyncio.wait_for(first, 10)
    assert got["id"] == row["id"]
    with pytest.raises(asyncio.CancelledError):
        await second


async def test_a_claim_that_ends_knowing_of_a_job_due_later_tells_the_next(jobstore) -> None:
    # Only the woken claim looked after the delayed job was made, so only it knows when the job is due;
    # when its own wait ends first, the other claim would sleep through its whole wait unless told.
    long, short = await store_claims_asleep(jobstore, 60.0, 2.0)  # the commit wakes the newest: short
    due = datetime.now(UTC) + timedelta(seconds=4)  # after the short claim's wait ends
    row, _ = await jobstore.server.store.enqueue(pdf_job(due))
    assert await asyncio.wait_for(short, 10) == []
    [got] = await asyncio.wait_for(long, 10)
    assert got["id"] == row["id"]


async def test_a_claim_does_not_spin_on_a_pending_job_past_its_expiry(jobstore_factory) -> None:
    """A pending job past its expiry waits for the maintenance tick to fail it, and no claim can take it. A
    waiting claim once counted it as due at once and looked again every millisecond until that tick came
    (forever, were the tick held up)."""
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0)  # expiry waits for the test
    await enqueue(store.stub, job_type="pdf", ttl_ms=1000)
    clock.advance(seconds=2)
    before = count(CLAIM_STATEMENTS)
    assert await claim(store.stub, types=("pdf",), wait_ms=300) == []  # the claim's own long-poll, 0.3 s
    # One look, then asleep to the end of its wait (a spinning claim made ~100 statements in this time).
    assert count(CLAIM_STATEMENTS) - before <= 2
    assert (await store.server.maintenance.tick()).expired == 1
