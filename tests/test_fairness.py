"""The claim order is fair across users: a user's backlog delays another user's job by at most about one
job per render slot; priority orders jobs within that rule. Over the real gRPC path and a real Postgres,
and the plan of the claim statement on a backlog of 100,000 jobs."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import asyncpg

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from jobstore.clock import ManualClock
from jobstore.queries import Q
from jobstore.store import ClaimConnection

from .conftest import new_user, wait_until
from .helpers import claim, enqueue

TYPES = ["spreadsheet", "document", "pdf", "presentation"]


async def enqueue_many(stub: pb_grpc.JobStoreAsyncStub, user_id: str, n: int, **fields: Any) -> list[pb.Job]:
    """n jobs of one user, 50 concurrent calls at a time."""
    jobs: list[pb.Job] = []
    for start in range(0, n, 50):
        jobs += await asyncio.gather(*(enqueue(stub, user_id=user_id, title=f"{user_id} {i}", **fields)
                                       for i in range(start, min(n, start + 50))))
    return jobs


class Renderer:
    """A renderer's claim loop over gRPC, as renderer/worker.py runs it: with `slots` render slots, it
    claims as many jobs as it has free slots, each "render" takes a little while, then completes."""

    def __init__(self, stub: pb_grpc.JobStoreAsyncStub, slots: int, name: str = "r") -> None:
        self.stub = stub
        self.slots = slots
        self.name = name
        self.claimed: list[pb.Job] = []  # in the order the claims returned them
        self.free = asyncio.Semaphore(slots)
        self.running: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self.free.acquire()
            free = 1
            while not self.free.locked() and free < self.slots:  # every other free slot too
                await self.free.acquire()
                free += 1
            reply = await self.stub.Claim(pb.ClaimRequest(worker_id=self.name, job_types=TYPES, max_jobs=free,
                                                          wait_ms=500, lease_ms=30_000))
            for _ in range(free - len(reply.jobs)):
                self.free.release()
            for c in reply.jobs:
                self.claimed.append(c.job)
                task = asyncio.create_task(self._render(c))
                self.running.add(task)
                task.add_done_callback(self.running.discard)

    async def _render(self, c: pb.ClaimedJob) -> None:
        try:
            await asyncio.sleep(0.005)  # a small document
            await self.stub.Complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
        finally:
            self.free.release()

    async def stop(self, loop_task: asyncio.Task[None]) -> None:
        self.stopping.set()
        await loop_task
        await asyncio.gather(*self.running)


async def test_a_users_500_jobs_delay_another_users_job_by_at_most_one_job_per_render_slot(stub) -> None:
    a, b = new_user(), new_user()
    await enqueue_many(stub, a, 500)
    renderer = Renderer(stub, slots=4)
    loop = asyncio.create_task(renderer.run())
    try:
        await wait_until(lambda: len(renderer.claimed) >= 40)  # A's backlog has every slot busy
        job_b = await enqueue(stub, user_id=b, title="b")
        # Counted from the Enqueue's answer: claims that returned while the call was on its way (more on
        # a loaded machine) ran before B's job existed.
        stored = len(renderer.claimed)
        await wait_until(lambda: any(j.id == job_b.id for j in renderer.claimed))
    finally:
        await renderer.stop(loop)
    users = [j.user_id for j in renderer.claimed]
    a_first = max(0, users.index(b) - stored)  # A's jobs claimed after B's was stored, before B's
    # The claims already on their way when B's job was stored take A's jobs, one slot each at most; the
    # next claim takes B's, A having jobs in progress and B none. (First come, first served: 460.)
    assert a_first <= renderer.slots, users[stored:stored + a_first + 1]
    assert a_first < 20
    assert len(renderer.claimed) < 500  # A's backlog was still there


async def test_b_job_enqueued_right_after_a_backlog_is_claimed_before_most_of_it(stub) -> None:
    a, b = new_user(), new_user()
    await enqueue_many(stub, a, 500)
    job_b = await enqueue(stub, user_id=b, title="b")
    renderer = Renderer(stub, slots=4)
    loop = asyncio.create_task(renderer.run())
    try:
        await wait_until(lambda: any(j.id == job_b.id for j in renderer.claimed))
    finally:
        await renderer.stop(loop)
    # The first claim (4 free slots): A's oldest and B's job hold the first turns of their users.
    assert [j.user_id for j in renderer.claimed].index(b) < renderer.slots


async def test_pools_of_different_job_types_each_take_turns_across_their_own_users(stub) -> None:
    """A pdf pool and a spreadsheet pool claim in turn from one jobstore: each keeps its own place in the
    ring of users. (With one place for both, every pdf claim started after the spreadsheet user and
    landed on the same pdf user: user a got 1 of 30 pdf claims while user c had a backlog.)"""
    a, b, c = sorted(new_user() for _ in range(3))
    await enqueue_many(stub, a, 5, job_type="pdf")
    await enqueue_many(stub, c, 40, job_type="pdf")
    await enqueue_many(stub, b, 40, job_type="spreadsheet")
    pdf_users = []
    for _ in range(30):
        pdf_users += [j.job.user_id for j in await claim(stub, "pdf-pool", types=("pdf",))]
        await claim(stub, "sheet-pool", types=("spreadsheet",))
    ours = [user for user in pdf_users if user in (a, c)]  # other tests' users may take turns too
    assert ours[:10].count(a) == 5, ours


async def test_one_batch_claim_takes_turns_across_users_and_priority_orders_jobs_within_a_user(stub) -> None:
    a, b, c = new_user(), new_user(), new_user()
    for i in range(10):  # one after the other: ages in this order
        await enqueue(stub, user_id=a, title=f"{a} {i}")
    low = await enqueue(stub, user_id=a, title="a low", priority=-5)
    high = await enqueue(stub, user_id=a, title="a high", priority=5)
    await enqueue(stub, user_id=b, title="b 0")
    for i in range(3):
        await enqueue(stub, user_id=c, title=f"c {i}")
    got = await claim(stub, max_jobs=10)
    users = Counter(g.job.user_id for g in got)
    # Rounds: a1 b1 c1 | a2 c2 | a3 c3 | a4 | a5 | a6 (B has one job); a's first is its highest priority.
    assert users == {a: 6, b: 1, c: 3}, users
    titles = [g.job.title for g in got]
    assert set(titles[:3]) == {"a high", "b 0", "c 0"}, titles
    assert [t for t in titles if t.startswith(a)] == [f"{a} {i}" for i in range(5)]
    # Within a user, priority first, then oldest: the low-priority job is a's last.
    rest = []
    while batch := await claim(stub, max_jobs=10):
        rest += [g.job.id for g in batch]
    assert rest[-1] == low.id and high.id not in rest


async def test_a_users_high_priority_does_not_put_its_jobs_before_another_users_turn(stub) -> None:
    a, b = new_user(), new_user()
    await enqueue_many(stub, a, 5, priority=1000)
    job_b = await enqueue(stub, user_id=b, title="b", priority=-1000)
    first = await claim(stub)
    second = await claim(stub)
    assert job_b.id in {first[0].job.id, second[0].job.id}


async def test_delayed_and_retrying_jobs_take_turns_once_they_are_due(jobstore_factory) -> None:
    clock = ManualClock()
    store = await jobstore_factory(clock=clock, maintenance_interval_s=3600.0, retry_base_ms=60_000.0,
                                   retry_cap_ms=60_000.0)
    a, b = new_user(), new_user()
    await enqueue_many(store.stub, a, 4)
    delayed_b = await enqueue(store.stub, user_id=b, title="b later", delay_ms=1000)
    # B has a pending job that is not due: it takes no turn, and A's jobs are not held back for it.
    got = await claim(store.stub, max_jobs=3)
    assert [g.job.user_id for g in got] == [a, a, a]
    # A's first job fails and is retried later (backoff); its next due job is taken meanwhile.
    await store.stub.Fail(pb.FailRequest(job_id=got[0].job.id, lease_token=got[0].lease_token,
                                         error_code="boom", error_message="boom", retryable=True))
    clock.advance(milliseconds=1000)
    # Due now: B's turn, then A's last due job (A was served last).
    [first, second] = await claim(store.stub, max_jobs=2)
    assert first.job.id == delayed_b.id and second.job.user_id == a
    assert await claim(store.stub) == []  # A's retry is not due yet
    clock.advance(seconds=60)  # the backoff: 30 to 60 s
    [retried] = await claim(store.stub)
    assert retried.job.id == got[0].job.id and retried.job.retry_count == 1


async def test_concurrent_claimers_on_two_replicas_take_every_job_of_every_user_exactly_once(
        jobstore_factory) -> None:
    replicas = [await jobstore_factory(), await jobstore_factory()]
    users = [new_user() for _ in range(4)]
    ids: set[str] = set()
    for n, user in zip((600, 200, 50, 1), users, strict=True):
        ids.update(j.id for j in await enqueue_many(replicas[0].stub, user, n))
    claimed_by: Counter[str] = Counter()
    order: list[str] = []
    empty_while_pending = 0

    async def worker(stub: pb_grpc.JobStoreAsyncStub, k: int) -> None:
        nonlocal empty_while_pending
        while True:
            got = await claim(stub, worker=f"w{k}", max_jobs=1 + k % 5)
            if not got:
                if len(claimed_by) < len(ids):
                    # Near the end the last jobs are in other workers' claims, not yet counted here: only
                    # an empty answer while jobs are still pending counts (a loaded run once had 50 of
                    # the former while one claim statement was slow).
                    if (await stub.GetStats(pb.GetStatsRequest())).due_pending:
                        empty_while_pending += 1
                        if empty_while_pending > 200:
                            raise AssertionError("claims keep coming back empty while jobs are pending")
                    continue
                return
            for c in got:
                claimed_by[c.job.id] += 1
                order.append(c.job.user_id)
            await asyncio.gather(*(stub.Complete(pb.CompleteRequest(job_id=c.job.id, lease_token=c.lease_token))
                                   for c in got))

    await asyncio.gather(*(worker(replicas[k % 2].stub, k) for k in range(8)))
    assert set(claimed_by) == ids
    assert max(claimed_by.values()) == 1
    # The user with one job, enqueued last, is served within the first round of claims (8 claims of at
    # most 5 jobs), not after the 850 jobs before it.
    assert order.index(users[3]) < 40, order.index(users[3])


async def test_the_claim_reads_no_users_backlog_on_100k_pending_jobs(database_url) -> None:
    conn = await asyncpg.connect(database_url, server_settings=ClaimConnection.SETTINGS)
    try:
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, priority, created_at)"
            " SELECT gen_random_uuid(), 'backlog', 'pdf', '{}', g % 3, now() - interval '1 hour' + g * interval '1 ms'"
            " FROM generate_series(1, 100000) g")
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, priority)"
            " SELECT gen_random_uuid(), 'other-' || (g % 5), 'pdf', '{}', g % 2 FROM generate_series(1, 25) g")
        # Users whose many pending jobs are not claimable by this claim: not due yet (runAt a day ahead), or
        # of a type the claimer does not take. Stepping past them must not read them either.
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, run_at)"
            " SELECT gen_random_uuid(), 'later', 'pdf', '{}', now() + interval '1 day' FROM generate_series(1, 50000)")
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload)"
            " SELECT gen_random_uuid(), 'other-type', 'spreadsheet', '{}' FROM generate_series(1, 50000)")
        await conn.execute(
            "INSERT INTO document_jobs (id, user_id, job_type, payload, status, lease_token, lease_expires_at)"
            " SELECT gen_random_uuid(), 'backlog', 'pdf', '{}', 'processing', gen_random_uuid(),"
            " now() + interval '1 hour' FROM generate_series(1, 8)")
        await conn.execute("ANALYZE document_jobs")
        # Prepared, so that the plan checked is the one the claim connection runs: a generic plan, which
        # knows neither the types nor max_jobs.
        await conn.execute("PREPARE fair_claim (text[], integer, integer, text[], timestamptz, text) AS " + Q.claim)
        claimed_types = [t for t in TYPES if t != "spreadsheet"]
        types = "'{" + ",".join(claimed_types) + "}'"
        for max_jobs, after in ((1, ""), (10, ""), (1, "backlog"), (10, "backlog")):
            transaction = conn.transaction()
            await transaction.start()
            try:
                [plan] = json.loads(await conn.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE fair_claim({types}, {max_jobs}, 30000,"
                    f" array_fill('w'::text, ARRAY[{max_jobs}]), NULL, '{after}')"))
            finally:
                await transaction.rollback()
            read = rows_read(plan["Plan"])
            assert read["Seq Scan"] == 0, read
            # Each user's first job, and a few more of the users chosen: not the 100,000 of the backlog.
            assert read["document_jobs"] < 200, read
            transaction = conn.transaction()
            await transaction.start()
            try:
                claimed = await conn.fetch(Q.claim, claimed_types, max_jobs, 30_000, ["w"] * max_jobs, None, after)
            finally:
                await transaction.rollback()
            # Round robin from the first user: 1 claim of 1 is the backlog's; 10 are 6 users' first
            # jobs, then the second of the first four.
            # After "backlog": from other-0 on, wrapping around to the backlog last.
            got = Counter(r["user_id"] for r in claimed)
            assert got == ({"backlog": 1} if max_jobs == 1 and not after else {"other-0": 1} if max_jobs == 1 else
                           {"backlog": 2, "other-0": 2, "other-1": 2, "other-2": 2, "other-3": 1, "other-4": 1}
                           if not after else
                           {"other-0": 2, "other-1": 2, "other-2": 2, "other-3": 2, "other-4": 1, "backlog": 1}), got
    finally:
        await conn.close()


def rows_read(node: dict[str, object], totals: Counter[str] | None = None) -> Counter[str]:
    """Rows each scan of document_jobs produced or filtered away, over all its loops."""
    totals = totals if totals is not None else Counter()
    if node.get("Relation Name") == "document_jobs":
        loops = int(node.get("Actual Loops", 1))  # type: ignore[call-overload]
        rows = float(node.get("Actual Rows", 0)) + float(node.get("Rows Removed by Filter", 0))  # type: ignore[arg-type]
        totals["document_jobs"] += int(rows * loops)
        if node.get("Node Type") == "Seq Scan":
            totals["Seq Scan"] += 1
    children = node.get("Plans", [])
    assert isinstance(children, list)
    for child in children:
        rows_read(child, totals)
    return totals

