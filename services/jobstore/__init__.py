"""The jobstore service: the only owner of Postgres. It keeps the queue, the event log and the
artifacts, and serves them over gRPC (docjobs.v1.JobStore)."""
