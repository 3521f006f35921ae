"""The doorbell's NOTIFYs, as another replica hears them on a LISTEN connection of its own."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from jobstore.doorbell import CHANNEL, Doorbell

from .conftest import wait_until

INTERVAL_S = 2.0  # long beside a NOTIFY's round trip, even on a loaded machine


async def test_a_bell_of_new_events_waits_out_the_interval_and_one_that_wakes_claims_does_not(database_url) -> None:
    """Under load, bells that only say "new events" came one after another, a NOTIFY every couple of
    milliseconds: they now go at most once per interval. A bell that makes claims wake (its job types) or
    cancels a job does not wait, and takes the waiting one with it."""
    heard: list[tuple[float, str]] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda _conn, _pid, _channel, payload: heard.append((time.monotonic(),
                                                                                               payload)))
    bell = Doorbell(database_url, on_ring=lambda _types: None, on_reconnect=lambda: None,
                    events_interval_s=INTERVAL_S)
    await bell.start()
    try:
        bell.ring()  # nothing was sent within the interval: at once
        await wait_until(lambda: len(heard) == 1, timeout=10)
        for _ in range(50):  # commits, one after another
            bell.ring()
        await asyncio.sleep(0.2)  # the bell waits out the interval
        assert len(heard) == 1
        rung = time.monotonic()
        bell.ring({"spreadsheet"})  # a pending spreadsheet job: waiting claims elsewhere must hear of it now
        await wait_until(lambda: len(heard) == 2, timeout=10)
        assert heard[1][1] == "spreadsheet"
        assert heard[1][0] - rung < INTERVAL_S / 2, "the bell that wakes claims waited for the interval"

        bell.ring()  # new events again, just after a NOTIFY: not before the interval has passed
        await wait_until(lambda: len(heard) == 3, timeout=10)
        assert heard[2] == (heard[2][0], "") and heard[2][0] - heard[1][0] > INTERVAL_S * 0.75, heard
        assert bell.sent == 3, "the fifty bells rung together went out as one"
    finally:
        await bell.stop()
        await listener.close()


async def test_a_bell_still_waiting_out_the_interval_goes_out_when_the_doorbell_stops(database_url) -> None:
    """The last commits of a stopping jobstore (its draining sessions' completions) ring a bell that would
    wait out the interval: stopping sends it rather than dropping it."""
    heard: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda _conn, _pid, _channel, payload: heard.append(payload))
    bell = Doorbell(database_url, on_ring=lambda _types: None, on_reconnect=lambda: None,
                    events_interval_s=60.0)
    await bell.start()
    try:
        bell.ring()
        await wait_until(lambda: len(heard) == 1, timeout=10)
        bell.ring()  # waits out a minute
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await bell.stop()
        assert time.monotonic() - started < 5, "stop() waited for the interval"
        await wait_until(lambda: len(heard) == 2, timeout=10)
        assert bell.sent == 2
    finally:
        await bell.stop()
        await listener.close()
