"""Running real renderer processes against a test jobstore, and waiting for jobs to finish."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TERMINAL = (pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED)


def as_nobody(command: list[str]) -> list[str]:
    """`command` as the user nobody, in a mount namespace where the interpreter is reachable: it may live
    in a private home (pyenv under /root); each directory above it is lent through a bind mount of it,
    nothing else of that home."""
    prefix = os.path.realpath(sys.base_prefix)
    closed = [p for p in Path(prefix).parents if not p.stat().st_mode & 0o001]
    script = ""
    if closed:
        home = str(closed[0])
        script = (f"mkdir -p /tmp/.docjobs-lend && mount --bind {prefix} /tmp/.docjobs-lend && "
                  f"mount -t tmpfs -o mode=0755 tmpfs {home} && mkdir -p {prefix} && "
                  f"mount --bind /tmp/.docjobs-lend {prefix} && ")
    quoted = " ".join(shlex.quote(part) for part in command)
    script += f"exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all {quoted}"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def example(job_type: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((EXAMPLES / f"{job_type}.json").read_text())
    return spec


class RendererProcess:
    def __init__(self, address: str, data_dir: Path, as_user: str | None = None, **env: str) -> None:
        """as_user="nobody": the renderer runs as that ordinary user (tests run as root), as deployed."""
        self.as_user = as_user
        self.env = {**os.environ, "DOCJOBS_JOBSTORE_ADDRESS": address, "DOCJOBS_DATA_DIR": str(data_dir),
                    "DOCJOBS_RENDER_CONCURRENCY": "2", **env}
        self.env.pop("DATABASE_URL", None)
        self.log_path = data_dir / f"renderer-{id(self)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RendererProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            command = [sys.executable, "-m", "renderer.worker"]
            if self.as_user is not None:
                assert self.as_user == "nobody", self.as_user
                command = as_nobody(command)
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    async def shutdown(self, timeout: float = 30.0) -> int:
        """stop(), off the event loop: a jobstore running in this test's loop must still answer the
        renderer's last calls (its give-back), or the renderer waits for them and the loop stalls."""
        return await asyncio.to_thread(self.stop, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


async def submit(stub: pb_grpc.JobStoreAsyncStub, job_type: str, payload: dict[str, Any],
                 title: str = "Test document", user_id: str = "render-tests", **fields: Any) -> pb.Job:
    reply = await stub.Enqueue(pb.EnqueueRequest(job_type=job_type, user_id=user_id, title=title,
                                                 payload_json=json.dumps(payload), **fields))
    return reply.job


async def wait_finished(stub: pb_grpc.JobStoreAsyncStub, job_id: str,
                        timeout: float = 60) -> tuple[pb.Job, list[pb.JobEvent]]:
    """Watch the job to its terminal event; returns the final job and every event seen."""
    async def watch() -> list[pb.JobEvent]:
        return [e async for e in stub.Watch(pb.WatchRequest(job_id=job_id))]

    events = await asyncio.wait_for(watch(), timeout)
    job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert job.status in TERMINAL
    return job, events


async def download(stub: pb_grpc.JobStoreAsyncStub, artifact_id: str, target: Path) -> pb.Artifact:
    info = None
    with target.open("wb") as f:
        async for part in stub.DownloadArtifact(pb.DownloadArtifactRequest(artifact_id=artifact_id)):
            if part.WhichOneof("part") == "info":
                info = part.info
            else:
                f.write(part.chunk)
    assert info is not None
    return info
