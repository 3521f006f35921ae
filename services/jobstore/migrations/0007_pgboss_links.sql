-- The pg-boss bridge (jobstore/pgboss.py): which docjobs job each pg-boss job became. The link is
-- written in the transaction that creates the docjobs job, before the pg-boss claim commits, so a
-- bridge that stops in between finds it when it takes the pg-boss job again: one docjobs job per
-- pg-boss job, whatever restarts. `attempt` is the pg-boss retry_count of the claim the bridge holds
-- (pg-boss's attempt fence); `settled_at` is set once the pg-boss job has been ended (or was ended
-- on its side).
CREATE TABLE pgboss_links (
    queue text NOT NULL,
    pgboss_id uuid NOT NULL,
    job_id uuid NOT NULL UNIQUE REFERENCES document_jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz,
    PRIMARY KEY (queue, pgboss_id)
);

CREATE INDEX pgboss_links_open ON pgboss_links (queue, created_at) WHERE settled_at IS NULL;
