-- The event dispatcher's horizon when a transaction that will never write an event holds the snapshot's
-- xmin back (events.py, "a stalled cursor"). A snapshot's xmin is the oldest transaction running in the
-- whole cluster: a write transaction left open in another database, or in this one on tables other than
-- the event log (an operator's psql session, a long upload), held every user's and session's Watch (the
-- gateway's session stream) without a single event for as long as it stayed open.
--
-- Of the transactions the snapshot saw running (its xip), one is left out when it provably holds no event
-- id: it still runs now (its transaction-id lock is held) and holds no lock on the event log (inserting an
-- event takes one, kept to the transaction's end). One that ended between the snapshot and this look is
-- kept (its events, if any, may be missing from what the snapshot read). The result is the lowest xid
-- kept, or the snapshot's xmax when none is: as the snapshot's xmin, every transaction below it that may
-- hold an event id had ended when the snapshot was taken.
CREATE FUNCTION docjobs_events_xmin(snap pg_snapshot) RETURNS bigint LANGUAGE sql VOLATILE AS $$
    WITH locks AS MATERIALIZED (  -- one look at the lock table (each read of pg_locks is another)
        SELECT locktype, transactionid, database, relation, virtualtransaction FROM pg_locks
    )
    SELECT coalesce(min(x::text::bigint), pg_snapshot_xmax(snap)::text::bigint)
      FROM pg_snapshot_xip(snap) AS x
     WHERE NOT EXISTS (
             SELECT 1
               FROM locks t
              WHERE t.locktype = 'transactionid' AND t.transactionid = xid(x)
                AND NOT EXISTS (SELECT 1
                                  FROM locks r
                                 WHERE r.locktype = 'relation' AND r.virtualtransaction = t.virtualtransaction
                                   AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                   AND r.relation = 'job_events'::regclass))
$$;
