"""The renderer process: take jobs, render them in the sandbox, upload the artifact, complete.

One asyncio loop per process does the talking, on one work session with the jobstore (docjobs.worksession:
jobs pushed within the credit of its free slots, heartbeats, completions, cancels pushed back) and
UploadArtifact for large files; the rendering happens in
children of the zygote, up to DOCJOBS_RENDER_CONCURRENCY at a time. Errors in the job itself (an
invalid spec, failing code, code mode switched off) fail it for good; a jobstore that went away mid-upload
fails it as retryable. A job hurt by a fault that is not its own (the zygote died under it, a box of the
sandbox could not be built for it, the renderer is stopping) is given back with Release: pending again at
once, no attempt counted. While the zygote is being
restarted nothing is claimed and /healthz answers 503; a zygote that cannot be restarted makes the renderer
exit with EXIT_SANDBOX_LOST, for its supervisor to start it afresh. On SIGTERM the worker stops claiming,
lets running jobs finish within DOCJOBS_RENDER_GRACE_S, and gives back the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop

from docjobs.channels import jobstore_channel
from docjobs.exits import EXIT_DO_NOT_RESTART
from docjobs.jobtypes import CONTENT_TYPES, EXTENSIONS
from docjobs.metrics_http import MetricsServer, start_metrics_server
from docjobs.settings import load_or_exit, setup_logging
from docjobs.v1 import jobstore_pb2 as pb
from docjobs.v1 import jobstore_pb2_grpc as pb_grpc
from docjobs.worksession import WorkSession

from . import metrics
from .renditions import Renditions, requested
from .sandbox.client import RenderError, Sandbox, default_base_dir
from .sandbox.messages import MAX_PROGRESS_CHARS, clean_text
from .settings import Settings

log = logging.getLogger("renderer")

UPLOAD_CHUNK = 256 * 1024
GIVE_BACK_TIMEOUT_S = 5.0
FAULT_BACKOFF_S = 0.5  # a slot rests this long after the sandbox could not run its job, doubling in a row
FAULT_BACKOFF_MAX_S = 15.0
EXIT_SANDBOX_LOST = 75
"""The render sandbox died and could not be started again: a fresh renderer may well succeed, so this is
not EXIT_DO_NOT_RESTART (sysexits' EX_TEMPFAIL: `docjobs up` and Kubernetes restart it)."""
COMPLETE_TIMEOUT_S = 60.0  # a completion may carry a file of up to 4 MiB
FIRST_REPORT_S = 0.25  # no heartbeat (no progress event) before a job has run this long
GRPC_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


class CannotStart(Exception):
    """The renderer cannot work on this host or with this configuration, and starting it again would not
    change that: it exits with EXIT_DO_NOT_RESTART."""


class JobFailure(Exception):
    """The job cannot succeed: fail it with this code and message."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


def filename_for(title: str, job_type: str) -> str:
    stem = re.sub(r"[^\w\- ]+", "", title, flags=re.UNICODE).strip()
    stem = re.sub(r"\s+", "-", stem)[:80].strip("-") or job_type
    return f"{stem}.{EXTENSIONS[job_type]}"


def parse_payload(job: pb.Job, code_execution: str) -> tuple[str, Any]:
    """("spec", spec) or ("code", str), or JobFailure. Parsing only: the spec is validated by the render
    child (CPU work stays off the event loop)."""
    try:
        payload = json.loads(job.payload_json)
    except ValueError:
        raise JobFailure("invalid_payload", "the job's payload is not JSON") from None
    if not isinstance(payload, dict):
        raise JobFailure("invalid_payload", "the job's payload must be a JSON object")
    if "spec" in payload and "code" in payload:
        raise JobFailure("invalid_payload", "give spec or code, not both")
    if "spec" in payload:
        return "spec", payload["spec"]  # validated in the render child, off this event loop
    if "code" in payload:
        if code_execution != "sandbox":
            raise JobFailure("code_execution_disabled",
                             "code mode is switched off on this server (DOCJOBS_CODE_EXECUTION=off); send a spec")
        if not isinstance(payload["code"], str) or not payload["code"].strip():
            raise JobFailure("invalid_payload", "code must be a non-empty string")
        return "code", payload["code"]
    raise JobFailure("invalid_payload", "the payload has neither spec nor code")


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sandbox = Sandbox(default_base_dir(settings.data_dir), settings.code_limits, settings.spec_limits,
                               spec_workers=settings.concurrency, code=settings.code_execution == "sandbox")
        self.renditions = Renditions(settings.spec_limits, settings.code_limits)
        self.stopping = asyncio.Event()
        self.active: dict[str, asyncio.Task[None]] = {}
        self.rendering = 0  # jobs holding a render slot (claimed and not yet rendered)
        self._slot_freed = asyncio.Event()
        self._cancel_hooks: dict[str, Callable[[], None]] = {}  # per job in hand: what a pushed cancel does
        self._background: set[asyncio.Future[None]] = set()
        self._outage_pause: asyncio.Future[None] | None = None  # the pause of the zygote's current outage
        self._sandbox_faults = 0  # jobs given back in a row because the sandbox could not run them
        self._resting = 0  # slots that grant no credit for now, after such a fault (_rest_a_slot)
        self.session: WorkSession
        self._channel: grpc.aio.Channel | None = None
        self._metrics: MetricsServer | None = None
        self.stub: pb_grpc.JobStoreAsyncStub
        self.completed = 0
        self.failed = 0

    async def start(self) -> None:
        try:
            await self.sandbox.start()
        except TimeoutError:
            raise  # a slow start (a loaded host) may pass the next time
        except (OSError, RuntimeError) as exc:
            await self.sandbox.stop()
            raise CannotStart(f"its render sandbox cannot start ({exc})") from exc
        isolation = self.sandbox.isolation
        weak = [f"{k}: {v}" for k, v in isolation.items() if v.startswith(("none", "shared"))]
        if self.settings.code_execution == "sandbox":
            if weak:
                log.warning("code execution is ON with weaker isolation: %s", "; ".join(weak))
            else:
                log.info("code execution is on, sandboxed: %s", isolation)
        self._channel = jobstore_channel(
            self.settings.jobstore_address, self.settings.grpc_token,
            options=[("grpc.service_config", GRPC_SERVICE_CONFIG), ("grpc.enable_retries", 1)])
        self.stub = pb_grpc.JobStoreStub(self._channel)
        self.session = WorkSession(self.stub, self.settings.worker_id, self.settings.job_types, self.settings.lease_ms,
                                   on_jobs=self._take, on_cancel=self._cancelled, on_broken=self._session_broken,
                                   on_open=self._session_open)
        self.session.start()
        if self.settings.metrics_port:
            self._metrics = await start_metrics_server(self.settings.metrics_host, self.settings.metrics_port,
                                                       metrics.REGISTRY, unhealthy=self.sandbox.unavailable)
        log.info("renderer %s ready: types %s, concurrency %d, jobstore %s", self.settings.worker_id,
                 ",".join(self.settings.job_types), self.settings.concurrency, self.settings.jobstore_address)

    async def run(self) -> int:
        """Work until stopped; the exit status: 0, or EXIT_SANDBOX_LOST when the sandbox could not be
        restarted."""
        claim_task: asyncio.Task[None] = asyncio.create_task(self._credit_loop(), name="credit-loop")
        stopped = asyncio.ensure_future(self.stopping.wait())
        broken = asyncio.ensure_future(self.sandbox.broken.wait())
        await asyncio.wait({stopped, broken}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        broken.cancel()
        status = 0
        if self.sandbox.broken.is_set():
            log.error("renderer %s stops: %s; its supervisor is to start it again", self.settings.worker_id,
                      self.sandbox.broken_reason)
            status = EXIT_SANDBOX_LOST
        self.stopping.set()
        self._slot_freed.set()
        await claim_task  # returns by itself once stopping is set
        await self._pause()  # nothing more is pushed; what crossed the stop on the wire goes back now
        await self._drain()
        await self._goodbye()
        return status

    async def stop(self) -> None:
        if self._metrics is not None:
            await self._metrics.stop()
        if hasattr(self, "session"):
            await self.session.stop()
        if self._channel is not None:
            await self._channel.close()
        await self.renditions.close()
        await self.sandbox.stop()

    async def _drain(self) -> None:
        if self.active:
            log.info("stopping: waiting up to %.0f s for %d running job(s)", self.settings.grace_s, len(self.active))
            _, pending = await asyncio.wait(list(self.active.values()), timeout=self.settings.grace_s)
            for task in pending:
                task.cancel()  # gives its job back (retryable)
            if pending:
                await asyncio.wait(pending, timeout=GIVE_BACK_TIMEOUT_S + 1)

    async def _pause(self) -> None:
        """Stop the pushes and give back every job leased to this worker id but those in hand: jobs pushed
        as it stopped (or as the zygote went down) that it will not work on go back at once."""
        try:
            released = await self.session.pause(list(self.active), timeout=GIVE_BACK_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            log.warning("could not give back jobs pushed meanwhile (their leases will run out): %s", exc.details())
            return
        if released:
            log.info("gave back %d job(s) pushed as the renderer paused", len(released))

    async def _goodbye(self) -> None:
        released = await self.session.close(list(self.active), timeout=GIVE_BACK_TIMEOUT_S)
        if released:
            log.info("gave back %d job(s) at goodbye", len(released))

    async def _credit_loop(self) -> None:
        """Grant the session credit for the free slots. A slot is free again once its render ends: the
        upload and completion of one job overlap the next render. At most twice the concurrency is in hand
        at once, though. While the zygote is down nothing is granted, and what was granted is taken back
        (a job pushed then could only be given back)."""
        while not self.stopping.is_set():
            if not self.sandbox.running.is_set():
                await self._paused_for_outage()
                await self._until_either(self.sandbox.running, self.stopping)
                continue
            self._outage_pause = None
            self._slot_freed.clear()
            free = min(self.settings.concurrency - self.rendering - self._resting,
                       2 * self.settings.concurrency - len(self.active) - self._resting)
            self.session.grant(free - self.session.outstanding)
            await self._until_either(self._slot_freed, self.stopping, self.sandbox.down)

    @staticmethod
    def _session_broken(failures: int, code: grpc.StatusCode, details: str) -> None:
        metrics.CLAIM_ERRORS.inc()
        if failures == 1:
            log.warning("jobstore unreachable (%s: %s); retrying with backoff", code.name, details)

    @staticmethod
    def _session_open(failures: int) -> None:
        if failures:
            log.info("jobstore reachable again after %d failed attempt(s)", failures)

    async def _paused_for_outage(self) -> None:
        """Once per outage of the zygote, whoever notices it first (the credit loop, or a job it hurt):
        a job hurt by it is given back only after the pause, or the pushes could hand it straight back to
        this renderer while it cannot render."""
        if self._outage_pause is None:
            self._outage_pause = asyncio.ensure_future(self._pause())
        await asyncio.shield(self._outage_pause)

    def _take(self, jobs: list[pb.ClaimedJob]) -> None:
        for claimed in jobs:
            self.rendering += 1
            task = asyncio.create_task(self._process(claimed), name=f"job-{claimed.job.id}")
            self.active[claimed.job.id] = task
            task.add_done_callback(functools.partial(self._done, claimed.job.id))

    def _cancelled(self, job_id: str) -> None:
        hook = self._cancel_hooks.get(job_id)
        if hook is not None:
            hook()

    @staticmethod
    async def _until_either(*events: asyncio.Event) -> None:
        waits = {asyncio.ensure_future(event.wait()) for event in events}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.active.get(job_id) is task:  # a job given back may be pushed here again, as a new task
            del self.active[job_id]
        self._slot_freed.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    async def _process(self, claimed: pb.ClaimedJob) -> None:
        job, token = claimed.job, claimed.lease_token
        render_id = self.sandbox.new_render_id()
        state = {"progress": 0, "message": "claimed", "dirty": True}
        changed = asyncio.Event()
        lost = asyncio.Event()  # cancelled by a client, or the lease is gone

        def on_progress(progress: int, message: str) -> None:
            state.update(progress=max(0, min(99, progress)), message=message, dirty=True)
            changed.set()

        def cancelled() -> None:
            if not lost.is_set():
                log.info("job %s was cancelled; aborting the render", job.id)
                lost.set()
                task = asyncio.ensure_future(self.sandbox.cancel(render_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

        self._cancel_hooks[job.id] = cancelled
        metrics.IN_FLIGHT.inc()
        beats = asyncio.create_task(self._heartbeats(job.id, token, state, changed, lost, render_id))
        output: Path | None = None
        mode = ""
        holding_slot = True

        def release_slot() -> None:
            nonlocal holding_slot
            if holding_slot:
                holding_slot = False
                self.rendering -= 1
                self._slot_freed.set()

        try:
            started = time.perf_counter()
            mode, content = parse_payload(job, self.settings.code_execution)
            kinds = self._renditions_asked(job)
            try:
                result = await self.sandbox.render(render_id, job.job_type, mode, content, job.title, on_progress)
            except RenderError as exc:
                if not exc.given_back:
                    self._sandbox_faults = 0  # the sandbox answered: it works
                raise
            finally:
                release_slot()
            self._sandbox_faults = 0
            rendered = time.perf_counter()
            metrics.RENDER_SECONDS.labels(job.job_type, mode).observe(rendered - started)
            output = result.path
            if lost.is_set():
                return
            on_progress(99, "uploading")
            filename = filename_for(job.title, job.job_type)
            content_type = CONTENT_TYPES[job.job_type]
            preview = dict(result.preview)
            # A spec render's warnings ride in its preview through the sandbox's messages: the result
            # holds them beside it (a list, empty when the document is all that was asked).
            warnings = preview.pop("warnings", [])
            document: dict[str, Any] = {"filename": filename, "content_type": content_type,
                                        "preview": preview, "download_path": f"/api/jobs/{job.id}/artifact",
                                        "mode": mode, "warnings": warnings}
            if kinds:
                on_progress(95, "making renditions")
                document["renditions"] = await self.renditions.attach(
                    self.stub, job, token, output, mode, kinds, filename.rsplit(".", 1)[0])
            size = output.stat().st_size
            if size <= self.settings.inline_artifact_bytes:
                # Most documents: the file and the completion in one call (the jobstore adds the
                # artifact's id, size and sha256 to the result).
                uploaded = time.perf_counter()
                await self.session.complete_with_artifact(pb.CompleteWithArtifactRequest(
                    job_id=job.id, lease_token=token, filename=filename, content_type=content_type,
                    content=output.read_bytes(), result_json=json.dumps(document)), timeout=COMPLETE_TIMEOUT_S)
            else:
                artifact = await self.stub.UploadArtifact(self._upload(job, token, filename, output))
                document.update(artifact_id=artifact.id, size_bytes=artifact.size_bytes, sha256=artifact.sha256)
                uploaded = time.perf_counter()
                await self.session.complete(pb.CompleteRequest(
                    job_id=job.id, lease_token=token, artifact_id=artifact.id, result_json=json.dumps(document)),
                    timeout=COMPLETE_TIMEOUT_S)
            self.completed += 1
            metrics.JOBS.labels(job.job_type, "completed").inc()
            log.info("job %s completed (%s, %d bytes)", job.id, job.job_type, size)
            log.debug("job %s: render %.1f ms, upload %.1f ms, complete %.1f ms", job.id,
                      (rendered - started) * 1000, (uploaded - rendered) * 1000,
                      (time.perf_counter() - uploaded) * 1000)
        except JobFailure as exc:
            await self._fail(job, token, exc.code, str(exc), exc.retryable)
        except RenderError as exc:
            if exc.cancelled or lost.is_set():
                metrics.JOBS.labels(job.job_type, "stopped").inc()
                log.info("job %s stopped: %s", job.id, "cancelled" if exc.cancelled else "lease lost")
                return
            if exc.sandbox_lost:
                await self._paused_for_outage()
                await self._release(job, token, "sandbox_restarted", str(exc))
                return
            if exc.given_back:
                self._rest_a_slot()
                await self._release(job, token, "sandbox_unavailable", str(exc))
                return
            await self._fail(job, token, exc.code or ("code_failed" if mode == "code" else "render_failed"),
                             str(exc), False)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                log.info("job %s: %s", job.id, exc.details())  # cancelled or re-claimed meanwhile
            else:
                await self._fail(job, token, "jobstore_error", exc.details() or exc.code().name, True)
        except asyncio.CancelledError:
            # Give the job back and stop its render at once: the job moves on even if the kill is slow.
            await asyncio.shield(asyncio.gather(
                self.sandbox.cancel(render_id),
                self._release(job, token, "worker_shutdown",
                              f"renderer {self.settings.worker_id} stopped before finishing")))
            raise
        finally:
            if self._cancel_hooks.get(job.id) is cancelled:
                del self._cancel_hooks[job.id]
            metrics.IN_FLIGHT.dec()
            release_slot()
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            if output is not None:
                output.unlink(missing_ok=True)

    def _renditions_asked(self, job: pb.Job) -> tuple[str, ...]:
        """The renditions the job asks for; a job this renderer cannot serve fails before its render."""
        try:
            kinds = requested(json.loads(job.payload_json))
        except ValueError as exc:
            raise JobFailure("invalid_payload", str(exc)) from None
        missing = self.renditions.unavailable(job.job_type, kinds)
        if missing:
            raise JobFailure("renditions_unavailable", missing)
        return kinds

    async def _upload(self, job: pb.Job, token: str, filename: str,
                      path: Path) -> AsyncIterator[pb.UploadArtifactRequest]:
        """A large file, in chunks (smaller ones go with CompleteWithArtifact)."""
        yield pb.UploadArtifactRequest(header=pb.ArtifactHeader(
            job_id=job.id, lease_token=token, filename=filename, content_type=CONTENT_TYPES[job.job_type]))
        with path.open("rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                yield pb.UploadArtifactRequest(chunk=chunk)

    def _rest_a_slot(self) -> None:
        """After the sandbox could not run a job for a reason of its own, one slot grants no credit for a
        while, longer each time in a row (FAULT_BACKOFF_S, doubling, up to FAULT_BACKOFF_MAX_S; any answer
        of the sandbox that is not such a fault starts it afresh): another renderer takes the job
        meanwhile, and a fault that lasts does not bounce jobs through this one until their free releases
        are spent. (Credit granted already stands: the job may come back once to another free slot here.)"""
        self._sandbox_faults += 1
        delay = min(FAULT_BACKOFF_S * 2 ** (self._sandbox_faults - 1), FAULT_BACKOFF_MAX_S)
        self._resting += 1

        def rested() -> None:
            self._resting -= 1
            self._slot_freed.set()

        asyncio.get_running_loop().call_later(delay, rested)

    async def _release(self, job: pb.Job, token: str, code: str, message: str) -> None:
        """Give the job back through no fault of its own: pending at once, no attempt counted (the jobstore
        counts one all the same for a job released too often)."""
        metrics.JOBS.labels(job.job_type, "released").inc()
        log.info("job %s given back (%s): %s", job.id, code, message)
        try:
            reply = await self.session.release(pb.ReleaseRequest(job_id=job.id, lease_token=token, code=code,
                                                                 reason=message[:500]), timeout=GIVE_BACK_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            # Its lease runs out and the reaper retries it (or it was cancelled meanwhile).
            log.warning("could not give back job %s: %s", job.id, exc.details())
            return
        if reply.attempt_counted:
            log.warning("job %s was given back too often: counted as a failed attempt", job.id)

    async def _fail(self, job: pb.Job, token: str, code: str, message: str, retryable: bool) -> None:
        self.failed += 1
        metrics.JOBS.labels(job.job_type, "failed").inc()
        log.info("job %s failed (%s%s): %s", job.id, code, ", retryable" if retryable else "", message)
        try:
            await self.session.fail(pb.FailRequest(job_id=job.id, lease_token=token, error_code=code,
                                                   error_message=message[:10_000], retryable=retryable),
                                    timeout=GIVE_BACK_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            # Its lease runs out and the reaper retries it (or it was cancelled meanwhile).
            log.warning("could not report the failure of job %s: %s", job.id, exc.details())

    async def _heartbeats(self, job_id: str, token: str, state: dict[str, Any], changed: asyncio.Event,
                          lost: asyncio.Event, render_id: str) -> None:
        """Renew the lease every heartbeat_s, and report progress soon after it changes. Nothing in the
        job's first FIRST_REPORT_S: most documents are done by then, their claim already said
        "processing", and a progress event nobody can see costs a call, a commit and an event."""
        await asyncio.sleep(FIRST_REPORT_S)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_s):
                    await changed.wait()
            changed.clear()
            try:
                reply = await self._beat(job_id, token, int(state["progress"]), str(state["message"]))
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    log.warning("job %s: lease lost (%s); aborting the render", job_id, exc.details())
                    lost.set()
                    await self.sandbox.cancel(render_id)
                    return
                continue  # the jobstore is away; the lease may still hold, try again
            if reply.cancelled:
                log.info("job %s was cancelled; aborting the render", job_id)
                lost.set()
                await self.sandbox.cancel(render_id)
                return
            await asyncio.sleep(0.2)  # at most five progress reports a second

    async def _beat(self, job_id: str, token: str, progress: int, message: str) -> pb.WorkAck:
        """One heartbeat. Its progress text comes from the render's child, so it is cleaned first (the
        jobstore refuses control characters, and a lone surrogate cannot even be encoded); and should the
        jobstore refuse the beat all the same (INVALID_ARGUMENT), it goes again at once as a bare lease
        renewal: a note on progress is never worth the lease (a lapsed lease runs the job twice, and a
        cancellation is heard only in a heartbeat's answer)."""
        text = clean_text(message, MAX_PROGRESS_CHARS)
        try:
            return await self.session.heartbeat(pb.HeartbeatRequest(
                job_id=job_id, lease_token=token, progress=max(0, min(100, progress)), message=text,
                lease_ms=self.settings.lease_ms))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            log.warning("job %s: the jobstore refused a heartbeat (%s); renewing the lease without progress",
                        job_id, exc.details())
        return await self.session.heartbeat(pb.HeartbeatRequest(job_id=job_id, lease_token=token,
                                                                lease_ms=self.settings.lease_ms))


async def serve(settings: Settings) -> int:
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    await worker.start()
    try:
        return await worker.run()
    finally:
        await worker.stop()
        log.info("renderer stopped (%d completed, %d failed)", worker.completed, worker.failed)


def main() -> None:
    settings = load_or_exit("renderer", Settings.from_env)
    setup_logging(settings.log_level)
    try:
        status = uvloop.run(serve(settings))
    except CannotStart as exc:
        log.error("renderer %s cannot start: %s; do not restart it", settings.worker_id, exc)
        raise SystemExit(EXIT_DO_NOT_RESTART) from None
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
