-- Claims are fair across users (docs/architecture.md, "Claim order"). A claim steps from one user with
-- pending jobs to the next (a loose index scan: one probe per user, never a read of a user's backlog),
-- walks the chosen users' own jobs in priority-then-age order, and counts each user's jobs in progress.
CREATE INDEX document_jobs_claimable_by_user ON document_jobs (user_id, priority DESC, created_at, id)
    WHERE status = 'pending';
CREATE INDEX document_jobs_processing_by_user ON document_jobs (user_id) WHERE status = 'processing';
-- The global priority-then-age order is no longer the claim order; nothing else reads it.
DROP INDEX document_jobs_claimable;
