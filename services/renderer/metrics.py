"""The renderer's Prometheus metrics (served when DOCJOBS_METRICS_PORT is set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
JOBS = Counter("docjobs_renderer_jobs", "Jobs this renderer finished, by type, mode and outcome "
               "(completed, failed, stopped, released: given back with no attempt counted)",
               ["job_type", "outcome"], registry=REGISTRY)
RENDER_SECONDS = Histogram("docjobs_renderer_render_seconds", "Time to render one document, by type and mode",
                           ["job_type", "mode"], registry=REGISTRY,
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
IN_FLIGHT = Gauge("docjobs_renderer_jobs_in_flight", "Jobs held by this renderer", registry=REGISTRY)
CLAIM_ERRORS = Counter("docjobs_renderer_claim_errors", "Claims that failed because the jobstore could not be "
                       "reached or answered with an error (the renderer retries with backoff)", registry=REGISTRY)
