-- docjobs schema, version 1: jobs, their events, artifacts, statistics.

CREATE TABLE document_jobs (
    id                uuid PRIMARY KEY,
    user_id           text        NOT NULL,
    session_id        text        NOT NULL DEFAULT '',
    message_id        text        NOT NULL DEFAULT '',
    job_type          text        NOT NULL CHECK (job_type ~ '^[a-z][a-z0-9_-]{0,63}$'),
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    title             text        NOT NULL DEFAULT '',
    payload           jsonb       NOT NULL,
    result            jsonb,
    error             jsonb,                      -- {code, message, retryable}
    priority          integer     NOT NULL DEFAULT 0,
    retry_count       integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries       integer     NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    run_at            timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    expires_at        timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    worker_id         text,
    progress          integer     NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message  text        NOT NULL DEFAULT '',
    idempotency_key   text,
    artifact_id       uuid,
    -- A processing job always has a lease. The token stays on a job that was cancelled or failed while
    -- processing, so its worker gets a precise answer; it is cleared when the job goes back to pending.
    CHECK (status <> 'processing' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Claim: due pending jobs by priority, then age. The predicate is an equality on status, never a
-- range over status text (which would compare alphabetically).
CREATE INDEX document_jobs_claimable ON document_jobs (priority DESC, created_at, id)
    WHERE status = 'pending';
-- Lease reaper and expiry.
CREATE INDEX document_jobs_leases ON document_jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX document_jobs_expiry ON document_jobs (expires_at)
    WHERE status IN ('pending', 'processing') AND expires_at IS NOT NULL;
-- Retention cleanup of finished jobs.
CREATE INDEX document_jobs_finished ON document_jobs (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
-- Listing by user / session, newest first.
CREATE INDEX document_jobs_by_user ON document_jobs (user_id, created_at DESC, id DESC);
CREATE INDEX document_jobs_by_session ON document_jobs (session_id, created_at DESC, id DESC);
-- Idempotent enqueue: one job per (user, key).
CREATE UNIQUE INDEX document_jobs_idempotency ON document_jobs (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Every transition of a job writes one row here, in the transaction that makes the transition and
-- after the job row is locked by it, so one job's events commit in id order. The id is the SSE id.
CREATE TABLE job_events (
    id          bigserial   PRIMARY KEY,
    job_id      uuid        NOT NULL REFERENCES document_jobs (id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    session_id  text        NOT NULL,
    job_type    text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('status', 'progress', 'completed', 'failed', 'cancelled')),
    status      text        NOT NULL,
    attempt     integer     NOT NULL,
    data        jsonb       NOT NULL DEFAULT '{}',   -- progress, message, result, error, retry_at
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);
CREATE INDEX job_events_by_user ON job_events (user_id, id);
CREATE INDEX job_events_by_session ON job_events (session_id, id);
CREATE INDEX job_events_recent ON job_events (created_at, kind);

-- Artifacts live in Postgres, in chunks, so a large file streams in and out with bounded memory. An
-- upload writes the artifact row first (state 'uploading'), then one short transaction per chunk, then
-- marks it 'stored'; no transaction stays open for the length of a stream.
CREATE TABLE artifacts (
    id            uuid        PRIMARY KEY,
    job_id        uuid        NOT NULL REFERENCES document_jobs (id) ON DELETE CASCADE,
    state         text        NOT NULL DEFAULT 'uploading' CHECK (state IN ('uploading', 'stored')),
    filename      text        NOT NULL,
    content_type  text        NOT NULL,
    size_bytes    bigint      NOT NULL DEFAULT 0,
    sha256        text        NOT NULL DEFAULT '',
    chunk_count   integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_by_job ON artifacts (job_id);
CREATE INDEX artifacts_uploading ON artifacts (created_at) WHERE state = 'uploading';

CREATE TABLE artifact_chunks (
    artifact_id  uuid    NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    data         bytea   NOT NULL,
    PRIMARY KEY (artifact_id, seq)
);
-- Chunks are already-compressed office files: skip TOAST compression, store out of line.
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Statistics: counts by type and status, plus the age of the oldest claimable job.
CREATE VIEW document_job_stats AS
SELECT job_type,
       status,
       count(*)                                                       AS job_count,
       count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS due_count,
       min(run_at) FILTER (WHERE status = 'pending' AND run_at <= now()) AS oldest_due_run_at
  FROM document_jobs
 GROUP BY job_type, status;

-- Retry delay: exponential in the attempt number, capped, with "equal jitter" (jitter in [0, 1) keeps
-- between half and all of the exponential delay), so retries of many jobs do not arrive in lockstep.
CREATE FUNCTION docjobs_retry_delay(retry_number integer, base_ms double precision,
                                    cap_ms double precision, jitter double precision)
RETURNS interval LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT make_interval(secs => least(cap_ms, base_ms * power(2, greatest(retry_number - 1, 0)))
                                 * (0.5 + 0.5 * jitter) / 1000.0)
$$;
