"""The jobstore service: the only owner of Postgres. It keeps the queue, the event log and the
artifacts, and serves them over gRPC (docjobs.v1.JobStore)."""

import docjobs.forksafe  # noqa: F401 - before anything imports grpc: see there
