"""The pg-boss bridge: a Node service that runs pg-boss sends `boss.send(queue, {...})`, and docjobs takes
that job as a pg-boss worker would, renders it as any other job, and ends the pg-boss job with the result.

pg-boss sends no notification a bridge can rely on, so the bridge reads pg-boss's table every
DOCJOBS_PGBOSS_INTERVAL_S, as pg-boss's own workers poll. Each round:

1. claim: pg-boss's fetch (due, not active, priority then age, FOR UPDATE SKIP LOCKED); for each job,
   in docjobs' database and in one transaction, the docjobs job and its link (pgboss_links) are created,
   or the link that exists is taken over; only then is the pg-boss claim committed. A bridge that stops
   in between leaves the pg-boss job unclaimed with its link written: the next claim finds the link and
   creates nothing. A payload the HTTP API would refuse fails the pg-boss job with the same error.
2. beat: pg-boss's heartbeat (touch) on every claim held, fenced by the claim's attempt. A claim that
   is gone tells why: `boss.cancel` (or a deleted job) cancels the docjobs job.
3. settle: links whose docjobs job has ended, locked with SKIP LOCKED, end their pg-boss job
   (completed with the document's output, or failed terminally with the error), fenced, and are marked
   settled after. A bridge that stops in between finds the pg-boss job already ended next time, and
   only marks the link.

Every replica may run the bridge: claims skip locked rows on both sides, and pg-boss's attempt fence
makes a second completion of one claim a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from docjobs import jobrequest, jsonvalues, urltokens
from docjobs.v1 import jobstore_pb2 as pb

from . import metrics, validation
from .clock import Clock
from .errors import DATABASE_ERRORS, InvalidArgument
from .queries import Q
from .settings import Settings

log = logging.getLogger(__name__)

# pg-boss schema versions the bridge's statements were tested against (pg-boss 12.38.0 installs 46).
# Its SQL (queries.sql, "pgboss_") copies pg-boss's own, column by column: a schema it was not tested
# with may differ, and a job failed or completed wrongly there is not seen until a Node service waits
# for ever.
TESTED_SCHEMA_VERSIONS = frozenset({46})
TESTED_PGBOSS = "pg-boss 12.38.0, schema version 46"
# Policies whose fetch is pg-boss's plain one; the others add conditions (singleton keys, strict order).
SUPPORTED_POLICIES = ("standard", "short")
# Enqueue's field names as the HTTP API (and so a payload) calls them, as the gateway renames them.
PAYLOAD_FIELDS = {"payload_json": "body", "user_id": "userId", "session_id": "sessionId",
                  "message_id": "messageId", "job_type": "documentType"}


class PgBossRefused(Exception):
    """The bridge cannot run against this pg-boss schema; the message is one line saying why."""


@dataclass(frozen=True)
class Invalid:
    """Why a payload is refused, as the HTTP API says it (gateway/payloads.py): its error code, message
    and field."""

    code: str
    message: str
    field: str

    def output(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


def _invalid(field: str, message: str) -> Invalid:
    return Invalid("invalid", f"{field}: {message}", field)


def parse_payload(body: Any, fallback_priority: int) -> pb.EnqueueRequest | Invalid:
    """A pg-boss job's data to an Enqueue request, checked as the HTTP API checks a service caller's
    POST /api/jobs body (the same codes, messages and fields: docjobs/jobrequest.py); or why not. The
    payload's priority wins; without one, the pg-boss job's own (fallback_priority, within docjobs' bounds)."""
    if not isinstance(body, dict):
        return Invalid("malformed", "the body must be a JSON object", "body")
    found = jsonvalues.problem(body)
    if found is not None:
        where, what = found
        return _invalid(where or "body", what)
    try:
        job_type, document = jobrequest.document(body)
        user_id = jobrequest.named_user(body.get("userId"))
        priority = body.get("priority")
        if priority is None:
            priority = max(-1000, min(1000, fallback_priority))
        elif not jobrequest.is_int(priority) or not -1000 <= priority <= 1000:
            raise jobrequest.RequestProblem("priority", "must be an integer between -1000 and 1000")
        texts = {field: jobrequest.optional_text(body, field, limit)
                 for field, limit in (("title", 500), ("sessionId", 200), ("messageId", 200))}
    except jobrequest.RequestProblem as exc:
        return _invalid(exc.field, exc.problem)
    return pb.EnqueueRequest(
        user_id=user_id, job_type=job_type, title=texts["title"], session_id=texts["sessionId"],
        message_id=texts["messageId"], priority=priority, payload_json=json.dumps(document))


def _json(value: Any) -> Any:
    """A jsonb column as asyncpg hands it over (text, without a codec)."""
    return json.loads(value) if isinstance(value, str) else value


def _request(data: Any, fallback_priority: int) -> pb.EnqueueRequest | Invalid:
    """A candidate's data as parse_payload judges it. jsonb nests deeper than Python's reader goes: such
    a payload is refused as the HTTP API refuses the body (raised, it would fail every round, and no job
    of the queue would be taken again)."""
    try:
        body = _json(data)
    except RecursionError:
        return Invalid("malformed", f"the body is nested more than {jsonvalues.MAX_DEPTH} levels deep", "body")
    except ValueError as exc:  # a number of more than 4,300 digits, which jsonb stores and Python will not read
        return Invalid("malformed", f"the body is not valid JSON here ({exc})", "body")
    return parse_payload(body, fallback_priority)


class PgBossBridge:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, *,
                 on_commit: Callable[[set[str]], None], clock: Clock) -> None:
        self._pool = pool
        self._settings = settings
        self._queue = settings.pgboss_queue
        self._schema = settings.pgboss_schema
        self._on_commit = on_commit
        self._clock = clock
        self._boss_pool: asyncpg.Pool | None = None  # None: pg-boss lives in docjobs' database
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting_for = ""  # what the last round waited for (logged once, not per round)
        self._failing = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def check(self) -> None:
        """Before the jobstore serves: an installed pg-boss schema of an untested version, or a queue of a
        policy the bridge does not fetch, is refused (PgBossRefused). A schema or queue not there yet is
        waited for by the rounds."""
        if self._settings.pgboss_database_url:  # min_size 0: nothing is connected until a round asks
            self._boss_pool = await asyncpg.create_pool(self._settings.pgboss_database_url, min_size=0,
                                                        max_size=2, command_timeout=60.0)
        try:
            refusal = await self._refusal()
        except DATABASE_ERRORS as exc:  # pg-boss's own database may come later than docjobs'
            log.warning("pg-boss bridge: pg-boss's database cannot be read yet (%s: %s); the rounds wait for it",
                        type(exc).__name__, exc)
            return
        except BaseException:
            await self._close_boss_pool()
            raise
        if refusal is not None:
            await self._close_boss_pool()
            raise PgBossRefused(refusal)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pgboss-bridge")
        log.info("pg-boss bridge on queue %r of schema %r", self._queue, self._schema)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self._close_boss_pool()

    async def _close_boss_pool(self) -> None:
        if self._boss_pool is not None:
            await self._boss_pool.close()
            self._boss_pool = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.round()
                if self._failing:
                    log.warning("pg-boss bridge: working again")
                    self._failing = False
            except DATABASE_ERRORS as exc:
                metrics.PGBOSS_ROUND_ERRORS.inc()
                if not self._failing:  # an outage is logged once, not every round
                    log.warning("pg-boss bridge: %s: %s (retrying every round)", type(exc).__name__, exc)
                    self._failing = True
            except PgBossRefused as exc:
                if self._waiting_for != str(exc):
                    log.error("pg-boss bridge stopped claiming: %s", exc)
                    self._waiting_for = str(exc)
            except Exception:  # a bug of one round must not end the bridge: the next round tries again
                metrics.PGBOSS_ROUND_ERRORS.inc()
                log.exception("pg-boss bridge: unexpected error in a round")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.pgboss_interval_s):
                    await self._stopping.wait()

    # --- one round -----------------------------------------------------------------------------

    async def round(self) -> None:
        """Claim, beat, settle, once (tests call it; the loop calls it every interval). Each step runs
        whatever the one before it raised (the first error is raised after them): a claim that failed
        round after round once left every active pg-boss job unbeaten and unsettled, for pg-boss to expire."""
        if not await self._ready():
            return
        error: Exception | None = None
        for step in (self._claim, self._beat, self._settle):
            try:
                await step()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    @contextlib.asynccontextmanager
    async def _boss(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A transaction on pg-boss's database, its schema first on the search path."""
        pool = self._boss_pool if self._boss_pool is not None else self._pool
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.pgboss_use_schema, self._schema)
            yield conn

    async def _refusal(self) -> str | None:
        """Why the bridge must not claim from this schema and queue (PgBossRefused's reason), or None."""
        reason, _ = await self._state()
        return reason

    async def _state(self) -> tuple[str | None, str | None]:
        """(a refusal, what is not there yet): both None when the bridge can claim."""
        async with self._boss() as conn:
            if not await conn.fetchval(Q.pgboss_installed, self._schema):
                return None, f"pg-boss schema {self._schema!r} is not installed yet (a Node service's boss.start())"
            version = await conn.fetchval(Q.pgboss_version)
            if version not in TESTED_SCHEMA_VERSIONS:
                return (f"pg-boss schema {self._schema!r} is at version {version}, which this bridge was not tested "
                        f"with (tested: {TESTED_PGBOSS}); run that pg-boss, or leave DOCJOBS_PGBOSS_QUEUE unset"), None
            policy = await conn.fetchval(Q.pgboss_queue, self._queue)
        if policy is None:
            return None, f"pg-boss queue {self._queue!r} does not exist yet (a Node service's boss.createQueue())"
        if policy not in SUPPORTED_POLICIES:
            return (f"pg-boss queue {self._queue!r} has policy {policy!r}; the bridge takes jobs from a queue of "
                    f"policy {' or '.join(SUPPORTED_POLICIES)}"), None
        return None, None

    async def _ready(self) -> bool:
        refusal, missing = await self._state()
        if refusal is not None:
            raise PgBossRefused(refusal)
        waiting = missing or ""
        if waiting != self._waiting_for:
            if waiting:
                log.info("pg-boss bridge waiting: %s", waiting)
            self._waiting_for = waiting
        return not waiting

    async def _claim(self) -> None:
        created_types: set[str] = set()
        async with self._boss() as boss:
            candidates = await boss.fetch(Q.pgboss_candidates, self._queue, self._settings.pgboss_batch)
            if not candidates:
                return
            parsed = await asyncio.to_thread(lambda: [_request(c["data"], c["priority"]) for c in candidates])
            refused: dict[uuid.UUID, Invalid] = {}
            for candidate, request in zip(candidates, parsed, strict=True):
                outcome = await self._adopt(candidate, request)
                if isinstance(outcome, Invalid):
                    refused[candidate["id"]] = outcome
                elif outcome is not None:
                    created_types.add(outcome)
            claimed = await boss.fetch(Q.pgboss_activate, self._queue, [c["id"] for c in candidates])
            for row in claimed:
                if row["id"] in refused:
                    await boss.fetch(Q.pgboss_fail, self._queue, row["id"], row["retry_count"],
                                     json.dumps(refused[row["id"]].output()))
        if created_types:
            self._on_commit(created_types)  # after the claim committed: renderers may take the jobs now
        metrics.PGBOSS_JOBS.labels("claimed").inc(len(candidates) - len(refused))
        metrics.PGBOSS_JOBS.labels("refused").inc(len(refused))
        for pgboss_id, invalid in refused.items():
            log.info("pg-boss job %s refused: %s", pgboss_id, invalid.message)

    async def _adopt(self, candidate: asyncpg.Record, request: pb.EnqueueRequest | Invalid) -> str | Invalid | None:
        """In docjobs' database, for a pg-boss job being claimed: take over its link if it has one (it was
        claimed before), else create its docjobs job and link. Returns the new job's type, None when
        the job existed, or why the payload is refused."""
        pgboss_id, attempt = candidate["id"], candidate["attempt"]
        async with self._pool.acquire() as conn, conn.transaction():
            link = await conn.fetchrow(Q.pgboss_link_get, self._queue, pgboss_id)
            if link is not None:
                await conn.execute(Q.pgboss_link_reclaimed, self._queue, pgboss_id, attempt)
                return None
            if isinstance(request, Invalid):
                return request
            # docjobs retries a failed render; the pg-boss job is failed once, when those are spent.
            request.max_retries = max(0, min(100, candidate["retry_limit"]))
            try:
                job = validation.enqueue(request, self._settings, self._clock.now())
            except InvalidArgument as exc:
                field = PAYLOAD_FIELDS.get(exc.field, exc.field)
                return Invalid("invalid", str(exc).replace(exc.field, field, 1), field)
            job_id = await conn.fetchval(
                Q.pgboss_enqueue, uuid.uuid4(), job.user_id, job.session_id, job.message_id, job.job_type,
                job.title, job.payload_json, job.priority, job.max_retries, self._clock.sql_now())
            await conn.execute(Q.pgboss_link_insert, self._queue, pgboss_id, job_id, attempt)
        log.info("pg-boss job %s is docjobs job %s", pgboss_id, job_id)
        return job.job_type

    async def _beat(self) -> None:
        links = await self._pool.fetch(Q.pgboss_links_open, self._queue)
        if not links:
            return
        async with self._boss() as boss:
            held = {r["id"] for r in await boss.fetch(
                Q.pgboss_touch, self._queue, [f"{link['pgboss_id']}:{link['attempt']}" for link in links])}
            lost = [link for link in links if link["pgboss_id"] not in held]
            if not lost:
                return
            states = {r["id"]: r for r in await boss.fetch(Q.pgboss_states, self._queue,
                                                            [link["pgboss_id"] for link in lost])}
        ended = []
        for link in lost:
            state = states.get(link["pgboss_id"])
            if state is not None and state["state"] in ("created", "retry", "active"):
                continue  # given back, or claimed again: the claim step takes the link over
            # Ended on pg-boss's side: boss.cancel, a deleted job, or pg-boss failed it (its expiry).
            what = "deleted" if state is None else state["state"]
            reason = ("cancelled through pg-boss" if what == "cancelled"
                      else f"the pg-boss job was {what} without it")
            if link["status"] in ("pending", "processing"):
                cancelled = await self._pool.fetchrow(Q.cancel, link["job_id"], reason, self._clock.sql_now())
                if cancelled is not None:
                    log.info("docjobs job %s cancelled: %s", link["job_id"], reason)
                    self._on_commit(set())
            ended.append(link["pgboss_id"])
            metrics.PGBOSS_JOBS.labels("ended_by_pgboss").inc()
        if ended:
            await self._pool.execute(Q.pgboss_link_settled, self._queue, ended)

    async def _settle(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q.pgboss_links_to_settle, self._queue, self._settings.pgboss_batch)
            if not rows:
                return
            settled, ended_here = [], set()
            async with self._boss() as boss:
                for row in rows:
                    completed = row["status"] == "completed"
                    statement = Q.pgboss_complete if completed else Q.pgboss_fail
                    ended = await boss.fetch(statement, self._queue, row["pgboss_id"], row["attempt"],
                                             json.dumps(self.output(row)))
                    if ended:
                        ended_here.add(row["pgboss_id"])
                    else:
                        state = await boss.fetchrow(Q.pgboss_states, self._queue, [row["pgboss_id"]])
                        if state is not None and state["state"] in ("created", "retry", "active"):
                            continue  # not ours to end now: the claim step takes it over again
                    settled.append(row["pgboss_id"])
            await conn.execute(Q.pgboss_link_settled, self._queue, settled)
        for row in rows:
            if row["pgboss_id"] in ended_here:
                metrics.PGBOSS_JOBS.labels("completed" if row["status"] == "completed" else "failed").inc()
                log.info("pg-boss job %s ended: docjobs job %s %s", row["pgboss_id"], row["id"], row["status"])

    def output(self, row: Mapping[str, Any] | asyncpg.Record, now: datetime | None = None) -> dict[str, Any]:
        """The pg-boss job's output for its ended docjobs job."""
        job_id = str(row["id"])
        if row["status"] == "completed":
            result = _json(row["result"]) or {}
            artifact_id = result.get("artifact_id") or (str(row["artifact_id"]) if row["artifact_id"] else None)
            url = None
            if artifact_id:
                issued = int((now or self._clock.now()).timestamp())
                token = urltokens.job_url_token(self._settings.url_token_secret, self._settings.url_token_ttl_s,
                                                row["user_id"], job_id, now=issued)
                url = self._settings.public_url + urltokens.artifact_path(job_id, token)
            return {"jobId": job_id, "status": "completed", "artifactId": artifact_id, "downloadUrl": url,
                    "sizeBytes": result.get("size_bytes"), "sha256": result.get("sha256")}
        error = _json(row["error"]) or {}
        code = "cancelled" if row["status"] == "cancelled" else str(error.get("code") or "failed")
        return {"jobId": job_id, "status": row["status"],
                "error": {"code": code, "message": str(error.get("message") or row["status"])}}
