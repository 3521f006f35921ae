"""The jobstore's settings, read from the environment once at start and validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from docjobs.channels import grpc_token
from docjobs.settings import SettingsError, database_url, env_choice, env_float, env_int, env_port, env_str

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    database_url: str
    # The shared secret every caller presents (jobstore/auth.py); no default: the jobstore never runs open.
    grpc_token: str = field(repr=False)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 0  # 0: no metrics endpoint
    pool_size: int = 10
    default_lease_ms: int = 30_000
    default_max_retries: int = 3
    retry_base_ms: float = 2_000.0
    retry_cap_ms: float = 300_000.0
    maintenance_interval_s: float = 1.0
    retention_s: float = 7 * 24 * 3600.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    # Live events a Watch may hold unsent before it falls behind (see jobstore/watch.py): one job's or one
    # scope's stream, and an all-jobs stream (a gateway's, which carries every event of the cluster).
    watch_buffer: int = 1024
    all_jobs_watch_buffer: int = 65536

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        url = database_url(env)
        if url is None:
            raise SettingsError("DATABASE_URL is required (`docjobs up` starts an embedded Postgres and sets it)")
        return cls(
            database_url=url,
            grpc_token=grpc_token(env),
            grpc_host=env_str(env, "DOCJOBS_GRPC_HOST", "127.0.0.1"),
            grpc_port=env_port(env, "DOCJOBS_GRPC_PORT", 50051),
            metrics_port=env_int(env, "DOCJOBS_METRICS_PORT", 0, minimum=0, maximum=65535),
            pool_size=env_int(env, "DOCJOBS_DB_POOL_SIZE", 10, minimum=2, maximum=200),
            default_lease_ms=env_int(env, "DOCJOBS_LEASE_MS", 30_000, minimum=1_000, maximum=3_600_000),
            default_max_retries=env_int(env, "DOCJOBS_MAX_RETRIES", 3, minimum=0, maximum=100),
            retry_base_ms=env_float(env, "DOCJOBS_RETRY_BASE_MS", 2_000.0, minimum=1.0, maximum=3_600_000.0),
            retry_cap_ms=env_float(env, "DOCJOBS_RETRY_CAP_MS", 300_000.0, minimum=1.0, maximum=86_400_000.0),
            maintenance_interval_s=env_float(env, "DOCJOBS_MAINTENANCE_INTERVAL_S", 1.0,
                                             minimum=0.05, maximum=3600.0),
            retention_s=env_float(env, "DOCJOBS_RETENTION_S", 7 * 24 * 3600.0, minimum=1.0, maximum=3.2e8),
            shutdown_grace_s=env_float(env, "DOCJOBS_SHUTDOWN_GRACE_S", 10.0, minimum=0.0, maximum=600.0),
            log_level=env_choice(env, "DOCJOBS_LOG_LEVEL", "info", LOG_LEVELS).upper(),
            watch_buffer=env_int(env, "DOCJOBS_WATCH_BUFFER", 1024, minimum=1, maximum=1_000_000),
            all_jobs_watch_buffer=env_int(env, "DOCJOBS_ALL_JOBS_WATCH_BUFFER", 65536, minimum=1, maximum=10_000_000),
        )
