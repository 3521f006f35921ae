-- A failed or cancelled job can be run again (Retry, Redrive: docs/gateway.md, "Dead letters and
-- redrive"). Its attempts go on numbering from the last one (every event's attempt is retry_count + 1,
-- and the earlier attempts stay readable from their events), so a retry counts the ended attempt in
-- retry_count and raises max_retries by the job's own allowance: the max_retries it was enqueued with,
-- kept here from its first retry on (NULL: never retried, the allowance is max_retries). A nullable
-- column without a default: no table rewrite.
ALTER TABLE document_jobs ADD COLUMN retry_allowance integer CHECK (retry_allowance >= 0);
-- Redrive walks failed jobs by when they failed (queries.sql, `redrive`): its own index, so that a redrive
-- does not read every finished job's row to find the failed ones among them.
CREATE INDEX document_jobs_failed ON document_jobs (completed_at, id) WHERE status = 'failed';
