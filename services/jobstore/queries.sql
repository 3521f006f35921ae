-- Every SQL statement of the jobstore, by name. Parameters are $n only.
-- queries.py loads this file; each query starts with a line "-- name: <name>".
--
-- Time: a statement that decides or records by time (leases, backoff, due and expiry times, retention)
-- takes `now` as a parameter and reads it as coalesce($n::timestamptz, now()): NULL in production (the
-- database's clock, one for every replica), a set time in tests (jobstore/clock.py).
--
-- Rules kept by every statement that changes a job:
-- * the state machine is guarded here: a transition updates only rows in the state it leaves (and, for a
--   worker, holding its lease token); a miss is an answer (stale lease), never a silent success;
-- * the event row is inserted in the same statement, from the RETURNING rows of the job update, so it is
--   written after the job row is locked (one job's events commit in id order) and after the transaction
--   has its xid (the event dispatcher relies on both).

-- name: enqueue
-- $10 run_at or NULL (due now), $13 now, $14 webhook URL or NULL.
WITH inserted AS (
    INSERT INTO document_jobs (id, user_id, session_id, message_id, job_type, title, payload, priority,
                               max_retries, run_at, expires_at, idempotency_key)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, coalesce($10, $13::timestamptz, now()), $11, $12)
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    -- Every column but the payload (up to 4 MiB, and its caller has it): not sent back.
    RETURNING id, user_id, session_id, message_id, job_type, status, title, result, error, priority, retry_count,
              max_retries, created_at, run_at, started_at, completed_at, expires_at, updated_at, lease_token,
              lease_expires_at, worker_id, progress, progress_message, idempotency_key, artifact_id,
              release_count, retry_allowance
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'status', 'pending', 1,
           CASE WHEN run_at > coalesce($13::timestamptz, created_at) THEN jsonb_build_object('run_at', run_at)
                ELSE '{}'::jsonb END
      FROM inserted
    RETURNING job_id, id
), webhook AS (
    INSERT INTO job_webhooks (job_id, url) SELECT id, $14::text FROM inserted WHERE $14::text IS NOT NULL
)
SELECT inserted.*, event.id AS last_event_id
  FROM inserted JOIN event ON event.job_id = inserted.id;

-- name: enqueue_claimed
-- `enqueue` of a job handed to a worker that waits for work (claims.py): stored claimed by $15 (worker id)
-- with a lease of $16 ms and the lease token $17, as `claim` would leave it, and both its events, pending
-- then processing (the ORDER BY gives them their ids in that order). Only for a job due now: $10 is NULL.
WITH inserted AS (
    INSERT INTO document_jobs (id, user_id, session_id, message_id, job_type, title, payload, priority,
                               max_retries, run_at, expires_at, idempotency_key, status, lease_token,
                               lease_expires_at, worker_id, started_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, coalesce($10, $13::timestamptz, now()), $11, $12,
            'processing', $17, coalesce($13::timestamptz, now()) + $16 * interval '1 millisecond',
            $15, coalesce($13::timestamptz, now()))
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT i.id, i.user_id, i.session_id, i.job_type, 'status', e.status, 1, e.data
      FROM inserted i
     CROSS JOIN (VALUES (1, 'pending', '{}'::jsonb),
                        (2, 'processing', jsonb_build_object('worker_id', $15::text))) AS e(n, status, data)
     ORDER BY e.n
    RETURNING job_id, id
), webhook AS (
    INSERT INTO job_webhooks (job_id, url) SELECT id, $14::text FROM inserted WHERE $14::text IS NOT NULL
)
SELECT inserted.*, (SELECT max(event.id) FROM event) AS last_event_id
  FROM inserted;

-- name: enqueue_many
-- Several jobs in one statement, each stored as `enqueue` stores one. $1..$13 are arrays of equal length
-- (a NULL element where a job has no value), $14 now. A job whose (user, idempotency key) is taken, by a
-- stored job or by an earlier job of the same call, is not stored: the caller reads it by its key.
WITH input AS (
    SELECT *
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                  $8::int[], $9::int[], $10::timestamptz[], $11::timestamptz[], $12::text[], $13::text[])
           WITH ORDINALITY AS t(id, user_id, session_id, message_id, job_type, title, payload, priority,
                                max_retries, run_at, expires_at, idempotency_key, webhook_url, position)
), inserted AS (
    INSERT INTO document_jobs (id, user_id, session_id, message_id, job_type, title, payload, priority,
                               max_retries, run_at, expires_at, idempotency_key)
    SELECT id, user_id, session_id, message_id, job_type, title, payload::jsonb, priority, max_retries,
           coalesce(run_at, $14::timestamptz, now()), expires_at, idempotency_key
      FROM input
     ORDER BY position
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    -- Every column but the payload (up to 4 MiB, and its caller has it): not sent back.
    RETURNING id, user_id, session_id, message_id, job_type, status, title, result, error, priority, retry_count,
              max_retries, created_at, run_at, started_at, completed_at, expires_at, updated_at, lease_token,
              lease_expires_at, worker_id, progress, progress_message, idempotency_key, artifact_id,
              release_count, retry_allowance
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'status', 'pending', 1,
           CASE WHEN run_at > coalesce($14::timestamptz, created_at) THEN jsonb_build_object('run_at', run_at)
                ELSE '{}'::jsonb END
      FROM inserted
    RETURNING job_id, id
), webhook AS (
    INSERT INTO job_webhooks (job_id, url)
    SELECT inserted.id, input.webhook_url
      FROM inserted JOIN input ON input.id = inserted.id
     WHERE input.webhook_url IS NOT NULL
)
SELECT inserted.*, event.id AS last_event_id
  FROM inserted JOIN event ON event.job_id = inserted.id;

-- name: get_jobs_by_idempotency_keys
-- $1 user ids and $2 idempotency keys, pairwise.
SELECT j.*, (SELECT max(e.id) FROM job_events e WHERE e.job_id = j.id) AS last_event_id
  FROM document_jobs j
  JOIN unnest($1::text[], $2::text[]) AS k(user_id, idempotency_key)
    ON j.user_id = k.user_id AND j.idempotency_key = k.idempotency_key;

-- name: get_job_by_idempotency_key
SELECT j.*, (SELECT max(e.id) FROM job_events e WHERE e.job_id = j.id) AS last_event_id
  FROM document_jobs j
 WHERE j.user_id = $1 AND j.idempotency_key = $2;

-- name: get_job
-- $1 job id, $2 with its payload. A payload can be 4 MiB and most callers do not need it, so it is read
-- (and sent) only when asked for: the columns are listed for that.
SELECT j.id, j.user_id, j.session_id, j.message_id, j.job_type, j.status, j.title,
       CASE WHEN $2::bool THEN j.payload END AS payload,
       j.result, j.error, j.priority, j.retry_count, j.max_retries, j.created_at, j.run_at, j.started_at,
       j.completed_at, j.expires_at, j.updated_at, j.lease_token, j.lease_expires_at, j.worker_id,
       j.progress, j.progress_message, j.idempotency_key, j.artifact_id, j.release_count,
       (SELECT max(e.id) FROM job_events e WHERE e.job_id = j.id) AS last_event_id
  FROM document_jobs j
 WHERE j.id = $1;

-- name: list_jobs
-- $1 user_id or NULL, $2 session_id or NULL, $3 statuses (empty: all), $4 cursor created_at or NULL,
-- $5 cursor id, $6 limit, $7 with payloads (see get_job).
SELECT j.id, j.user_id, j.session_id, j.message_id, j.job_type, j.status, j.title,
       CASE WHEN $7::bool THEN j.payload END AS payload,
       j.result, j.error, j.priority, j.retry_count, j.max_retries, j.created_at, j.run_at, j.started_at,
       j.completed_at, j.expires_at, j.updated_at, j.lease_token, j.lease_expires_at, j.worker_id,
       j.progress, j.progress_message, j.idempotency_key, j.artifact_id, j.release_count,
       (SELECT max(e.id) FROM job_events e WHERE e.job_id = j.id) AS last_event_id
  FROM document_jobs j
 WHERE ($1::text IS NULL OR j.user_id = $1)
   AND ($2::text IS NULL OR j.session_id = $2)
   AND (cardinality($3::text[]) = 0 OR j.status = ANY($3::text[]))
   AND ($4::timestamptz IS NULL OR (j.created_at, j.id) < ($4, $5::uuid))
 ORDER BY j.created_at DESC, j.id DESC
 LIMIT $6;

-- name: cancel
-- $1 job id, $2 reason, $3 now.
WITH cancelled AS (
    UPDATE document_jobs
       SET status = 'cancelled', completed_at = coalesce($3::timestamptz, now()),
           updated_at = coalesce($3::timestamptz, now()), lease_expires_at = NULL,
           error = jsonb_build_object('code', 'cancelled', 'message', $2::text, 'retryable', false)
     WHERE id = $1 AND status IN ('pending', 'processing')
    RETURNING *
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'cancelled', 'cancelled', retry_count + 1,
           jsonb_build_object('error', error)
      FROM cancelled
    RETURNING job_id, id
)
SELECT cancelled.*, event.id AS last_event_id
  FROM cancelled JOIN event ON event.job_id = cancelled.id;

-- name: retry
-- A failed or cancelled job runs again (Retry): pending and due now, the same id. Its new attempt's
-- number follows the last one's (retry_count counts the ended attempt; every event's attempt is
-- retry_count + 1), with a fresh budget: the job's allowance (its max_retries at enqueue, kept in
-- retry_allowance from the first retry on) on top of the attempts so far; its releases count from 0, and
-- an expiry moves as far from now as it was from the job's creation. The event is a status back to
-- pending marked "retried". $1 job id, $2 message, $3 now.
WITH retried AS (
    UPDATE document_jobs j
       SET status = 'pending', retry_count = j.retry_count + 1,
           retry_allowance = coalesce(j.retry_allowance, j.max_retries),
           max_retries = j.retry_count + 1 + coalesce(j.retry_allowance, j.max_retries),
           run_at = coalesce($3::timestamptz, now()),
           expires_at = coalesce($3::timestamptz, now()) + (j.expires_at - j.created_at),
           started_at = NULL, completed_at = NULL, lease_token = NULL, lease_expires_at = NULL,
           worker_id = NULL, error = NULL, progress = 0, progress_message = '', release_count = 0,
           updated_at = coalesce($3::timestamptz, now())
     WHERE j.id = $1 AND j.status IN ('failed', 'cancelled')
    RETURNING j.*
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'status', 'pending', retry_count + 1,
           jsonb_build_object('message', $2::text, 'retried', true)
      FROM retried
    RETURNING job_id, id
)
SELECT retried.*, event.id AS last_event_id
  FROM retried JOIN event ON event.job_id = retried.id;

-- name: redrive
-- Failed jobs run again in bulk, each as `retry` runs one: the oldest failures first, at most $4, of
-- job type $1 (NULL: any) that failed at or after $2 and before $3 (NULL: unbounded); a job another
-- call holds is skipped. $5 message, $6 now.
WITH picked AS (
    SELECT id, completed_at AS failed_at
      FROM document_jobs
     WHERE status = 'failed'
       AND ($1::text IS NULL OR job_type = $1)
       AND ($2::timestamptz IS NULL OR completed_at >= $2)
       AND ($3::timestamptz IS NULL OR completed_at < $3)
     ORDER BY completed_at, id
     LIMIT $4
       FOR UPDATE SKIP LOCKED
), retried AS (
    UPDATE document_jobs j
       SET status = 'pending', retry_count = j.retry_count + 1,
           retry_allowance = coalesce(j.retry_allowance, j.max_retries),
           max_retries = j.retry_count + 1 + coalesce(j.retry_allowance, j.max_retries),
           run_at = coalesce($6::timestamptz, now()),
           expires_at = coalesce($6::timestamptz, now()) + (j.expires_at - j.created_at),
           started_at = NULL, completed_at = NULL, lease_token = NULL, lease_expires_at = NULL,
           worker_id = NULL, error = NULL, progress = 0, progress_message = '', release_count = 0,
           updated_at = coalesce($6::timestamptz, now())
      FROM picked
     WHERE j.id = picked.id AND j.status = 'failed'
    RETURNING j.id, j.user_id, j.session_id, j.job_type, j.retry_count, picked.failed_at
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'status', 'pending', retry_count + 1,
           jsonb_build_object('message', $5::text, 'retried', true)
      FROM retried
    RETURNING job_id, id
)
SELECT retried.id, retried.job_type
  FROM retried JOIN event ON event.job_id = retried.id
 ORDER BY retried.failed_at, retried.id;

-- name: job_attempts
-- A job's attempts, read from its events: when each last started (its claim) and on which worker, when
-- and how it ended, and why. An attempt ends with a terminal event of its own number, or with the
-- failure that scheduled the next one: that status event back to pending carries the error and the
-- NEXT attempt's number (retry_count is raised in the same statement). An attempt that neither started
-- nor ended (pending, not claimed yet) is left out. $1 job id.
WITH starts AS (
    SELECT DISTINCT ON (attempt) attempt, created_at AS started_at, data ->> 'worker_id' AS worker_id
      FROM job_events
     WHERE job_id = $1 AND kind = 'status' AND status = 'processing'
     ORDER BY attempt, id DESC
), ends AS (
    SELECT DISTINCT ON (ended) ended, created_at AS ended_at, status AS outcome, data -> 'error' AS error
      FROM (SELECT CASE WHEN kind = 'status' THEN attempt - 1 ELSE attempt END AS ended, id, created_at,
                   status, data
              FROM job_events
             WHERE job_id = $1
               AND (kind IN ('completed', 'failed', 'cancelled')
                    OR (kind = 'status' AND status = 'pending' AND data ? 'error'))) e
     ORDER BY ended, id DESC
)
SELECT coalesce(s.attempt, e.ended) AS attempt, s.started_at, s.worker_id, e.ended_at, e.outcome, e.error
  FROM starts s
  FULL JOIN ends e ON e.ended = s.attempt
 ORDER BY 1;

-- name: claim
-- Fair across users, round robin (docs/architecture.md, "Claim order"): the users with claimable jobs
-- take turns in the order of their ids, starting after the user the process's previous claim ended with
-- and wrapping around; each user's k-th job of a claim comes in round k, and a user's own jobs go by
-- priority (high first), then age. Every step is an index descent per user served or a short ordered
-- walk of one user's jobs: no backlog is read. $1 job types, $2 max jobs, $3 lease ms, $4 the worker id
-- of each place in claim order ($2 of them), $5 now, $6 the user the previous claim ended with ('' at
-- first). One statement claims for several workers when their claims wait together (store.py,
-- ClaimConnection): the jobs are taken in one fair order and the k-th goes to the worker $4[k] names (the
-- first worker's share first); `claim_place` is a job's place in that order (1, 2, ...).
WITH RECURSIVE after_cursor AS (
    -- Up to $2 users with a claimable job after $6, one index descent each (a loose index scan, by
    -- user, job type and run_at: a user's jobs that are not due, or not of these types, are skipped).
    (SELECT 1 AS n, j.user_id
       FROM document_jobs j
      WHERE j.status = 'pending' AND j.user_id > $6::text
        AND j.job_type = ANY($1::text[])
        AND j.run_at <= coalesce($5::timestamptz, now())
        AND (j.expires_at IS NULL OR j.expires_at > coalesce($5::timestamptz, now()))
      ORDER BY j.user_id
      LIMIT 1)
    UNION ALL
    SELECT a.n + 1, next_user.user_id
      FROM after_cursor a
      CROSS JOIN LATERAL (
          SELECT j.user_id
            FROM document_jobs j
           WHERE j.status = 'pending' AND j.user_id > a.user_id
             AND j.job_type = ANY($1::text[])
             AND j.run_at <= coalesce($5::timestamptz, now())
             AND (j.expires_at IS NULL OR j.expires_at > coalesce($5::timestamptz, now()))
           ORDER BY j.user_id
           LIMIT 1) next_user
     WHERE a.n < $2
), from_start AS (
    -- Then, wrapping around, the users up to $6 (read only when those after it are fewer than $2).
    (SELECT 1 AS n, j.user_id
       FROM document_jobs j
      WHERE j.status = 'pending' AND j.user_id <= $6::text
        AND j.job_type = ANY($1::text[])
        AND j.run_at <= coalesce($5::timestamptz, now())
        AND (j.expires_at IS NULL OR j.expires_at > coalesce($5::timestamptz, now()))
      ORDER BY j.user_id
      LIMIT 1)
    UNION ALL
    SELECT f.n + 1, next_user.user_id
      FROM from_start f
      CROSS JOIN LATERAL (
          SELECT j.user_id
            FROM document_jobs j
           WHERE j.status = 'pending' AND j.user_id > f.user_id AND j.user_id <= $6::text
             AND j.job_type = ANY($1::text[])
             AND j.run_at <= coalesce($5::timestamptz, now())
             AND (j.expires_at IS NULL OR j.expires_at > coalesce($5::timestamptz, now()))
           ORDER BY j.user_id
           LIMIT 1) next_user
     WHERE f.n < $2
), ring AS (
    SELECT user_id, row_number() OVER (ORDER BY part, n) AS place, count(*) OVER () AS users
      FROM (SELECT 0 AS part, n, user_id FROM after_cursor
            UNION ALL
            SELECT 1 AS part, n, user_id FROM from_start
            LIMIT $2) first_users
), turns AS (
    -- A user's k-th job comes in round k. Everyone in the ring has a job for round 1, so nobody needs
    -- more than $2 - users + 1 rounds: that many of each user's jobs are read, to count them.
    SELECT r.user_id, r.place,
           row_number() OVER (PARTITION BY r.user_id ORDER BY c.priority DESC, c.created_at, c.id) AS round
      FROM ring r
      CROSS JOIN LATERAL (
          SELECT j.id, j.priority, j.created_at
            FROM document_jobs j
           WHERE j.status = 'pending' AND j.user_id = r.user_id
             AND j.job_type = ANY($1::text[])
             AND j.run_at <= coalesce($5::timestamptz, now())
             AND (j.expires_at IS NULL OR j.expires_at > coalesce($5::timestamptz, now()))
           ORDER BY j.priority DESC, j.created_at, j.id
           LIMIT $2 - r.users + 1) c
), shares AS (
    SELECT user_id, place, count(*) AS share
      FROM (SELECT user_id, place FROM turns ORDER BY round, place LIMIT $2) first_turns
     GROUP BY user_id, place
), picked AS (
    -- Each user's share, locked on a second walk of its jobs: a job that another claimer holds is
    -- skipped for the user's next one, as SKIP LOCKED does.
    SELECT l.id, s.place,
           row_number() OVER (PARTITION BY s.user_id ORDER BY l.priority DESC, l.created_at, l.id) AS round
      FROM shares s
      CROSS JOIN LATERAL (
          SELECT j.id, j.priority, j.created_at
            FROM document_jobs j
           WHERE j.status = 'pending' AND j.user_id = s.user_id
             AND j.job_type = ANY($1::text[])
             AND j.run_at <= coalesce($5::timestamptz, now())
             AND (j.expires_at IS NULL OR j.expires_at > coalesce($5::timestamptz, now()))
           ORDER BY j.priority DESC, j.created_at, j.id
           LIMIT s.share
             FOR UPDATE SKIP LOCKED) l
     LIMIT $2
), taken AS (
    SELECT id, row_number() OVER (ORDER BY round, place) AS claim_place FROM picked
), claimed AS (
    UPDATE document_jobs j
       SET status = 'processing', lease_token = gen_random_uuid(),
           lease_expires_at = coalesce($5::timestamptz, now()) + $3 * interval '1 millisecond',
           worker_id = ($4::text[])[taken.claim_place],
           started_at = coalesce($5::timestamptz, now()), updated_at = coalesce($5::timestamptz, now()),
           progress = 0, progress_message = ''
      FROM taken
     WHERE j.id = taken.id
       -- Probes of the primary key whatever the plan guesses of picked's size: a generic plan takes
       -- LIMIT $2 for a tenth of the table and would hash-join a scan of all of it.
       AND j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.*, taken.claim_place
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'status', 'processing', retry_count + 1,
           jsonb_build_object('worker_id', worker_id)
      FROM claimed
    RETURNING job_id, id
)
SELECT claimed.*, event.id AS last_event_id
  FROM claimed JOIN event ON event.job_id = claimed.id
 ORDER BY claimed.claim_place;

-- name: release
-- Claimed jobs whose claimer went away before it received them (its call was cancelled): back to
-- pending as they were, with no retry counted. $1 job ids, $2 lease tokens.
-- Each job is looked up by its id alone and locked, in id order; its status and lease token are checked
-- on the locked row. A lookup by id alone can only descend the primary key, once per job, whatever the
-- plan's estimates: a plan made while the statistics counted few running jobs read every running job of
-- the table through the reaper's index (as a join, or once per job when the lookup also named the status).
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS i(id, lease_token) ORDER BY id
), current AS (
    SELECT j.id
      FROM input i
      CROSS JOIN LATERAL (
          SELECT d.id, d.lease_token, d.status
            FROM document_jobs d
           WHERE d.id = i.id
           LIMIT 1  -- keeps the checks below out of the lookup (a qual is not pushed into a LIMIT)
             FOR UPDATE OF d) j
     WHERE j.lease_token = i.lease_token AND j.status = 'processing'
), released AS (
    UPDATE document_jobs j
       SET status = 'pending', lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
           started_at = NULL, updated_at = now()
      FROM current c
     WHERE j.id = c.id
    RETURNING j.*
)
INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
SELECT id, user_id, session_id, job_type, 'status', 'pending', retry_count + 1,
       jsonb_build_object('message', 'released: the worker went away before it received the job',
                          'released', true)
  FROM released
RETURNING job_type;

-- name: release_worker
-- A stopping worker gives back every job still leased to it but those it keeps: claims whose answers it
-- never read. Back to pending as they were, with no retry counted. $1 worker id, $2 job ids it keeps.
WITH released AS (
    UPDATE document_jobs j
       SET status = 'pending', lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
           started_at = NULL, updated_at = now()
     WHERE j.worker_id = $1 AND j.status = 'processing' AND NOT (j.id = ANY($2::uuid[]))
    RETURNING j.*
)
INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
SELECT id, user_id, session_id, job_type, 'status', 'pending', retry_count + 1,
       jsonb_build_object('message', 'released: the worker stopped before it received the job',
                          'released', true)
  FROM released
RETURNING job_id, job_type;

-- name: release_job
-- One claimed job given back by its worker through no fault of its own (Release): pending and due at
-- once, no retry counted, while the job has been released fewer than $5 times. Past that, the release is
-- counted as a failed attempt after all, as `fail` with retryable would: retried with backoff while
-- retries remain (and the retry ends before expires_at), failed otherwise. release_count counts every
-- release. $1 job id, $2 lease token, $3 code, $4 reason, $5 releases allowed, $6 retry base ms,
-- $7 retry cap ms, $8 jitter in [0, 1), $9 now.
WITH current AS (
    SELECT id, retry_count, max_retries, expires_at,
           release_count < $5 AS free,
           coalesce($9::timestamptz, now()) + docjobs_retry_delay(retry_count + 1, $6, $7, $8) AS retry_at
      FROM document_jobs
     WHERE id = $1 AND lease_token = $2 AND status = 'processing'
       FOR UPDATE
), decided AS (
    SELECT *, NOT free AND retry_count < max_retries AND (expires_at IS NULL OR retry_at < expires_at)
              AS will_retry
      FROM current
), released AS (
    UPDATE document_jobs j
       SET status = CASE WHEN d.free OR d.will_retry THEN 'pending' ELSE 'failed' END,
           release_count = j.release_count + 1,
           retry_count = CASE WHEN d.will_retry THEN j.retry_count + 1 ELSE j.retry_count END,
           run_at = CASE WHEN d.free THEN coalesce($9::timestamptz, now())
                         WHEN d.will_retry THEN d.retry_at ELSE j.run_at END,
           completed_at = CASE WHEN d.free OR d.will_retry THEN NULL ELSE coalesce($9::timestamptz, now()) END,
           lease_token = CASE WHEN d.free OR d.will_retry THEN NULL ELSE j.lease_token END,
           lease_expires_at = NULL,
           worker_id = CASE WHEN d.free THEN NULL ELSE j.worker_id END,
           started_at = CASE WHEN d.free THEN NULL ELSE j.started_at END,
           error = CASE WHEN d.free THEN j.error
                        ELSE jsonb_build_object('code', $3::text, 'message', $4::text, 'retryable', d.will_retry)
                   END,
           updated_at = coalesce($9::timestamptz, now())
      FROM decided d
     WHERE j.id = d.id
    RETURNING j.*, d.free, d.will_retry, d.retry_at
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type,
           CASE WHEN status = 'pending' THEN 'status' ELSE 'failed' END, status,
           retry_count + 1,
           CASE WHEN free
                THEN jsonb_build_object('message', 'released: ' || $4::text, 'released', true)
                WHEN will_retry
                THEN jsonb_build_object('error', error, 'retry_at', retry_at,
                                        'message', 'released too often: retry scheduled', 'released', true)
                ELSE jsonb_build_object('error', error, 'released', true) END
      FROM released
    RETURNING job_id, id
)
SELECT released.*, event.id AS last_event_id
  FROM released JOIN event ON event.job_id = released.id;

-- name: next_due_in
-- Seconds until the next pending job of these types becomes due (NULL: none pending). $1 job types, $2 now.
-- A job past its expiry is not one: no claim takes it (the maintenance tick fails it), and counting it
-- made every waiting claim look again at once, hundreds of times a second, until that tick came.
SELECT extract(epoch FROM min(run_at) - coalesce($2::timestamptz, now()))::float8 AS seconds
  FROM document_jobs
 WHERE status = 'pending' AND job_type = ANY($1::text[])
   AND (expires_at IS NULL OR expires_at > coalesce($2::timestamptz, now()));

-- name: heartbeat
-- Renews the leases of a batch of jobs in one statement (batching.py) and records their progress, with
-- an event for each job whose progress or message changed. $1 job ids, $2 lease tokens, $3 lease ms,
-- $4 progress (NULL: unchanged), $5 messages (NULL: unchanged), $6 now. A job whose token is stale or that
-- is no longer processing is not returned, nor is one whose row another transaction has locked (SKIP
-- LOCKED: one job held by the maintenance tick must not hold up a whole batch; Store.heartbeat asks
-- again for that job alone, waiting its turn: heartbeat_waiting).
-- Each job is looked up by its id alone and locked, as in `release` (which says why).
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $5::text[])
                  AS i(id, lease_token, lease_ms, progress, message)
     ORDER BY id
), current AS (
    SELECT j.id, j.progress, j.progress_message, i.lease_ms, i.progress AS new_progress, i.message AS new_message
      FROM input i
      CROSS JOIN LATERAL (
          SELECT d.id, d.lease_token, d.status, d.progress, d.progress_message
            FROM document_jobs d
           WHERE d.id = i.id
           LIMIT 1  -- keeps the checks below out of the lookup (a qual is not pushed into a LIMIT)
             FOR UPDATE OF d SKIP LOCKED) j
     WHERE j.lease_token = i.lease_token AND j.status = 'processing'
), renewed AS (
    UPDATE document_jobs j
       SET lease_expires_at = coalesce($6::timestamptz, now()) + c.lease_ms * interval '1 millisecond',
           progress = coalesce(c.new_progress, j.progress),
           progress_message = coalesce(c.new_message, j.progress_message),
           updated_at = coalesce($6::timestamptz, now())
      FROM current c
     WHERE j.id = c.id
    RETURNING j.*, (j.progress, j.progress_message) IS DISTINCT FROM (c.progress, c.progress_message) AS progressed
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'progress', 'processing', retry_count + 1,
           jsonb_build_object('progress', progress, 'message', progress_message)
      FROM renewed
     WHERE progressed
     ORDER BY id
    RETURNING job_id, id
)
SELECT renewed.id, renewed.lease_expires_at, event.id AS event_id
  FROM renewed LEFT JOIN event ON event.job_id = renewed.id;

-- name: lease_state
-- Why a worker's call on a job missed: the job's status and whether the token is the current one.
SELECT status, lease_token = $2 AS token_matches
  FROM document_jobs
 WHERE id = $1;

-- name: complete
-- Completes a batch of jobs in one statement: $1 job ids, $2 lease tokens, $3 results, $4 artifact ids
-- (NULL for none), $5 now. A job whose token is stale or that is no longer processing is simply not returned.
-- Each job is looked up by its id alone and locked, as in `release` (which says why).
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[]) AS i(id, lease_token, result, artifact_id)
     ORDER BY id
), current AS (
    SELECT j.id, i.result, i.artifact_id
      FROM input i
      CROSS JOIN LATERAL (
          SELECT d.id, d.lease_token, d.status
            FROM document_jobs d
           WHERE d.id = i.id
           LIMIT 1  -- keeps the checks below out of the lookup (a qual is not pushed into a LIMIT)
             FOR UPDATE OF d) j
     WHERE j.lease_token = i.lease_token AND j.status = 'processing'
), completed AS (
    UPDATE document_jobs j
       SET status = 'completed', result = c.result::jsonb, artifact_id = c.artifact_id, error = NULL,
           progress = 100, completed_at = coalesce($5::timestamptz, now()),
           updated_at = coalesce($5::timestamptz, now()), lease_expires_at = NULL
      FROM current c
     WHERE j.id = c.id
    -- Every column but the payload (up to 4 MiB; the completion's answer never shows it): not sent back.
    RETURNING j.id, j.user_id, j.session_id, j.message_id, j.job_type, j.status, j.title, j.result, j.error,
              j.priority, j.retry_count, j.max_retries, j.created_at, j.run_at, j.started_at, j.completed_at,
              j.expires_at, j.updated_at, j.lease_token, j.lease_expires_at, j.worker_id, j.progress,
              j.progress_message, j.idempotency_key, j.artifact_id, j.release_count, j.retry_allowance
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'completed', 'completed', retry_count + 1,
           jsonb_build_object('result', result, 'progress', 100)
      FROM completed
    RETURNING job_id, id
), superseded_artifacts AS (
    -- Artifacts uploaded by earlier attempts (a worker that died after uploading) are not kept; the
    -- renditions the result names (a PDF, a thumbnail: renderer/renditions.py) are.
    DELETE FROM artifacts a
     USING completed
     WHERE a.job_id = completed.id AND a.id IS DISTINCT FROM completed.artifact_id
       AND NOT EXISTS (SELECT 1 FROM jsonb_path_query(completed.result, '$.renditions.*.artifact_id') AS r(id)
                        WHERE r.id #>> '{}' = a.id::text)
)
SELECT completed.*, event.id AS last_event_id
  FROM completed JOIN event ON event.job_id = completed.id;

-- name: artifact_belongs_to_job
SELECT EXISTS (SELECT 1 FROM artifacts WHERE id = $1 AND job_id = $2 AND state = 'stored') AS belongs;

-- name: fail
-- $1 job id, $2 lease token, $3 error code, $4 error message, $5 retryable,
-- $6 retry base ms, $7 retry cap ms, $8 jitter in [0, 1), $9 now.
WITH current AS (
    SELECT id, retry_count, max_retries, expires_at,
           $5::bool AND retry_count < max_retries AS may_retry,
           coalesce($9::timestamptz, now()) + docjobs_retry_delay(retry_count + 1, $6, $7, $8) AS retry_at
      FROM document_jobs
     WHERE id = $1 AND lease_token = $2 AND status = 'processing'
       FOR UPDATE
), decided AS (
    SELECT *, may_retry AND (expires_at IS NULL OR retry_at < expires_at) AS will_retry FROM current
), failed AS (
    UPDATE document_jobs j
       SET status = CASE WHEN d.will_retry THEN 'pending' ELSE 'failed' END,
           retry_count = CASE WHEN d.will_retry THEN j.retry_count + 1 ELSE j.retry_count END,
           run_at = CASE WHEN d.will_retry THEN d.retry_at ELSE j.run_at END,
           completed_at = CASE WHEN d.will_retry THEN NULL ELSE coalesce($9::timestamptz, now()) END,
           lease_token = CASE WHEN d.will_retry THEN NULL ELSE j.lease_token END,
           lease_expires_at = NULL,
           error = jsonb_build_object('code', $3::text, 'message', $4::text, 'retryable', d.will_retry),
           updated_at = coalesce($9::timestamptz, now())
      FROM decided d
     WHERE j.id = d.id
    RETURNING j.*, d.will_retry, d.retry_at
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type,
           CASE WHEN will_retry THEN 'status' ELSE 'failed' END, status,
           CASE WHEN will_retry THEN retry_count + 1 ELSE retry_count + 1 END,
           CASE WHEN will_retry
                THEN jsonb_build_object('error', error, 'retry_at', retry_at, 'message', 'retry scheduled')
                ELSE jsonb_build_object('error', error) END
      FROM failed
    RETURNING job_id, id
)
SELECT failed.*, event.id AS last_event_id
  FROM failed JOIN event ON event.job_id = failed.id;

-- name: reap_expired_leases
-- Jobs whose worker stopped renewing its lease: back to pending with backoff, or failed when retries
-- are spent. $1 retry base ms, $2 retry cap ms, $3 batch size, $4 now.
WITH stale AS (
    SELECT id
      FROM document_jobs
     WHERE status = 'processing' AND lease_expires_at < coalesce($4::timestamptz, now())
     ORDER BY lease_expires_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE document_jobs j
       SET status = CASE WHEN j.retry_count < j.max_retries THEN 'pending' ELSE 'failed' END,
           retry_count = CASE WHEN j.retry_count < j.max_retries THEN j.retry_count + 1 ELSE j.retry_count END,
           run_at = CASE WHEN j.retry_count < j.max_retries
                         THEN coalesce($4::timestamptz, now())
                              + docjobs_retry_delay(j.retry_count + 1, $1, $2, random())
                         ELSE j.run_at END,
           completed_at = CASE WHEN j.retry_count < j.max_retries THEN NULL
                               ELSE coalesce($4::timestamptz, now()) END,
           lease_token = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE j.lease_token END,
           lease_expires_at = NULL,
           error = jsonb_build_object(
               'code', 'lease_expired',
               'message', 'worker ' || coalesce(j.worker_id, '') || ' stopped renewing its lease',
               'retryable', j.retry_count < j.max_retries),
           updated_at = coalesce($4::timestamptz, now())
      FROM stale
     WHERE j.id = stale.id
    RETURNING j.*
)
INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
SELECT id, user_id, session_id, job_type,
       CASE WHEN status = 'pending' THEN 'status' ELSE 'failed' END, status, retry_count + 1,
       CASE WHEN status = 'pending'
            THEN jsonb_build_object('error', error, 'retry_at', run_at, 'message', 'retry scheduled')
            ELSE jsonb_build_object('error', error) END
  FROM reaped
RETURNING job_type, status;

-- name: expire_jobs
-- Jobs not finished by their expiry time fail with reason "expired". $1 batch size, $2 now.
WITH due AS (
    SELECT id
      FROM document_jobs
     WHERE status IN ('pending', 'processing') AND expires_at <= coalesce($2::timestamptz, now())
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE document_jobs j
       SET status = 'failed', completed_at = coalesce($2::timestamptz, now()),
           updated_at = coalesce($2::timestamptz, now()), lease_expires_at = NULL,
           error = jsonb_build_object('code', 'expired', 'message',
                                      'the job was not finished by its expiry time', 'retryable', false)
      FROM due
     WHERE j.id = due.id
    RETURNING j.*
)
INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
SELECT id, user_id, session_id, job_type, 'failed', 'failed', retry_count + 1,
       jsonb_build_object('error', error)
  FROM expired
RETURNING job_id;

-- name: delete_finished_jobs
-- Retention: finished jobs older than $1 seconds, with their events (no foreign key: migration 0009) and
-- their artifacts, webhooks and links (cascade). $2 batch, $3 now. Answers how many jobs it deleted.
-- A job locked meanwhile (a retry or redrive making it pending again) is passed over, and the finished
-- state is asked again of the row the DELETE locks: a job a retry made pending is not deleted (the
-- subquery's answer alone is not checked again when its row changed), nor left without the events the
-- retry wrote after this statement's snapshot.
WITH finished AS (
    DELETE FROM document_jobs d
     WHERE d.id IN (SELECT id
                      FROM document_jobs
                     WHERE status IN ('completed', 'failed', 'cancelled')
                       AND completed_at < coalesce($3::timestamptz, now()) - $1 * interval '1 second'
                     LIMIT $2
                       FOR UPDATE SKIP LOCKED)
       AND d.status IN ('completed', 'failed', 'cancelled')
       AND d.completed_at < coalesce($3::timestamptz, now()) - $1 * interval '1 second'
    RETURNING d.id
), events AS (
    DELETE FROM job_events WHERE job_id IN (SELECT id FROM finished)
)
SELECT count(*) AS deleted FROM finished;

-- name: delete_orphaned_events
-- Events older than $1 seconds whose job is gone: deleted by a jobstore older than migration 0009 (it
-- counted on the foreign key's cascade, during a rolling upgrade). $2 batch, $3 now.
DELETE FROM job_events
 WHERE id IN (SELECT e.id
                FROM job_events e
               WHERE e.created_at < coalesce($3::timestamptz, now()) - $1 * interval '1 second'
                 AND NOT EXISTS (SELECT 1 FROM document_jobs j WHERE j.id = e.job_id)
               LIMIT $2);

-- name: delete_unkept_artifacts
-- Artifacts of finished jobs that are not the job's result nor one of its renditions (uploaded by an
-- attempt that did not complete).
DELETE FROM artifacts a
 USING document_jobs j
 WHERE a.job_id = j.id
   AND j.status IN ('completed', 'failed', 'cancelled')
   AND a.id IS DISTINCT FROM j.artifact_id
   AND NOT EXISTS (SELECT 1 FROM jsonb_path_query(j.result, '$.renditions.*.artifact_id') AS r(id)
                    WHERE r.id #>> '{}' = a.id::text);

-- name: try_maintenance_lock
SELECT pg_try_advisory_xact_lock($1) AS locked;

-- name: stats_counts
SELECT job_type, status, job_count, due_count, oldest_due_run_at FROM document_job_stats;

-- name: stats_rates
-- A claim given back (data has "released") is neither an enqueue nor, unless counted, a retry; a finished
-- job run again (data has "retried") is a retry.
SELECT count(*) FILTER (WHERE kind = 'status' AND status = 'pending' AND NOT (data ? 'error')
                          AND NOT (data ? 'released') AND NOT (data ? 'retried')) AS enqueued,
       count(*) FILTER (WHERE kind = 'completed') AS completed,
       count(*) FILTER (WHERE kind = 'failed') AS failed,
       count(*) FILTER (WHERE kind = 'status' AND status = 'pending'
                          AND (data ? 'error' OR data ? 'retried')) AS retried,
       count(*) FILTER (WHERE data -> 'error' ->> 'code' = 'lease_expired') AS expired_leases
  FROM job_events
 WHERE created_at > now() - interval '1 minute';

-- name: stats_extra
SELECT extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_due_age,
       count(*) FILTER (WHERE run_at > now()) AS delayed
  FROM document_jobs
 WHERE status = 'pending';

-- name: events_sequence_position
-- The highest event id handed out so far (committed or not), then a fresh transaction id X taken after
-- reading it: every transaction that holds an event id up to that position has an xid below X. (A
-- snapshot's xmax would not do: it is one past the latest *completed* xid, and running transactions
-- above it are not in the snapshot at all.) Taking an xid writes no WAL and is not flushed at commit.
SELECT s.position, pg_current_xact_id()::text::bigint AS horizon
  FROM (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position
          FROM job_events_id_seq
        OFFSET 0) s;

-- name: events_after
-- Events after $1 (all jobs), leaving out ids already delivered ($3), with the snapshot's xmin: every
-- transaction with a lower xid has ended (committed and visible here, or aborted). At least one row.
-- $4: the dispatcher's cursor is stalled, and the xmin leaves out the transactions that provably hold no
-- event id (docjobs_events_xmin, migration 0011; a look at the lock table, so only then).
SELECT s.xmin, e.*
  FROM (SELECT CASE WHEN $4::bool THEN docjobs_events_xmin(pg_current_snapshot())
                    ELSE pg_snapshot_xmin(pg_current_snapshot())::text::bigint END AS xmin) s
  LEFT JOIN LATERAL (SELECT *
                       FROM job_events
                      WHERE id > $1 AND NOT (id = ANY($3::bigint[]))
                      ORDER BY id
                      LIMIT $2) e ON true
 ORDER BY e.id;

-- name: events_after_marked
-- events_after (its $4 too) and the dispatcher's mark in one statement: the events and the snapshot's xmin, then
-- (in this order: OFFSET 0 keeps the subqueries apart) the highest event id handed out so far and a
-- fresh transaction id, as events_sequence_position has them. The xid comes after this statement's
-- snapshot, so this read's xmin settles its own mark only when no xid was running at the snapshot and
-- none was taken before the mark's; a later read's settles it otherwise. Only the xmin of a snapshot whose
-- events were read and delivered may settle a mark.
SELECT m.xmin, m.position, m.horizon, e.*
  FROM (SELECT p.xmin, p.position, pg_current_xact_id()::text::bigint AS horizon
          FROM (SELECT CASE WHEN $4::bool THEN docjobs_events_xmin(pg_current_snapshot())
                            ELSE pg_snapshot_xmin(pg_current_snapshot())::text::bigint END AS xmin,
                       CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position
                  FROM job_events_id_seq
                OFFSET 0) p
        OFFSET 0) m
  LEFT JOIN LATERAL (SELECT *
                       FROM job_events
                      WHERE id > $1 AND NOT (id = ANY($3::bigint[]))
                      ORDER BY id
                      LIMIT $2) e ON true
 ORDER BY e.id;

-- name: snapshot_xmin
-- $1 as events_after's $4.
SELECT CASE WHEN $1::bool THEN docjobs_events_xmin(pg_current_snapshot())
            ELSE pg_snapshot_xmin(pg_current_snapshot())::text::bigint END AS xmin;

-- name: job_events_after
SELECT * FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3;

-- name: scope_events_after
-- $1 user id or NULL, $2 session id or NULL, $3 after id, $4 limit.
SELECT *
  FROM job_events
 WHERE ($1::text IS NULL OR user_id = $1)
   AND ($2::text IS NULL OR session_id = $2)
   AND id > $3
 ORDER BY id
 LIMIT $4;

-- name: begin_artifact
-- $1 artifact id, $2 job id, $3 lease token, $4 filename, $5 content type, $6 now.
INSERT INTO artifacts (id, job_id, filename, content_type, created_at)
SELECT $1, $2, $4, $5, coalesce($6::timestamptz, now())
 WHERE EXISTS (SELECT 1 FROM document_jobs WHERE id = $2 AND lease_token = $3 AND status = 'processing')
RETURNING id;

-- name: complete_with_artifact
-- Stores a whole artifact and completes its job with it, in one statement (one commit), while the caller
-- holds the lease; the result gets the artifact's id, size and sha256. $1 job id, $2 lease token,
-- $3 result, $4 artifact id, $5 filename, $6 content type, $7 size, $8 sha256, $9 chunks in order, $10 now.
WITH completed AS (
    UPDATE document_jobs j
       SET status = 'completed', artifact_id = $4, error = NULL, progress = 100,
           completed_at = coalesce($10::timestamptz, now()), updated_at = coalesce($10::timestamptz, now()),
           lease_expires_at = NULL,
           result = $3::jsonb || jsonb_build_object('artifact_id', $4::uuid::text, 'size_bytes', $7::bigint,
                                                    'sha256', $8::text)
     WHERE j.id = $1 AND j.lease_token = $2 AND j.status = 'processing'
    -- Every column but the payload (as `complete`).
    RETURNING j.id, j.user_id, j.session_id, j.message_id, j.job_type, j.status, j.title, j.result, j.error,
              j.priority, j.retry_count, j.max_retries, j.created_at, j.run_at, j.started_at, j.completed_at,
              j.expires_at, j.updated_at, j.lease_token, j.lease_expires_at, j.worker_id, j.progress,
              j.progress_message, j.idempotency_key, j.artifact_id, j.release_count, j.retry_allowance
), artifact AS (
    INSERT INTO artifacts (id, job_id, state, filename, content_type, size_bytes, sha256, chunk_count, created_at)
    SELECT $4, id, 'stored', $5, $6, $7, $8, cardinality($9::bytea[]), coalesce($10::timestamptz, now())
      FROM completed
    RETURNING id
), chunks AS (
    INSERT INTO artifact_chunks (artifact_id, seq, data)
    SELECT artifact.id, c.seq - 1, c.data
      FROM artifact, unnest($9::bytea[]) WITH ORDINALITY AS c(data, seq)
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'completed', 'completed', retry_count + 1,
           jsonb_build_object('result', result, 'progress', 100)
      FROM completed
    RETURNING job_id, id
), superseded_artifacts AS (
    -- Artifacts uploaded by earlier attempts are not kept (the new one is not visible here yet); the
    -- renditions the result names are.
    DELETE FROM artifacts a USING completed WHERE a.job_id = completed.id
       AND NOT EXISTS (SELECT 1 FROM jsonb_path_query(completed.result, '$.renditions.*.artifact_id') AS r(id)
                        WHERE r.id #>> '{}' = a.id::text)
)
SELECT completed.*, event.id AS last_event_id
  FROM completed JOIN event ON event.job_id = completed.id;

-- name: insert_artifact_chunk
INSERT INTO artifact_chunks (artifact_id, seq, data) VALUES ($1, $2, $3);

-- name: finish_artifact
-- Stored only while the uploader still holds the lease. $1 id, $2 job id, $3 lease token, $4 size,
-- $5 sha256, $6 chunk count.
UPDATE artifacts
   SET state = 'stored', size_bytes = $4, sha256 = $5, chunk_count = $6
 WHERE id = $1 AND state = 'uploading'
   AND EXISTS (SELECT 1 FROM document_jobs WHERE id = $2 AND lease_token = $3 AND status = 'processing')
RETURNING *;

-- name: delete_artifact
DELETE FROM artifacts WHERE id = $1;

-- name: delete_abandoned_uploads
-- Uploads whose stream broke and whose uploader could not clean up. $1 age in seconds, $2 now.
DELETE FROM artifacts
 WHERE state = 'uploading' AND created_at < coalesce($2::timestamptz, now()) - $1 * interval '1 second';

-- name: get_artifact
SELECT a.*, j.user_id
  FROM artifacts a JOIN document_jobs j ON j.id = a.job_id
 WHERE a.id = $1 AND a.state = 'stored';

-- name: get_artifact_chunk
SELECT data FROM artifact_chunks WHERE artifact_id = $1 AND seq = $2;

-- name: ping
-- The health check of the pool and of the LISTEN connection.
SELECT 1;

-- name: notify
-- The doorbell (doorbell.py): $1 channel, $2 payload (job types, comma-separated). pg_notify takes both as
-- parameters, where NOTIFY would need them spliced into the statement's text. Its LISTEN is asyncpg's
-- add_listener, which sends it.
SELECT pg_notify($1, $2);

-- name: migration_lock
-- Migrations (migrations.py) run under a session advisory lock: jobstores that start together on one
-- database take turns. $1 the lock key.
SELECT pg_advisory_lock($1);

-- name: migration_unlock
SELECT pg_advisory_unlock($1);

-- name: create_schema_migrations
-- The bookkeeping of applied migrations; created by whichever jobstore starts first on a database.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
-- In the migration's own transaction. $1 version, $2 name.
INSERT INTO schema_migrations (version, name) VALUES ($1, $2);

-- Webhook deliveries (migration 0005; jobstore/deliveries.py). A delivery row is written by a trigger with
-- the job's terminal event; these statements hand due ones to senders, leased, and record what happened.

-- name: claim_deliveries
-- Due deliveries, each leased to the caller: next_attempt_at moves $2 ms ahead (when a sender that
-- never reports lets it be claimed again) and a fresh lease_token fences the report. $1 max, $3 now.
WITH due AS (
    SELECT id
      FROM webhook_deliveries
     WHERE state = 'pending' AND next_attempt_at <= coalesce($3::timestamptz, now())
     ORDER BY next_attempt_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
   SET lease_token = gen_random_uuid(), attempts = d.attempts + 1,
       next_attempt_at = coalesce($3::timestamptz, now()) + $2 * interval '1 millisecond'
  FROM due
 WHERE d.id = due.id
RETURNING d.id, d.job_id, d.event_id, d.event_type, d.url, d.attempts, d.lease_token, d.created_at;

-- name: report_delivery
-- The outcome of a claimed attempt, while its lease is held. $1 id, $2 lease token, $3 'delivered',
-- 'retry' or 'failed' (given up), $4 HTTP status or NULL, $5 error or '', $6 ms to the next attempt (with
-- 'retry'), $7 now. The log keeps the newest 100 attempts.
UPDATE webhook_deliveries
   SET state = CASE WHEN $3::text = 'retry' THEN 'pending' ELSE $3::text END,
       lease_token = NULL,
       next_attempt_at = CASE WHEN $3::text = 'retry'
                              THEN coalesce($7::timestamptz, now()) + $6 * interval '1 millisecond'
                              ELSE next_attempt_at END,
       finished_at = CASE WHEN $3::text = 'retry' THEN NULL ELSE coalesce($7::timestamptz, now()) END,
       attempt_log = CASE WHEN jsonb_array_length(attempt_log) >= 100 THEN attempt_log - 0 ELSE attempt_log END
                     || jsonb_build_array(jsonb_build_object(
                            'attempt', attempts, 'at', coalesce($7::timestamptz, now()), 'status_code', $4::int,
                            'error', nullif($5::text, ''),
                            'next_attempt_at', CASE WHEN $3::text = 'retry'
                                                    THEN coalesce($7::timestamptz, now())
                                                         + $6 * interval '1 millisecond' END))
 WHERE id = $1 AND lease_token = $2 AND state = 'pending'
RETURNING state;

-- name: job_webhook
-- A job's webhook URL and its deliveries, oldest first (no row: the job has no webhook, or is not $2's
-- when $2 is not NULL).
SELECT w.url, d.id, d.event_id, d.event_type, d.state, d.attempts, d.next_attempt_at, d.created_at,
       d.finished_at, d.attempt_log
  FROM job_webhooks w
  JOIN document_jobs j ON j.id = w.job_id
  LEFT JOIN webhook_deliveries d ON d.job_id = w.job_id
 WHERE w.job_id = $1 AND ($2::text IS NULL OR j.user_id = $2)
 ORDER BY d.event_id;

-- ---------------------------------------------------------------------------------------------------
-- The pg-boss bridge (pgboss.py). The pgboss_link_* statements run on docjobs' own database. The
-- pgboss_* ones run on pg-boss's (DOCJOBS_PGBOSS_DATABASE_URL), each in a transaction that starts with
-- pgboss_use_schema, so they name pg-boss's tables as pg-boss's own SQL does under its schema, which
-- cannot be a parameter. They follow pg-boss 12's own statements (node_modules/pg-boss/dist/plans.js of
-- the tested version, schema version 46): its fetch, touch, complete and terminal fail, with its attempt
-- fence (a claim is the pair id, retry_count).

-- name: pgboss_use_schema
-- $1 the schema (a plain identifier, settings.py), for this transaction only.
SELECT set_config('search_path', $1, true);

-- name: pgboss_installed
-- Whether pg-boss has installed its schema $1 (its version table exists).
SELECT to_regclass(format('%I.version', $1::text)) IS NOT NULL AS installed;

-- name: pgboss_version
SELECT version FROM version;

-- name: pgboss_queue
SELECT policy FROM queue WHERE name = $1;

-- name: pgboss_candidates
-- pg-boss's fetch (fetchNextJob, a standard queue): due jobs not yet active, priority high first, then
-- oldest, locked and skipped as its workers do. Split from its update so that the docjobs job is
-- created while these rows are locked and before the claim commits. $1 queue, $2 how many.
SELECT j.id, j.data, j.priority, j.retry_limit,
       j.retry_count + CASE WHEN j.started_on IS NOT NULL THEN 1 ELSE 0 END AS attempt
  FROM job j
 WHERE j.name = $1
   AND j.state < 'active'
   AND NOT j.blocked
   AND j.start_after <= job_now()
 ORDER BY j.priority DESC, j.created_on
 LIMIT $2
   FOR UPDATE OF j SKIP LOCKED;

-- name: pgboss_activate
-- The update of pg-boss's fetch: every claim after the first counts an attempt. $1 queue, $2 ids.
UPDATE job
   SET state = 'active', started_on = job_now(), heartbeat_on = job_now(),
       retry_count = CASE WHEN started_on IS NOT NULL THEN retry_count + 1 ELSE retry_count END
 WHERE name = $1 AND id = ANY($2::uuid[]) AND state < 'active'
RETURNING id, retry_count;

-- name: pgboss_touch
-- pg-boss's touch (its heartbeat), of the claims the bridge holds: $1 queue, $2 'id:retry_count' pairs.
-- Returns the ids still held.
UPDATE job
   SET heartbeat_on = job_now()
 WHERE name = $1 AND state = 'active' AND (id::text || ':' || retry_count::text) = ANY($2::text[])
RETURNING id;

-- name: pgboss_states
-- $1 queue, $2 ids.
SELECT id, state::text AS state, retry_count FROM job WHERE name = $1 AND id = ANY($2::uuid[]);

-- name: pgboss_complete
-- pg-boss's complete, fenced: $1 queue, $2 id, $3 the claim's retry_count, $4 output.
UPDATE job
   SET completed_on = job_now(), state = 'completed', output = $4::jsonb
 WHERE name = $1 AND id = $2 AND state = 'active' AND retry_count = $3
RETURNING id;

-- name: pgboss_fail
-- pg-boss's terminal fail (its failJobsBody with forceTerminal, as its `deadletter` result): the job
-- is deleted and inserted again as failed, whatever retries it has left (docjobs spent them), and a
-- copy goes to the queue's dead letter queue if it has one. Fenced: $1 queue, $2 id, $3 the claim's
-- retry_count, $4 output.
WITH deleted_jobs AS (
    DELETE FROM job
     WHERE name = $1 AND id = $2 AND state = 'active' AND retry_count = $3
    RETURNING *
), retried_jobs AS (
    INSERT INTO job (id, name, priority, data, state, retry_limit, retry_count, retry_delay, retry_backoff,
                     retry_delay_max, start_after, started_on, singleton_key, singleton_on, group_id, group_tier,
                     expire_seconds, deletion_seconds, created_on, completed_on, keep_until, policy, output,
                     dead_letter, heartbeat_on, heartbeat_seconds, blocked, blocking, pending_dependencies,
                     source_name, source_id, source_created_on, source_retry_count, source_output, source_root_id,
                     trace_context)
    SELECT id, name, priority, data, 'failed'::job_state, retry_limit, retry_count, retry_delay, retry_backoff,
           retry_delay_max, start_after, started_on, singleton_key, singleton_on, group_id, group_tier,
           expire_seconds, deletion_seconds, created_on, job_now(), keep_until, policy, $4::jsonb,
           dead_letter, NULL, heartbeat_seconds, blocked, blocking, pending_dependencies,
           source_name, source_id, source_created_on, source_retry_count, source_output, source_root_id,
           trace_context
      FROM deleted_jobs
        ON CONFLICT DO NOTHING
    RETURNING *
), failed_jobs AS (
    INSERT INTO job (id, name, priority, data, state, retry_limit, retry_count, retry_delay, retry_backoff,
                     retry_delay_max, start_after, started_on, singleton_key, singleton_on, group_id, group_tier,
                     expire_seconds, deletion_seconds, created_on, completed_on, keep_until, policy, output,
                     dead_letter, heartbeat_on, heartbeat_seconds, blocked, blocking, pending_dependencies,
                     source_name, source_id, source_created_on, source_retry_count, source_output, source_root_id,
                     trace_context)
    SELECT id, name, priority, data, 'failed'::job_state, retry_limit, retry_count, retry_delay, retry_backoff,
           retry_delay_max, start_after, started_on, singleton_key, singleton_on, group_id, group_tier,
           expire_seconds, deletion_seconds, created_on, job_now(), keep_until, policy, $4::jsonb,
           dead_letter, NULL, heartbeat_seconds, blocked, blocking, pending_dependencies,
           source_name, source_id, source_created_on, source_retry_count, source_output, source_root_id,
           trace_context
      FROM deleted_jobs
     WHERE id NOT IN (SELECT id FROM retried_jobs)
    RETURNING *
), results AS (
    SELECT * FROM retried_jobs
    UNION ALL
    SELECT * FROM failed_jobs
), dlq_jobs AS (
    INSERT INTO job (name, priority, data, retry_limit, retry_backoff, retry_delay, start_after, created_on,
                     keep_until, deletion_seconds, expire_seconds, singleton_key, group_id, group_tier,
                     heartbeat_seconds, source_name, source_id, source_created_on, source_retry_count,
                     source_output, source_root_id, trace_context)
    SELECT r.dead_letter, r.priority, r.data, q.retry_limit, q.retry_backoff, q.retry_delay, job_now(), job_now(),
           job_now() + q.retention_seconds * interval '1s', q.deletion_seconds, q.expire_seconds,
           r.singleton_key, r.group_id, r.group_tier, q.heartbeat_seconds, r.name, r.id, r.created_on,
           r.retry_count, r.output, coalesce(r.source_root_id, r.id), r.trace_context
      FROM results r
      JOIN queue q ON q.name = r.dead_letter
     WHERE r.state = 'failed'
)
SELECT id FROM results;

-- name: pgboss_enqueue
-- A pg-boss job's docjobs job, as `enqueue` makes one (its first event in the same statement), in the
-- transaction that writes its link. $1 id, $2 user, $3 session, $4 message, $5 type, $6 title, $7 payload,
-- $8 priority, $9 max retries, $10 now.
WITH inserted AS (
    INSERT INTO document_jobs (id, user_id, session_id, message_id, job_type, title, payload, priority,
                               max_retries, run_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, coalesce($10::timestamptz, now()))
    RETURNING *
), event AS (
    INSERT INTO job_events (job_id, user_id, session_id, job_type, kind, status, attempt, data)
    SELECT id, user_id, session_id, job_type, 'status', 'pending', 1, '{}'::jsonb
      FROM inserted
    RETURNING job_id, id
)
SELECT inserted.id FROM inserted JOIN event ON event.job_id = inserted.id;

-- name: pgboss_link_get
-- The docjobs job a pg-boss job became, if any, locked. $1 queue, $2 pg-boss job id.
SELECT job_id, attempt, settled_at FROM pgboss_links WHERE queue = $1 AND pgboss_id = $2 FOR UPDATE;

-- name: pgboss_link_insert
-- $1 queue, $2 pg-boss job id, $3 docjobs job id, $4 the claim's retry_count.
INSERT INTO pgboss_links (queue, pgboss_id, job_id, attempt) VALUES ($1, $2, $3, $4);

-- name: pgboss_link_reclaimed
-- The pg-boss job was claimed again (a restart, or pg-boss gave it back after a timeout): the link
-- follows the new claim, and is open again until that claim is ended. $1 queue, $2 id, $3 retry_count.
UPDATE pgboss_links SET attempt = $3, settled_at = NULL WHERE queue = $1 AND pgboss_id = $2;

-- name: pgboss_links_open
-- The claims the bridge holds on the queue $1, with their docjobs jobs' status.
SELECT l.pgboss_id, l.attempt, l.job_id, j.status
  FROM pgboss_links l JOIN document_jobs j ON j.id = l.job_id
 WHERE l.queue = $1 AND l.settled_at IS NULL
 ORDER BY l.created_at;

-- name: pgboss_links_to_settle
-- Open links whose docjobs job has ended, locked (another replica's bridge skips them). $1 queue,
-- $2 how many.
SELECT l.pgboss_id, l.attempt, j.id, j.user_id, j.status, j.result, j.error, j.artifact_id
  FROM pgboss_links l JOIN document_jobs j ON j.id = l.job_id
 WHERE l.queue = $1 AND l.settled_at IS NULL AND j.status IN ('completed', 'failed', 'cancelled')
 ORDER BY l.created_at
 LIMIT $2
   FOR UPDATE OF l SKIP LOCKED;

-- name: pgboss_link_settled
-- $1 queue, $2 pg-boss job ids.
UPDATE pgboss_links SET settled_at = now() WHERE queue = $1 AND pgboss_id = ANY($2::uuid[]) AND settled_at IS NULL;
