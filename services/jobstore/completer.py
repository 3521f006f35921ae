"""Completions, batched: concurrent Complete calls share one statement and one commit.

Workers finish jobs all the time, each with its own RPC; a commit per job would make the commit rate
the ceiling of the whole queue. The completer takes whatever completions are waiting, completes them in
one statement, and answers each caller with its own row (or None for a stale lease). Nothing waits on
purpose: at low load a batch is one completion; under load, the completions that arrive while one
batch commits form the next. A job appears at most once per batch, so each completes at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

import asyncpg

from .clock import Clock
from .queries import Q

MAX_BATCH = 500


@dataclass
class _Completion:
    job_id: uuid.UUID
    token: uuid.UUID
    result_json: str
    artifact_id: uuid.UUID | None
    future: asyncio.Future[asyncpg.Record | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class Completer:
    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock
        self._queue: list[_Completion] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def complete(self, job_id: uuid.UUID, token: uuid.UUID, result_json: str,
                       artifact_id: uuid.UUID | None) -> asyncpg.Record | None:
        """The completed job's row, or None when the lease was not held."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="completer")
        item = _Completion(job_id, token, result_json, artifact_id)
        self._queue.append(item)
        self._wake.set()
        return await asyncio.shield(item.future)  # a caller that goes away does not cancel the batch

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch: list[_Completion] = []
                seen: set[uuid.UUID] = set()
                rest: list[_Completion] = []
                for item in self._queue:
                    if item.job_id in seen or len(batch) >= MAX_BATCH:
                        rest.append(item)
                    else:
                        seen.add(item.job_id)
                        batch.append(item)
                self._queue = rest
                await self._complete(batch)

    async def _complete(self, batch: list[_Completion]) -> None:
        batch.sort(key=lambda c: c.job_id)  # one lock order for every batch
        self.batches += 1
        try:
            rows = await self._pool.fetch(
                Q.complete, [c.job_id for c in batch], [c.token for c in batch],
                [c.result_json for c in batch], [c.artifact_id for c in batch], self._clock.sql_now())
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        by_id = {row["id"]: row for row in rows}
        for item in batch:
            if not item.future.done():
                item.future.set_result(by_id.get(item.job_id))
