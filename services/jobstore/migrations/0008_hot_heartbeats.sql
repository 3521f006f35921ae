-- Heartbeats renew leases all the time. With lease_expires_at in an index, every renewal was an update
-- that could not be HOT: a new entry in each of the table's indexes for every heartbeat (and their bloat).
-- Measured by bench/sse.py: 10,000 streams took 250 progress events/s with the index, 850 without it.
-- Now no index holds a column a heartbeat changes. The lease reaper finds expired leases among the
-- processing jobs through an index on a column that never changes while a job is processing, and reads
-- their lease times from the rows: processing jobs are what the renderers hold, few next to the table.
-- Not an index on id: the planner then read the whole of it to join a batch of heartbeats by id (10,000
-- entries a batch, back to 220 events/s), where the primary key finds each row.
-- A little free room on each page lets the renewed row stay on its page (the HOT update's condition).
DROP INDEX document_jobs_leases;
CREATE INDEX document_jobs_processing ON document_jobs (created_at) WHERE status = 'processing';
ALTER TABLE document_jobs SET (fillfactor = 90);
