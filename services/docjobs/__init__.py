"""docjobs: shared code of the services (settings, embedded Postgres, the `docjobs` command) and the
generated gRPC contract in ``docjobs.v1``."""
