"""The renderer's side of the zygote: start it, send renders, route progress and answers, restart it
when it dies.

A zygote that dies takes the renders it held with it: they fail with RenderError(sandbox_lost=True), the
sandbox's fault and not the jobs', and the worker gives those jobs back without counting an attempt. The
zygote is then started again after a backoff that doubles with each attempt (RESTART_BACKOFF_S up to
RESTART_BACKOFF_MAX_S); an attempt fails when the zygote cannot start, or dies within STABLE_S of its start.
After RESTART_ATTEMPTS failed attempts in a row the sandbox gives up (`broken` is set): the worker stops
claiming and exits, so that its supervisor starts a fresh renderer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import messages
from .messages import BadMessage, JobProgress, NotReady, Ready, Rendered, RenderFailed

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, str], None]

RESTART_ATTEMPTS = 5
RESTART_BACKOFF_S = 0.25
RESTART_BACKOFF_MAX_S = 8.0
STABLE_S = 30.0  # a zygote that lived this long was a good start: the next death starts the count afresh
START_TIMEOUT_S = 60.0


class RenderError(Exception):
    """A render that did not succeed. Two kinds are not the job's doing, and the job is to be given back,
    not failed: sandbox_lost (the zygote died or is restarting, the renderer is stopping: the renderer
    pauses until it is back) and given_back (the zygote, still running, could not run this job or check its
    output: a box that could not be built, a code box that refused it)."""

    def __init__(self, message: str, *, given_back: bool = False, cancelled: bool = False,
                 code: str | None = None, sandbox_lost: bool = False) -> None:
        super().__init__(message)
        self.given_back = given_back
        self.cancelled = cancelled
        self.code = code
        self.sandbox_lost = sandbox_lost


@dataclass(frozen=True)
class RenderResult:
    path: Path
    preview: dict[str, Any]
    phases: dict[str, float] = field(default_factory=dict)  # a traced code job's (Sandbox(trace=True))


@dataclass
class _Pending:
    on_progress: ProgressCallback
    future: asyncio.Future[Rendered | RenderFailed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class Sandbox:
    def __init__(self, base_dir: Path, code_limits: dict[str, Any], spec_limits: dict[str, Any],
                 spec_workers: int = 1, code: bool = False, trace: bool = False) -> None:
        self.base_dir = base_dir
        self.out_dir = base_dir / "out"
        self.work_dir = base_dir / "work"
        self._config = {"out_dir": str(self.out_dir), "work_dir": str(self.work_dir),
                        "code_limits": code_limits, "spec_limits": spec_limits, "spec_workers": spec_workers,
                        "code": code,  # code: start the code box (code mode on), or refuse to start without it
                        "trace": trace}  # trace: each code job's answer says how long its phases took
        self._process: asyncio.subprocess.Process | None = None
        self._pending: dict[str, _Pending] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self.isolation: dict[str, str] = {}
        self.restarts = 0
        self.running = asyncio.Event()  # a zygote is up and takes renders
        self.down = asyncio.Event()  # the opposite, for those who wait for it to go down
        self.broken = asyncio.Event()  # it died and could not be started again: the renderer must go
        self.broken_reason = ""
        self._failed_attempts = 0  # restart attempts in a row that failed
        self._started_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the zygote; raises (OSError, RuntimeError, TimeoutError) when it cannot start."""
        for d in (self.out_dir, self.work_dir):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, mode=0o700)
        # An almost empty environment: nothing of the renderer's reaches the zygote or its children.
        # OpenBLAS (numpy's, which openpyxl imports) single-threaded: see codebox.py's bwrap_command.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "renderer.sandbox.zygote", json.dumps(self._config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=4 * 1024 * 1024, start_new_session=True)
        self._process = process
        try:
            assert process.stdout is not None
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"the render zygote exited at start (status {await process.wait()})")
            try:
                ready = json.loads(line)
            except ValueError:
                raise RuntimeError("the render zygote's first line is not its ready message") from None
            if not isinstance(ready, dict) or not ready.get("ready"):
                error = ready.get("error") if isinstance(ready, dict) else None
                raise RuntimeError(str(error or "the render zygote refused to start"))
        except BaseException:
            # Never leave a half-started zygote behind (a timeout, a refusal): the next attempt starts clean.
            if process.returncode is None:
                process.kill()
            await asyncio.shield(process.wait())
            self._process = None
            raise
        self.isolation = ready.get("isolation", {})
        self._started_at = time.monotonic()
        self._reader = asyncio.create_task(self._read(process), name="zygote-reader")
        self.down.clear()
        self.running.set()

    def unavailable(self) -> str | None:
        """Why no render can run now (the zygote is being restarted, or could not be), or None."""
        if self.broken.is_set():
            return self.broken_reason
        if not self.running.is_set():
            return "the render sandbox is restarting"
        return None

    def _lost(self, process: asyncio.subprocess.Process) -> None:
        """The zygote is gone: fail what it held as not the jobs' doing, and start it again."""
        self.running.clear()
        self.down.set()
        self._fail_pending(f"the render sandbox exited with status {process.returncode}")
        if self._stopping or self._process is not process:
            return
        self._process = None
        if time.monotonic() - self._started_at >= STABLE_S:
            self._failed_attempts = 0
        log.error("render zygote exited with status %s; restarting it", process.returncode)
        self._supervisor = asyncio.create_task(self._restart(), name="zygote-restart")

    async def _restart(self) -> None:
        while not self._stopping:
            self._failed_attempts += 1
            if self._failed_attempts > RESTART_ATTEMPTS:
                self.broken_reason = (f"the render sandbox could not be restarted ({RESTART_ATTEMPTS} attempts "
                                      "in a row failed)")
                log.error("%s; giving up", self.broken_reason)
                self.broken.set()
                return
            await asyncio.sleep(min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** (self._failed_attempts - 1)))
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self.start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                log.error("render zygote restart %d of %d failed: %s", self._failed_attempts, RESTART_ATTEMPTS, exc)
                continue
            log.info("render zygote restarted (pid %s)", self.pid)
            return

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        self._stopping = True
        self.running.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()  # the zygote kills its children and exits on EOF
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_pending("the renderer is stopping")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    @staticmethod
    def new_render_id() -> str:
        return uuid.uuid4().hex

    async def render(self, render_id: str, job_type: str, mode: str, content: Any, title: str,
                     on_progress: ProgressCallback) -> RenderResult:
        """Render in a spec worker (spec) or a fresh child (code); raises RenderError. cancel(render_id) aborts it."""
        pending = _Pending(on_progress)
        self._pending[render_id] = pending
        try:
            await self._send({"op": "render", "id": render_id, "job_type": job_type, "mode": mode,
                              mode: content, "title": title})
            answer = await pending.future
        finally:
            self._pending.pop(render_id, None)
        if isinstance(answer, RenderFailed):
            raise RenderError(answer.error, given_back=answer.given_back, cancelled=answer.cancelled,
                              code=answer.code)
        return RenderResult(self.out_dir / answer.file, answer.preview, answer.phases)

    async def _send(self, message: dict[str, Any]) -> None:
        if self._process is None or self._process.returncode is not None or self._process.stdin is None:
            raise RenderError("the render sandbox is not running", sandbox_lost=True)
        try:
            self._process.stdin.write((json.dumps(message) + "\n").encode())
            await self._process.stdin.drain()
        except ConnectionError as exc:  # it died and we have not heard yet
            raise RenderError(f"the render sandbox is not running ({exc})", sandbox_lost=True) from None

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
                if not line:
                    break
                message = messages.parse_zygote(line.rstrip(b"\n"))
                if isinstance(message, Ready | NotReady):
                    raise BadMessage("a second ready message")
            except (BadMessage, ValueError) as exc:  # ValueError: a line over the stream's limit
                # The zygote runs our code only, so this is a fault of ours; its state is not to be
                # trusted: it is ended like a crash (what it held is given back) and started again.
                log.error("render zygote sent a malformed message (%s); ending it", exc)
                process.kill()
                break
            pending = self._pending.get(message.id)
            if pending is None:
                continue
            if isinstance(message, JobProgress):
                pending.on_progress(message.percent, message.text)
            elif not pending.future.done():
                pending.future.set_result(message)
        await process.wait()
        self._lost(process)

    def _fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(RenderError(reason, sandbox_lost=True))

    async def cancel(self, render_id: str) -> None:
        with contextlib.suppress(RenderError):
            await self._send({"op": "cancel", "id": render_id})


def default_base_dir(data_dir: Path) -> Path:
    return data_dir / f"renderer-{os.getpid()}"
