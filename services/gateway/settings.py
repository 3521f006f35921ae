"""The gateway's settings, read from the environment once at start and validated."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field

from docjobs import webhooks
from docjobs.channels import grpc_token
from docjobs.settings import SettingsError, env_choice, env_float, env_int, env_port, env_str

from .cors import parse_origins

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    jobstore_address: str = "127.0.0.1:50051"
    grpc_token: str = field(default="", repr=False)  # presented on every jobstore call; from_env requires it
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    auth: str = "jwt"  # jwt | none
    jwt_secret: str = ""
    service_jwt_secret: str = ""  # signs service tokens when set; else jwt_secret does
    url_token_ttl_s: int = 3600
    jwt_max_ttl_s: int = 86400
    sse_heartbeat_s: float = 15.0
    max_body_bytes: int = 5 * 1024 * 1024
    body_timeout_s: float = 10.0
    sse_streams_per_user: int = 16
    downloads_per_user: int = 8
    jobstore_call_timeout_s: float = 30.0
    jobstore_keepalive_s: float = 20.0
    jobstore_max_inflight: int = 64
    log_level: str = "INFO"
    max_expires_in_s: int = 7 * 86400
    max_run_at_ahead_s: int = 30 * 86400
    max_retries_cap: int = 10
    cors_origins: tuple[str, ...] = ()  # exact origins; empty: same origin only
    # Webhooks (docs/gateway.md): off unless the secret is set; the allow list's (host, port or None).
    webhook_secret: str = field(default="", repr=False)
    webhook_allow: tuple[tuple[str, int | None], ...] = ()
    webhook_max_age_s: int = 86400
    webhook_retry_base_ms: float = 5000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        auth = env_choice(env, "DOCJOBS_AUTH", "jwt", ("jwt", "none"))
        secret = env_str(env, "DOCJOBS_JWT_SECRET", "")
        if auth == "jwt" and len(secret.encode()) < 32:
            raise SettingsError("DOCJOBS_JWT_SECRET must be set, 32 bytes or more (HS256), when DOCJOBS_AUTH=jwt")
        service_secret = env_str(env, "DOCJOBS_SERVICE_JWT_SECRET", "")
        if service_secret and len(service_secret.encode()) < 32:
            raise SettingsError("DOCJOBS_SERVICE_JWT_SECRET must be 32 bytes or more (HS256) when set")
        if service_secret and service_secret == secret:
            raise SettingsError("DOCJOBS_SERVICE_JWT_SECRET must differ from DOCJOBS_JWT_SECRET (leave it unset "
                                "to sign service tokens with DOCJOBS_JWT_SECRET)")
        url_token_ttl_s = env_int(env, "DOCJOBS_URL_TOKEN_TTL_S", 3600, minimum=60, maximum=7 * 86400)
        jwt_max_ttl_s = env_int(env, "DOCJOBS_JWT_MAX_TTL_S", 86400, minimum=60, maximum=366 * 86400)
        if url_token_ttl_s > jwt_max_ttl_s:
            raise SettingsError(f"DOCJOBS_URL_TOKEN_TTL_S ({url_token_ttl_s}) must not exceed DOCJOBS_JWT_MAX_TTL_S "
                                f"({jwt_max_ttl_s}): the gateway would refuse its own links")
        port = env_port(env, "DOCJOBS_GRPC_PORT", 50051)
        host = env_str(env, "DOCJOBS_HTTP_HOST", "127.0.0.1" if auth == "none" else "0.0.0.0")
        if auth == "none":
            host = "127.0.0.1"  # the no-auth demo mode never listens beyond loopback
        return cls(
            jobstore_address=env_str(env, "DOCJOBS_JOBSTORE_ADDRESS", f"127.0.0.1:{port}"),
            grpc_token=grpc_token(env),
            http_host=host,
            http_port=env_port(env, "DOCJOBS_HTTP_PORT", 8080),
            auth=auth,
            # In no-auth mode the per-job URL tokens are still signed, with a per-process secret.
            jwt_secret=secret,
            service_jwt_secret=service_secret,
            url_token_ttl_s=url_token_ttl_s,
            jwt_max_ttl_s=jwt_max_ttl_s,
            sse_heartbeat_s=env_float(env, "DOCJOBS_SSE_HEARTBEAT", 15.0, minimum=0.05, maximum=300.0),
            max_body_bytes=env_int(env, "DOCJOBS_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024,
                                   maximum=64 * 1024 * 1024),
            body_timeout_s=env_float(env, "DOCJOBS_BODY_TIMEOUT_S", 10.0, minimum=0.1, maximum=600.0),
            sse_streams_per_user=env_int(env, "DOCJOBS_SSE_STREAMS_PER_USER", 16, minimum=1, maximum=10_000),
            downloads_per_user=env_int(env, "DOCJOBS_DOWNLOADS_PER_USER", 8, minimum=1, maximum=10_000),
            jobstore_call_timeout_s=env_float(env, "DOCJOBS_JOBSTORE_CALL_TIMEOUT_S", 30.0, minimum=1.0,
                                              maximum=3600.0),
            # At least 6 s: the jobstore refuses pings more often than every 5 s (jobstore/server.py).
            jobstore_keepalive_s=env_float(env, "DOCJOBS_JOBSTORE_KEEPALIVE_S", 20.0, minimum=6.0, maximum=3600.0),
            jobstore_max_inflight=env_int(env, "DOCJOBS_JOBSTORE_MAX_INFLIGHT", 64, minimum=1, maximum=100_000),
            log_level=env_choice(env, "DOCJOBS_LOG_LEVEL", "info", LOG_LEVELS).upper(),
            # The jobstore's own bounds are wider (ten years, a year, 100): these are what the public API allows.
            max_expires_in_s=env_int(env, "DOCJOBS_MAX_EXPIRES_IN_S", 7 * 86400, minimum=1, maximum=3650 * 86400),
            max_run_at_ahead_s=env_int(env, "DOCJOBS_MAX_RUN_AT_AHEAD_S", 30 * 86400, minimum=1,
                                       maximum=365 * 86400),
            max_retries_cap=env_int(env, "DOCJOBS_MAX_RETRIES_CAP", 10, minimum=0, maximum=100),
            cors_origins=parse_origins(env.get("DOCJOBS_CORS_ORIGINS", "")),
            webhook_secret=webhook_secret(env),
            webhook_allow=webhook_allow(env),
            webhook_max_age_s=env_int(env, "DOCJOBS_WEBHOOK_MAX_AGE_S", 86400, minimum=1, maximum=30 * 86400),
            webhook_retry_base_ms=env_float(env, "DOCJOBS_WEBHOOK_RETRY_BASE_MS", 5000.0, minimum=10.0,
                                            maximum=3_600_000.0),
        )


def webhook_secret(env: Mapping[str, str]) -> str:
    """DOCJOBS_WEBHOOK_SECRET in the Standard Webhooks form, `whsec_` and 24 to 64 bytes in base64."""
    value = env_str(env, "DOCJOBS_WEBHOOK_SECRET", "").strip()
    if not value:
        return ""
    if not value.startswith("whsec_"):
        raise SettingsError("DOCJOBS_WEBHOOK_SECRET must be whsec_ followed by base64 (Standard Webhooks' form)")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError("DOCJOBS_WEBHOOK_SECRET: what follows whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise SettingsError(f"DOCJOBS_WEBHOOK_SECRET must hold 24 to 64 bytes, not {len(key)}")
    return value


def webhook_allow(env: Mapping[str, str]) -> tuple[tuple[str, int | None], ...]:
    try:
        return webhooks.parse_allow(env.get("DOCJOBS_WEBHOOK_ALLOW", ""))
    except ValueError as exc:
        raise SettingsError(f"DOCJOBS_WEBHOOK_ALLOW: {exc}") from None
