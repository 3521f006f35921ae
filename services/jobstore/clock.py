"""The jobstore's clock: where lease, backoff, expiry and retention decisions get `now`.

Every statement that decides by time takes `now` as a parameter, `coalesce($n::timestamptz, now())`
(River's pattern). In production the parameter is NULL and the database's clock decides: one clock for
every replica, whatever the hosts' clocks say, so a jobstore on a host whose clock runs ahead cannot
reap a lease early. A test passes a ManualClock: the decisions then happen at the time it says, so lease,
backoff and expiry tests set the time instead of backdating rows or sleeping.

One clock object per process, made by the server and passed to the store, its batchers and maintenance.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """The real time: the database's for SQL, this host's for what Python computes from a request (a
    delay's run_at, a ttl's expires_at)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sql_now(self) -> datetime | None:
        """The `now` parameter of the queries; None: the database's now()."""
        return None


class ManualClock(Clock):
    """A clock that stands still until told to move (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def sql_now(self) -> datetime | None:
        return self._now

    def advance(self, delta: timedelta | None = None, /, **parts: float) -> datetime:
        """Move forward by delta, or by timedelta(**parts) (seconds=1.5, milliseconds=200, days=2)."""
        step = delta if delta is not None else timedelta(**parts)
        if step < timedelta(0):
            raise ValueError("a clock does not go back")
        self._now += step
        return self._now
