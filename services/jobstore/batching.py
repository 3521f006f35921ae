"""Calls on jobs, batched: concurrent completions (or heartbeats) share one statement and one commit.

Workers finish jobs and report progress all the time, each with its own request; a commit per request
would make the commit rate the ceiling of the whole queue (and of the progress events streamed to
browsers). A batcher takes whatever requests of its kind are waiting, runs them as one statement, and
answers each caller with its job's row (or None: its lease was not held). Nothing waits on purpose: at low
load a batch is one request; under load, the requests that arrive while one batch commits form the next.
A job appears at most once per batch (a second request for it waits for the next), so one statement
never touches a row twice, and every batch locks its rows in one order (by job id).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

MAX_BATCH = 500

Row = asyncpg.Record
RunBatch = Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Row]]]


@dataclass
class _Request:
    job_id: uuid.UUID
    args: tuple[Any, ...]  # the statement's columns for this job, the job id first
    future: asyncio.Future[Row | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Runs `run` on batches of requests; `run` gets each request's columns (job id first, batches sorted
    by it) and returns the rows of the jobs it acted on, each with its `id`."""

    def __init__(self, run: RunBatch, name: str) -> None:
        self._run_batch = run
        self._name = name
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, job_id: uuid.UUID, *args: Any) -> Row | None:
        """The job's row after the statement, or None when it did not act on the job (a lease not held)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        request = _Request(job_id, (job_id, *args))
        self._queue.append(request)
        self._wake.set()
        return await asyncio.shield(request.future)  # a caller that goes away does not cancel the batch

    async def submit_many(self, jobs: Sequence[tuple[Any, ...]]) -> list[Row | BaseException | None]:
        """submit() of several jobs at once (each tuple: the job id, then its columns), with one future each
        and no task: each job's row, or None, or the error of its batch, in order."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        requests = [_Request(args[0], args) for args in jobs]
        self._queue.extend(requests)
        self._wake.set()
        # Shielded as submit's: a caller that goes away does not cancel the batch.
        return await asyncio.shield(asyncio.gather(*(r.future for r in requests), return_exceptions=True))

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
                batch: list[_Request] = []
                seen: set[uuid.UUID] = set()
                rest: list[_Request] = []
                for request in self._queue:
                    if request.job_id in seen or len(batch) >= MAX_BATCH:
                        rest.append(request)
                    else:
                        seen.add(request.job_id)
                        batch.append(request)
                self._queue = rest
                await self._one(batch)

    async def _one(self, batch: list[_Request]) -> None:
        batch.sort(key=lambda r: r.job_id)  # one lock order for every batch
        self.batches += 1
        try:
            rows = await self._run_batch([r.args for r in batch])
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        by_id = {row["id"]: row for row in rows}
        for request in batch:
            if not request.future.done():
                request.future.set_result(by_id.get(request.job_id))
