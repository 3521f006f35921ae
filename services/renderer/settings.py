"""The renderer's settings, read from the environment once at start and validated."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docjobs.channels import grpc_token
from docjobs.jobtypes import JOB_TYPES
from docjobs.settings import SettingsError, data_dir, env_choice, env_float, env_int, env_port, env_str

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Settings:
    jobstore_address: str = "127.0.0.1:50051"
    grpc_token: str = field(default="", repr=False)  # presented on every jobstore call; from_env requires it
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    job_types: tuple[str, ...] = JOB_TYPES
    concurrency: int = 2
    code_execution: str = "off"  # off | sandbox
    lease_ms: int = 30_000
    heartbeat_s: float = 2.0
    grace_s: float = 30.0
    inline_artifact_bytes: int = 4 * 1024 * 1024  # files up to this size go with their completion
    data_dir: Path = Path(".docjobs")
    code_limits: dict[str, Any] = field(default_factory=dict)
    spec_limits: dict[str, Any] = field(default_factory=dict)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no metrics endpoint
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        port = env_port(env, "DOCJOBS_GRPC_PORT", 50051)
        types = tuple(t.strip() for t in env_str(env, "DOCJOBS_JOB_TYPES", ",".join(JOB_TYPES)).split(",") if t.strip())
        unknown = [t for t in types if t not in JOB_TYPES]
        if unknown or not types:
            raise SettingsError(f"DOCJOBS_JOB_TYPES must list some of {', '.join(JOB_TYPES)}, got {unknown or types}")
        code_execution = env_choice(env, "DOCJOBS_CODE_EXECUTION", "off", ("off", "sandbox"))
        concurrency = max(1, os.cpu_count() or 1)
        if code_execution == "sandbox" and os.geteuid() == 0:
            # As root each code job takes uids of the renderer's block: by default no more than it holds
            # (a setting above it refuses to start, sandbox.codebox).
            from .sandbox.codebox import MAX_JOBS_AS_ROOT

            concurrency = min(concurrency, MAX_JOBS_AS_ROOT)
        return cls(
            jobstore_address=env_str(env, "DOCJOBS_JOBSTORE_ADDRESS", f"127.0.0.1:{port}"),
            grpc_token=grpc_token(env),
            worker_id=env_str(env, "DOCJOBS_WORKER_ID", f"{socket.gethostname()}-{os.getpid()}"),
            job_types=types,
            concurrency=env_int(env, "DOCJOBS_RENDER_CONCURRENCY", concurrency, minimum=1, maximum=64),
            code_execution=code_execution,
            lease_ms=env_int(env, "DOCJOBS_LEASE_MS", 30_000, minimum=3_000, maximum=3_600_000),
            heartbeat_s=env_float(env, "DOCJOBS_HEARTBEAT_S", 2.0, minimum=0.1, maximum=600.0),
            grace_s=env_float(env, "DOCJOBS_RENDER_GRACE_S", 30.0, minimum=0.0, maximum=3600.0),
            inline_artifact_bytes=env_int(env, "DOCJOBS_INLINE_ARTIFACT_BYTES", 4 * 1024 * 1024, minimum=0,
                                          maximum=4 * 1024 * 1024),
            data_dir=data_dir(env),
            code_limits={
                "timeout_s": env_float(env, "DOCJOBS_SANDBOX_TIMEOUT_S", 60.0, minimum=1.0, maximum=3600.0),
                "cpu_s": env_int(env, "DOCJOBS_SANDBOX_CPU_S", 30, minimum=1, maximum=3600),
                "memory_mb": env_int(env, "DOCJOBS_SANDBOX_MEMORY_MB", 1024, minimum=64, maximum=65536),
                "file_mb": env_int(env, "DOCJOBS_SANDBOX_FILE_MB", 100, minimum=1, maximum=10_240),
                "processes": env_int(env, "DOCJOBS_SANDBOX_PROCESSES", 16, minimum=1, maximum=1024),
                "tmpfs_mb": env_int(env, "DOCJOBS_SANDBOX_DISK_MB", 512, minimum=16, maximum=65536),
            },
            spec_limits={"timeout_s": 300.0, "cpu_s": 240, "memory_mb": 4096, "file_mb": 1024, "processes": 64},
            metrics_host=env_str(env, "DOCJOBS_METRICS_HOST", "127.0.0.1"),
            metrics_port=env_int(env, "DOCJOBS_METRICS_PORT", 0, minimum=0, maximum=65535),
            log_level=env_choice(env, "DOCJOBS_LOG_LEVEL", "info", LOG_LEVELS).upper(),
        )
