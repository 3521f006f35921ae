-- The retry delay's exponent is bounded: a job retried a thousand times (a user may cancel and retry their
-- own job as often as they like) made power(2, n) overflow, and the error failed every statement that asks
-- for a delay: the lease reaper's whole tick (so no lease ran out and no job expired, for every user), and
-- each Fail and release of that job. 2^62 of any base is past any cap; the cap still decides.
CREATE OR REPLACE FUNCTION docjobs_retry_delay(retry_number integer, base_ms double precision,
                                               cap_ms double precision, jitter double precision)
RETURNS interval LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT make_interval(secs => least(cap_ms, base_ms * power(2, least(greatest(retry_number - 1, 0), 62)))
                                 * (0.5 + 0.5 * jitter) / 1000.0)
$$;
