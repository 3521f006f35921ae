-- Claims are fair across users (docs/architecture.md, "Claim order"): a claim steps from one user with
-- claimable jobs to the next (a loose index scan: one descent per user, never a read of a user's
-- backlog) and walks each chosen user's own jobs in priority-then-age order.
CREATE INDEX document_jobs_claimable_by_user ON document_jobs (user_id, priority DESC, created_at, id)
    WHERE status = 'pending';
-- The global priority-then-age order is no longer the claim order; nothing else reads it.
DROP INDEX document_jobs_claimable;
