"""The renderer's side of the zygote: start it, send renders, route progress and answers, restart it
when it dies (failing what it held as retryable: that is the infrastructure's fault, not the job's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, str], None]


class RenderError(Exception):
    def __init__(self, message: str, *, retryable: bool, cancelled: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.cancelled = cancelled
        self.code = code


@dataclass(frozen=True)
class RenderResult:
    path: Path
    preview: dict[str, Any]


@dataclass
class _Pending:
    on_progress: ProgressCallback
    future: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class Sandbox:
    def __init__(self, base_dir: Path, code_limits: dict[str, Any], spec_limits: dict[str, Any],
                 spec_workers: int = 1) -> None:
        self.base_dir = base_dir
        self.out_dir = base_dir / "out"
        self.work_dir = base_dir / "work"
        self._config = {"out_dir": str(self.out_dir), "work_dir": str(self.work_dir),
                        "code_limits": code_limits, "spec_limits": spec_limits, "spec_workers": spec_workers}
        self._process: asyncio.subprocess.Process | None = None
        self._pending: dict[str, _Pending] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self.isolation: dict[str, str] = {}
        self.restarts = 0

    async def start(self) -> None:
        for d in (self.out_dir, self.work_dir):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True, mode=0o700)
        # An almost empty environment: nothing of the renderer's reaches the zygote or its children.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "renderer.sandbox.zygote", json.dumps(self._config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            limit=4 * 1024 * 1024, start_new_session=True)
        assert self._process.stdout is not None
        async with asyncio.timeout(60):
            line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError("the render zygote exited at start")
        ready = json.loads(line)
        self.isolation = ready.get("isolation", {})
        self._reader = asyncio.create_task(self._read(self._process), name="zygote-reader")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        self._stopping = True
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
        if not answer.get("ok"):
            raise RenderError(str(answer.get("error", "render failed")), retryable=bool(answer.get("retryable")),
                              cancelled=bool(answer.get("cancelled")), code=answer.get("code"))
        return RenderResult(self.out_dir / answer["file"], answer.get("preview") or {})

    async def _send(self, message: dict[str, Any]) -> None:
        if self._process is None or self._process.returncode is not None or self._process.stdin is None:
            raise RenderError("the render sandbox is not running", retryable=True)
        self._process.stdin.write((json.dumps(message) + "\n").encode())
        await self._process.stdin.drain()

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            pending = self._pending.get(message.get("id", ""))
            if pending is None:
                continue
            if "progress" in message:
                pending.on_progress(int(message["progress"]), str(message.get("message", "")))
            elif not pending.future.done():
                pending.future.set_result(message)
        await process.wait()
        self._fail_pending(f"the render sandbox exited with status {process.returncode}")
        if not self._stopping:
            log.error("render zygote exited with status %s; restarting it", process.returncode)
            self.restarts += 1
            await asyncio.sleep(min(5.0, 0.2 * self.restarts))
            if not self._stopping:
                await self.start()

    def _fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(RenderError(reason, retryable=True))

    async def cancel(self, render_id: str) -> None:
        with contextlib.suppress(RenderError):
            await self._send({"op": "cancel", "id": render_id})


def default_base_dir(data_dir: Path) -> Path:
    return data_dir / f"renderer-{os.getpid()}"
