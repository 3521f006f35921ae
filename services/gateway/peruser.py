"""How many of something each user holds at once (open event streams, large downloads), up to a cap."""

from __future__ import annotations

import collections


class PerUserCount:
    """A count per user, each at most `limit`; users holding none are forgotten."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: collections.Counter[str] = collections.Counter()

    def admit(self, user_id: str) -> bool:
        """Count one more for the user; False (and nothing counted) when the user holds `limit` already."""
        if self._held[user_id] >= self.limit:
            return False
        self._held[user_id] += 1
        return True

    def release(self, user_id: str) -> None:
        self._held[user_id] -= 1
        if not self._held[user_id]:
            del self._held[user_id]
