"""The jobstore's settings, read from the environment once at start and validated."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from docjobs.channels import grpc_token
from docjobs.settings import SettingsError, database_url, env_choice, env_float, env_int, env_port, env_str
from docjobs.urltokens import NO_AUTH_SECRET

LOG_LEVELS = ("debug", "info", "warning", "error")
# What pg-boss takes as a queue name; a schema as a plain lower-case identifier (pg-boss folds bare names).
PGBOSS_QUEUE = re.compile(r"[\w.\-/]{1,200}", re.ASCII)
PGBOSS_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,49}", re.ASCII)


@dataclass(frozen=True)
class Settings:
    database_url: str
    # The shared secret every caller presents (jobstore/auth.py); no default: the jobstore never runs open.
    grpc_token: str = field(repr=False)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 0  # 0: no metrics endpoint
    # Processes serving the one port (SO_REUSEPORT; server.py): each holds its own pool and LISTEN connection.
    processes: int = 1
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
    # The pg-boss bridge (jobstore/pgboss.py): off while pgboss_queue is empty.
    pgboss_queue: str = ""
    pgboss_schema: str = "pgboss"
    pgboss_database_url: str = field(default="", repr=False)  # "": docjobs' own database
    pgboss_interval_s: float = 1.0
    pgboss_batch: int = 20
    # The bridge's downloadUrl: the gateway's public base URL ("": a relative link), and what the gateway
    # signs its URL tokens with (DOCJOBS_JWT_SECRET, or the no-auth demo's fixed secret) and for how long.
    public_url: str = ""
    url_token_secret: str = field(default="", repr=False)
    url_token_ttl_s: int = 3600

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
            processes=env_int(env, "DOCJOBS_JOBSTORE_PROCESSES", 1, minimum=1, maximum=64),
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
            **_pgboss(env),
        )


def _pgboss(env: Mapping[str, str]) -> dict[str, Any]:
    """The bridge's settings. Its database and the gateway's secret and token lifetime are read only when
    it is on: a jobstore without the bridge holds no secret of the gateway's."""
    queue = env_str(env, "DOCJOBS_PGBOSS_QUEUE", "").strip()
    if queue and not PGBOSS_QUEUE.fullmatch(queue):
        raise SettingsError("DOCJOBS_PGBOSS_QUEUE must be a pg-boss queue name: letters, digits, _ . - / "
                            f"(at most 200), got {queue!r}")
    schema = env_str(env, "DOCJOBS_PGBOSS_SCHEMA", "pgboss").strip()
    if not PGBOSS_SCHEMA.fullmatch(schema):
        raise SettingsError("DOCJOBS_PGBOSS_SCHEMA must be a lower-case identifier (a-z, 0-9, _; at most 50), "
                            f"got {schema!r}")
    public_url = env_str(env, "DOCJOBS_PUBLIC_URL", "").strip().rstrip("/")
    if public_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", public_url):
        raise SettingsError(f"DOCJOBS_PUBLIC_URL must be an http(s) URL such as https://docs.example.com, "
                            f"got {public_url!r}")
    values: dict[str, Any] = {
        "pgboss_queue": queue,
        "pgboss_schema": schema,
        # At most 5 s: pg-boss's shortest heartbeat is 10 s, and the bridge beats once a round.
        "pgboss_interval_s": env_float(env, "DOCJOBS_PGBOSS_INTERVAL_S", 1.0, minimum=0.05, maximum=5.0),
        "pgboss_batch": env_int(env, "DOCJOBS_PGBOSS_BATCH", 20, minimum=1, maximum=1000),
        "public_url": public_url,
    }
    if not queue:
        return values
    url = env_str(env, "DOCJOBS_PGBOSS_DATABASE_URL", "").strip()
    if url and not url.startswith(("postgres://", "postgresql://")):
        raise SettingsError("DOCJOBS_PGBOSS_DATABASE_URL must start with postgresql:// or postgres://")
    # As the gateway reads them (gateway/settings.py): its download links must verify there.
    auth = env_choice(env, "DOCJOBS_AUTH", "jwt", ("jwt", "none"))
    secret = env_str(env, "DOCJOBS_JWT_SECRET", "")
    if auth == "jwt" and len(secret.encode()) < 32:
        raise SettingsError("DOCJOBS_JWT_SECRET must be set, the gateway's, when DOCJOBS_PGBOSS_QUEUE is: the "
                            "bridge signs its download links with it")
    return {**values, "pgboss_database_url": url, "url_token_secret": secret or NO_AUTH_SECRET,
            "url_token_ttl_s": env_int(env, "DOCJOBS_URL_TOKEN_TTL_S", 3600, minimum=60, maximum=7 * 86400)}
