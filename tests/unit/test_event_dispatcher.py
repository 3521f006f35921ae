"""The event dispatcher's logic without a database: a subscription's bounded buffer and the overflow mark
beside it, fan-out by job and scope, and the settled cursor."""

from __future__ import annotations

import asyncio

import pytest

from docjobs.v1 import jobstore_pb2 as pb
from jobstore.events import Closed, EventDispatcher, FellBehind, Subscription


def event(event_id: int, job_id: str = "job-1", user_id: str = "u", session_id: str = "s") -> pb.JobEvent:
    return pb.JobEvent(id=event_id, job_id=job_id, user_id=user_id, session_id=session_id)


def dispatcher() -> EventDispatcher:
    return EventDispatcher(None, on_claimable=lambda _types: None)  # type: ignore[arg-type]  # no read here


async def test_a_full_buffer_marks_the_subscription_and_its_reader_cannot_miss_it() -> None:
    sub = Subscription(limit=2)
    assert sub.put(event(1)) and sub.put(event(2))
    assert not sub.put(event(3))  # full: dropped, and marked beside the buffer
    assert not sub.put(event(4))
    with pytest.raises(FellBehind):  # before anything still buffered: that would be a gap
        await sub.next()
    sub.resync()
    assert sub.put(event(5))
    assert (await sub.next()).id == 5


async def test_a_reader_waiting_on_an_empty_buffer_wakes_for_an_event_an_overflow_and_a_close() -> None:
    sub = Subscription(limit=1)
    waiting = asyncio.ensure_future(sub.next())
    await asyncio.sleep(0)
    sub.put(event(1))
    assert (await waiting).id == 1

    waiting = asyncio.ensure_future(sub.next())
    await asyncio.sleep(0)
    sub.put(event(2))
    sub.put(event(3))  # both in one delivery round, before the reader runs: the second overflows
    with pytest.raises(FellBehind):
        await waiting

    sub.resync()
    waiting = asyncio.ensure_future(sub.next())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(Closed):
        await waiting


async def test_delivery_goes_to_the_jobs_and_scopes_it_matches_and_counts_drops() -> None:
    d = dispatcher()
    one_job = d.subscribe(job_id="job-1", limit=10)
    other_job = d.subscribe(job_id="job-2", limit=10)
    user = d.subscribe(user_id="u", limit=10)
    session = d.subscribe(user_id="u", session_id="other", limit=10)
    any_users_session = d.subscribe(session_id="other", limit=10)
    everything = d.subscribe(limit=1)
    assert d.subscriber_count == 6
    d._deliver(event(1))
    d._deliver(event(2, job_id="job-2", session_id="other"))
    d._deliver(event(3, job_id="job-3", user_id="v", session_id="other"))  # another user's, in that session
    assert [(await one_job.next()).id] == [1]
    assert (await other_job.next()).id == 2
    assert [(await user.next()).id, (await user.next()).id] == [1, 2]
    assert (await session.next()).id == 2
    assert [(await any_users_session.next()).id, (await any_users_session.next()).id] == [2, 3]
    assert not user.drain() and not session.drain()  # user v's event reached none of user u's streams
    assert d.overflows == 2  # the all-jobs buffer holds one
    with pytest.raises(FellBehind):
        await everything.next()
    for sub in (one_job, other_job, user, session, any_users_session, everything):
        d.unsubscribe(sub)
    assert d.subscriber_count == 0


async def test_the_settled_cursor_wakes_only_readers_holding_events_for_it() -> None:
    d = dispatcher()
    holding, idle = d.subscribe(user_id="a"), d.subscribe(user_id="b")
    woken = asyncio.ensure_future(holding.changed(until_settled=True))
    waiting = asyncio.ensure_future(idle.changed(until_settled=False))
    await asyncio.sleep(0)
    d._checkpoints.append((5, 1, 0.0))
    d._settle(2)
    await asyncio.sleep(0)
    assert woken.done() and not waiting.done()
    d._deliver(event(6, user_id="b"))  # an event of its own still wakes it
    await asyncio.sleep(0)
    assert waiting.done()


async def test_closing_ends_every_subscription_and_those_that_come_later() -> None:
    d = dispatcher()
    sub = d.subscribe(job_id="job-1")
    d.close_subscriptions()
    with pytest.raises(Closed):
        await sub.next()
    with pytest.raises(Closed):
        await d.subscribe(user_id="u").next()


def test_the_cursor_settles_only_when_a_snapshot_has_passed_every_earlier_transaction() -> None:
    d = dispatcher()
    d._delivered = {11, 12}
    d._checkpoints.extend([(12, 100, 0.0), (15, 105, 0.0)])  # (highest id handed out, horizon xid, when) per read
    d._settle(99)  # transactions before xid 100 may still commit ids <= 12
    assert d.settled == 0 and d._delivered == {11, 12}
    d._settle(100)
    assert d.settled == 12 and d._delivered == set()  # what was delivered is below the cursor now
    d._settle(104)
    assert d.settled == 12
    d._settle(200)
    assert d.settled == 15 and not d._checkpoints
