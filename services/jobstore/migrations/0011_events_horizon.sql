-- The event dispatcher's horizon when a transaction that will never write an event holds the snapshot's
-- xmin back (events.py, "a stalled cursor"). A snapshot's xmin is the oldest transaction running in the
-- whole cluster: a write transaction left open in another database, or in this one on tables other than
-- the event log (an operator's psql session, a long upload), held every user's and session's Watch (the
-- gateway's session stream) without a single event for as long as it stayed open.
--
-- Of the transactions the snapshot saw running (its xip), one is left out when it provably holds no event
-- id: in one look at the lock table it holds its transaction-id lock and no lock on the event log
-- (inserting an event takes one, kept to the transaction's end), it is not a prepared transaction (whose
-- locks move to a placeholder one partition at a time), and, asked after that look, it is still in
-- progress. The last condition matters: a transaction ends before it releases its locks (its fast-path
-- lock on the event log first, its transaction-id lock later), so one seen between the two may have
-- committed an event after the snapshot; still running after the look, it was not releasing anything
-- during it. Every other running transaction is kept. The result is the lowest xid kept, or the
-- snapshot's xmax when none is: as the snapshot's xmin, every transaction below it that may hold an event
-- id had ended when the snapshot was taken.
CREATE FUNCTION docjobs_events_xmin(snap pg_snapshot) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lockless xid8[];
BEGIN
    WITH locks AS MATERIALIZED (  -- the one look (each read of pg_locks is another)
        SELECT locktype, transactionid, database, relation, virtualtransaction, pid
          FROM pg_locks
         WHERE locktype IN ('transactionid', 'relation')
    ), writers AS MATERIALIZED (
        SELECT virtualtransaction
          FROM locks
         WHERE locktype = 'relation' AND relation = 'job_events'::regclass
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    )
    SELECT array_agg(x) INTO lockless
      FROM pg_snapshot_xip(snap) AS x
     WHERE EXISTS (SELECT 1
                     FROM locks t
                    WHERE t.locktype = 'transactionid' AND t.transactionid = xid(x) AND t.pid IS NOT NULL
                      AND t.virtualtransaction NOT IN (SELECT virtualtransaction FROM writers));
    -- A statement after the look: still running now, so running (and releasing nothing) all through it.
    RETURN coalesce((SELECT min(x::text::bigint)
                       FROM pg_snapshot_xip(snap) AS x
                      WHERE NOT (x = ANY (coalesce(lockless, '{}')) AND pg_xact_status(x) = 'in progress')),
                    pg_snapshot_xmax(snap)::text::bigint);
END
$$;
