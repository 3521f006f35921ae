-- The claim's step from one user to the next with a due job of the claimed types: with this index the
-- step is a skip scan (one descent per user and job type), whatever a user holds that is not due yet
-- (runAt ahead, a retry's backoff) or of other types. Through the other index, stepping past a user read
-- every such job of theirs: a user's 100,000 delayed jobs made every claim of every worker take ~150 ms.
CREATE INDEX document_jobs_due_by_user ON document_jobs (user_id, job_type, run_at)
    WHERE status = 'pending';
