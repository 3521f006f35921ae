-- Webhooks (docs/gateway.md, "Webhooks"): a job's URL, set when it is enqueued, and one delivery per end
-- of the job (completed or failed). A delivery row is written by a trigger on the job's terminal event,
-- so it commits in the transaction that ends the job, whichever statement ends it (complete, fail, a
-- reaped lease, expiry, a release counted as the last attempt): a job cannot end without its delivery.
-- Keyed by the terminal event, not by the job: a job run again and ended again has a delivery per end.
CREATE TABLE job_webhooks (
    job_id  uuid PRIMARY KEY REFERENCES document_jobs (id) ON DELETE CASCADE,
    url     text NOT NULL
);

-- A delivery is pending until it is delivered (a 2xx answer) or given up (failed, after
-- DOCJOBS_WEBHOOK_MAX_AGE_S). A sender claims a due one by moving next_attempt_at a lease ahead and setting
-- a fresh lease_token: a sender killed mid-send leaves it to be claimed again once that time passes, and
-- its late report is refused by the token. attempt_log: one object per reported attempt (time, status code
-- or error, next try), the newest last, at most 100.
CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id           uuid        NOT NULL REFERENCES document_jobs (id) ON DELETE CASCADE,
    event_id         bigint      NOT NULL,
    event_type       text        NOT NULL CHECK (event_type IN ('job.completed', 'job.failed')),
    url              text        NOT NULL,
    state            text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    lease_token      uuid,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    attempt_log      jsonb       NOT NULL DEFAULT '[]',
    UNIQUE (job_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE FUNCTION docjobs_webhook_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (job_id, event_id, event_type, url, next_attempt_at, created_at)
    SELECT NEW.job_id, NEW.id, 'job.' || NEW.kind, w.url, NEW.created_at, NEW.created_at
      FROM job_webhooks w
     WHERE w.job_id = NEW.job_id;
    RETURN NULL;
END
$$;

-- Only terminal events run the function (the WHEN is checked without calling it): a job's other events
-- cost nothing more.
CREATE TRIGGER job_events_webhook_delivery
    AFTER INSERT ON job_events
    FOR EACH ROW WHEN (NEW.kind IN ('completed', 'failed'))
    EXECUTE FUNCTION docjobs_webhook_delivery();
