"""Small helpers for asyncio futures shared by the services."""

from __future__ import annotations

import asyncio
from typing import Any


def retrieve(future: asyncio.Future[Any]) -> None:
    """A done callback that reads a future's outcome, so that an error nobody awaits any more (its caller
    gave up waiting, or left) is not logged by asyncio as never retrieved."""
    if not future.cancelled():
        future.exception()
