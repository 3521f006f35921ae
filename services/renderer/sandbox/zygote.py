"""The zygote: a warm parent that forks the processes that render.

It is started by the renderer as its own process, with an almost empty environment, and speaks JSON
lines on stdin/stdout. It holds every job the renderer sends it, so it never runs model-written code and
never forks a process that does.

Spec jobs (our own renderers, fed data) run in long-lived spec workers forked from the zygote: a worker
takes one job at a time over a pipe and serves up to SPEC_WORKER_JOBS of them before it is replaced,
so a small document costs its render, not a fork, copy-on-write faults and an exit. A worker that fails
a job in any way but a clean validation error, is cancelled or runs out of time is killed, never reused.
At start the zygote imports the document libraries (so a worker starts warm) and, where it runs as
root, isolates itself and its spec workers once: a new network namespace with nothing up, and a mount
namespace where every mount is read-only and the job directories live on a private tmpfs.

Code jobs (with code mode on) run in the code box (codebox.py, codezygote.py): a second warm process,
inside bubblewrap, that never holds a job's data. Per job the zygote writes the job into a memfd and
sends it, the write end of the job's message pipe and a socket for the job's scratch directory to the
code zygote, which forks the job's own box (its own user, PID, mount, network, IPC and UTS namespaces, a
tmpfs of its own, rlimits, seccomp) around them. The zygote keeps the wall-clock deadline, reads the
job's messages, and never takes its word that it is done: its "done" only ends its box (killed then,
not left to exit), and once nothing of the box can run any more, the document it saved is copied (by
the kernel) into a sealed memfd, and an output check (checker.py) in a box of its own opens it and
makes the preview; only then is it copied out. Where the code box cannot be built,
the zygote refuses to start ({"ready": false, "error": ...}): code never runs with less isolation.

Requests (one JSON object per line):
  {"op": "render", "id": ..., "job_type": ..., "mode": "spec"|"code", "spec"|"code": ..., "title": ...}
  {"op": "cancel", "id": ...}
Answers:
  {"ready": true, "isolation": {...}} or {"ready": false, "error": ...}
  {"id": ..., "progress": 0-100, "message": ...}
  {"id": ..., "ok": true, "file": <a file name in the output directory>, "preview": {...}}
  {"id": ..., "ok": false, "error": ..., "given_back": false, "code": "invalid_spec" | "invalid_output" | null}
  (given_back: the sandbox, not the job, is at fault: the renderer releases the job, no attempt counted)
Every line the zygote writes, and every line a child writes to it, is one of the typed messages of
messages.py, and is read strictly: a child's bad line fails its job, never the zygote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from docjobs.jobtypes import EXTENSIONS

from . import checker, linux, messages
from .checker import CHECK_TIMEOUT_S, INVALID_OUTPUT
from .codebox import UID_BASE, BoxError, CodeBox
from .messages import (
    CHECKER,
    CODE_CHILD,
    SPEC_WORKER,
    BadMessage,
    Checked,
    ChildMessage,
    Done,
    Failed,
    JobProgress,
    NotReady,
    Progress,
    Ready,
    Rendered,
    RenderFailed,
    ZygoteMessage,
)

__all__ = ["UID_BASE", "Zygote", "main"]

PR_SET_CHILD_SUBREAPER = 36
BOX_START_S = 120.0  # the code box imports and warms the libraries as the zygote does, on a loaded host too
MAX_READS = 16  # chunks read from one child's pipe before the loop serves the others
SPEC_WORKER_JOBS = 100  # a spec worker is replaced after this many jobs (bounded heap growth)
# Its successor is started this many jobs before: a new worker's warm-up (_prefault) takes ~110 ms, some
# ten small documents' time when it has a core to itself; with a lead of ten it was still warming up when
# its first job came (bench/scale.py's renderer, jobs back to back on two cores), with 25 it was not.
SUCCESSOR_LEAD_JOBS = 25
# A spec render tells the zygote of its progress only once it has run this long, and then at most this
# often: the renderer reports nothing in a job's first 0.25 s nor more than five times a second, and each
# message wakes the zygote and the renderer while the render runs (docs/performance.md, small documents).
SPEC_PROGRESS_AFTER_S = 0.2
SPEC_PROGRESS_EVERY_S = 0.2


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 60.0
    cpu_s: int = 30
    memory_mb: int = 1024
    file_mb: int = 100
    processes: int = 16
    tmpfs_mb: int = 512

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Job:
    id: str
    job_type: str
    mode: str
    request: dict[str, Any]
    directory: str | None  # a spec job's directory; a code job's, through its handle, once its box sent it
    pid: int = 0
    slot: int = 0  # a code job's number in the code box
    handle: socket.socket | None = None  # where a code job's box sends the handle on its scratch directory
    scratch: int = -1  # that handle
    pipe: int = -1
    deadline: float = 0.0
    buffer: bytes = b""
    messages: list[Done | Failed | Checked] = field(default_factory=list)  # its final word (at most one)
    killed_for: str | None = None
    file: str | None = None
    worker: SpecWorker | None = None
    stage: str = "render"  # a code job: "render" (its code runs), then "check" (its output is checked)
    document: int = -1  # a code job's saved document, a sealed copy (memfd): what is checked is delivered
    check_slot: int = 0  # its output check's number in the code box (started beside the job)
    check_document: socket.socket | None = None  # where the check waits for the document's descriptor
    check_pipe: int = -1  # the read end of the check's messages, until the check stage
    check_channel: socket.socket | None = None  # where the check's box sends its scratch handle (unused)
    ending: bool = False  # a code job said it is done, and its box was told to end
    marks: dict[str, float] | None = None  # when a traced code job reached each step (time.monotonic)


@dataclass
class SpecWorker:
    """A long-lived child that renders spec jobs, one at a time, sent on its request pipe."""

    pid: int
    requests: int  # write end: one JSON line per job
    pipe: int  # read end of its messages
    buffer: bytes = b""
    job: Job | None = None
    served: int = 0


# Modules model-written code commonly uses, and codecs the libraries load lazily. A code job's uid may not
# be able to read the Python installation (a home directory's pyenv, say); what is imported here, the
# children inherit already loaded.
WARM_STDLIB = (
    "base64", "calendar", "collections", "copy", "csv", "dataclasses", "datetime", "decimal", "encodings.cp437",
    "encodings.idna", "encodings.latin_1", "encodings.utf_16", "encodings.utf_8_sig", "encodings.ascii", "enum",
    "fractions", "functools", "hashlib", "io", "itertools", "json", "locale", "math", "operator", "pathlib",
    "random", "re", "statistics", "string", "textwrap", "typing", "unicodedata", "uuid", "zipfile", "zlib",
)


# A small document of each type, with the features renders use first: warm-ups render these.
SAMPLE_SPECS: dict[str, dict[str, Any]] = {
    "spreadsheet": {"sheets": [{"name": "S", "columns": [{"header": "a", "format": "currency"},
                                                         {"header": "b", "format": "date"}],
                                "rows": [[1, "2026-01-01"], [{"formula": "A2*2"}, None]],
                                "charts": [{"type": "bar", "categoryColumn": 1, "valueColumns": [0]}]}]},
    "document": {"blocks": [{"type": "heading", "text": "h"},
                            {"type": "paragraph", "runs": [{"text": "p", "bold": True}]},
                            {"type": "bullets", "items": ["i"]}, {"type": "numbered", "items": ["n"]},
                            {"type": "table", "header": ["t"], "rows": [["c"]]}, {"type": "pageBreak"}]},
    "pdf": {"blocks": [{"type": "heading", "text": "h"}, {"type": "paragraph", "text": "p"},
                       {"type": "bullets", "items": ["i"]}, {"type": "table", "header": ["t"], "rows": [["c"]]}]},
    "presentation": {"slides": [{"layout": "title", "title": "t", "subtitle": "s", "notes": "n"},
                                {"layout": "bullets", "title": "b", "bullets": ["x", {"text": "y", "level": 1}]},
                                {"layout": "table", "title": "t", "header": ["a"], "rows": [["1"]]},
                                {"layout": "chart", "title": "c",
                                 "chart": {"type": "line", "categories": ["a"],
                                           "series": [{"name": "s", "values": [1]}]}}]},
}


def warm() -> None:
    """Import what spec renders need once, before forking, and render one document of each type."""
    import_libraries()
    from ..spec import document, pdf, presentation, spreadsheet  # noqa: F401

    warm_renders()


def import_libraries() -> None:
    """Import the document libraries (what model-written code usually imports, and what the output check
    reads documents with) and the standard modules such code uses."""
    import importlib

    for name in WARM_STDLIB:
        importlib.import_module(name)
    import docx  # noqa: F401
    import openpyxl
    import openpyxl.chart
    import openpyxl.styles  # noqa: F401
    import pptx
    import pptx.chart.data
    import pptx.util  # noqa: F401
    import pypdf  # noqa: F401
    import reportlab.lib.pagesizes
    import reportlab.lib.styles
    import reportlab.pdfgen.canvas
    import reportlab.platypus  # noqa: F401

    from .. import preview  # noqa: F401


def warm_renders(job_types: Iterable[str] = SAMPLE_SPECS) -> None:
    """Render one small document of each type: the libraries import much of themselves lazily (writers,
    XML and zip machinery) and fill caches on first use. Done once here, every spec worker starts warm
    instead of paying ~25 ms each. (Nothing here reads a document back: only code jobs' output checks
    do, and the code zygote warms those up itself.)"""
    import tempfile

    from .. import specs
    from ..spec import render

    with tempfile.TemporaryDirectory(prefix="docjobs-warm-") as tmp:
        for job_type in job_types:
            spec = SAMPLE_SPECS[job_type]
            specs.validate(job_type, spec)
            path = Path(tmp) / f"warm.{EXTENSIONS[job_type]}"
            render(job_type, spec, "warm-up", path, lambda _p, _m: None)


class Zygote:
    def __init__(self, out_dir: str, work_dir: str, limits: Limits, spec_limits: Limits,
                 spec_workers: int = 1, code_box: CodeBox | None = None, trace: bool = False) -> None:
        self.limits = limits
        self.spec_limits = spec_limits
        self.spec_standby = spec_workers  # spec workers started ahead, before any job asks
        self.spec_workers: dict[int, SpecWorker] = {}
        self.idle_workers: list[SpecWorker] = []
        self.successors: list[SpecWorker] = []  # started ahead of a worker's retirement, warming up
        self.out_fd = os.open(out_dir, os.O_DIRECTORY | os.O_RDONLY)
        self.work_dir = work_dir  # where spec job directories live: set by isolate()
        self.root = os.geteuid() == 0
        self.isolation: dict[str, str] = {}
        self.jobs: dict[str, Job] = {}
        self.code_box = code_box
        self.trace = trace  # time each code job's steps, and say so in its answer (bench/render.py)
        self.by_slot: dict[int, Job] = {}
        self.next_slot = 1
        self.selector = selectors.DefaultSelector()
        self.stdin_buffer = b""

    # --- isolation, once ---------------------------------------------------------------------------

    def isolate(self) -> None:
        """The spec workers' isolation, once (code jobs have the code box). As root: a network namespace
        with nothing up, and a mount namespace where every mount is read-only and the spec jobs'
        directories are on a private tmpfs over the work directory, so nothing a spec job writes reaches
        the host; documents are copied out through a handle on the output directory opened before. Spec
        jobs run our own renderers over data: without root they run in the renderer's work directory."""
        os.makedirs(self.work_dir, exist_ok=True)
        if self.code_box is not None:
            self.isolation["code"] = self.code_box.description
        if not self.root:
            self.isolation["spec"] = "in the renderer's work directory, as its user (not root: no namespaces)"
            return
        try:
            linux.unshare(linux.CLONE_NEWNET | linux.CLONE_NEWNS)
        except OSError as exc:
            self.isolation["spec"] = f"in the renderer's work directory (namespaces refused: {exc.strerror})"
            return
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        failed = []
        for point in sorted(set(linux.mount_points()), key=len):
            if point.startswith(("/proc", "/sys", "/dev")):
                continue
            try:
                linux.mount(None, point, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY
                            | linux.MS_NOSUID | linux.MS_NODEV)
            except OSError:
                failed.append(point)
        linux.mount("tmpfs", self.work_dir, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    f"size={self.limits.tmpfs_mb}m,mode=0700")
        self.isolation["spec"] = ("no network, read-only file system, private tmpfs" if not failed
                                  else f"no network, read-only but {', '.join(failed)}, private tmpfs")

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        linux.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a job are reaped here, not by init
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the renderer decides when we stop (stdin EOF)
        os.set_blocking(0, False)
        self.selector.register(0, selectors.EVENT_READ, "stdin")
        self.selector.register(wake_r, selectors.EVENT_READ, "signal")
        if self.code_box is not None:
            self.selector.register(self.code_box.control, selectors.EVENT_READ, "code box")
            self.selector.register(self.code_box.stderr, selectors.EVENT_READ, "code box stderr")
        self._replenish()
        send({"ready": True, "isolation": self.isolation, "pid": os.getpid()})
        while True:
            deadlines = [j.deadline for j in self.jobs.values() if j.pid]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for key, _ in self.selector.select(timeout):
                if key.data == "stdin":
                    if not self._read_stdin():
                        self._shutdown()
                        return
                elif key.data == "signal":
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif key.data == "code box":
                    self._read_code_box()
                elif key.data == "code box stderr":
                    assert self.code_box is not None
                    if not self.code_box.forward_stderr():
                        self.selector.unregister(self.code_box.stderr)
                elif isinstance(key.data, SpecWorker):
                    self._read_worker(key.data)
                elif isinstance(key.data, tuple):  # ("scratch", job): a code job's box sends its handle
                    self._receive_scratch(key.data[1])
                else:
                    self._read_child(key.data)
            self._reap()
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if job.pid and now >= job.deadline and job.killed_for is None:
                    limit = self._limits(job).timeout_s
                    job.killed_for = f"timed out after {limit:g} s (wall clock)"
                    self._kill(job)

    def _read_stdin(self) -> bool:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.stdin_buffer += chunk
        while b"\n" in self.stdin_buffer:
            line, self.stdin_buffer = self.stdin_buffer.split(b"\n", 1)
            if line.strip():
                self._handle(json.loads(line), line)
        return True

    def _handle(self, request: dict[str, Any], line: bytes) -> None:
        if request["op"] == "cancel":
            job = self.jobs.get(request["id"])
            if job is not None and job.pid and job.killed_for is None:
                job.killed_for = "cancelled"
                self._kill(job)
            return
        job_id = request["id"]
        if request["mode"] == "code":
            job = Job(id=job_id, job_type=request["job_type"], mode="code", request={}, directory=None,
                      marks={"received": time.monotonic()} if self.trace else None)
            self.jobs[job_id] = job
            self._start_code(job, request)
            return
        directory = os.path.join(self.work_dir, job_id)
        os.makedirs(directory, mode=0o700)
        job = Job(id=job_id, job_type=request["job_type"], mode=request["mode"], request=request,
                  directory=directory)
        self.jobs[job_id] = job
        self._start_spec(job, line)

    def _limits(self, job: Job) -> Limits:
        return self.limits if job.mode == "code" else self.spec_limits

    def _start_code(self, job: Job, request: dict[str, Any]) -> None:
        """Hand the job to the code box. The code zygote gets descriptors only: the job itself is in a
        memfd that only the job's own process reads, so no job's data enters the process every code
        job is forked from."""
        if self.code_box is None:
            self._finish(job, error="code mode is off on this renderer")
            return
        memfd = os.memfd_create("job", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        _write_all(memfd, json.dumps({"job_type": request["job_type"], "code": request["code"],
                                      "title": request.get("title", "")}).encode())
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_WRITE)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        job.slot, self.next_slot = self.next_slot, self.next_slot + 1
        try:
            self.code_box.start(job.slot, job.job_type, [memfd, write_fd, theirs.fileno()])
        except OSError:
            for fd in (read_fd, write_fd):
                os.close(fd)
            ours.close()
            theirs.close()
            self._finish(job, error="the code box is not running", given_back=True)
            return
        finally:
            os.close(memfd)  # the code box has its own copy of it, or none
        os.close(write_fd)
        theirs.close()
        os.set_blocking(read_fd, False)
        ours.setblocking(False)
        job.pid, job.pipe, job.buffer, job.handle = -1, read_fd, b"", ours  # pid -1: running in the code box
        job.deadline = time.monotonic() + self.limits.timeout_s
        self.by_slot[job.slot] = job
        self.selector.register(read_fd, selectors.EVENT_READ, job)
        self.selector.register(ours, selectors.EVENT_READ, ("scratch", job))
        self._prestart_check(job)

    def _receive_scratch(self, job: Job) -> None:
        """The handle on the job's scratch directory (its tmpfs, in its own mount namespace), sent by its
        box before the job's code runs; only the first is taken."""
        if job.handle is None:
            return
        with contextlib.suppress(OSError):
            _, fds, _, _ = socket.recv_fds(job.handle, 16, 1)
            if fds and job.scratch < 0 and stat.S_ISDIR(os.fstat(fds[0]).st_mode):
                _mark(job, "started")
                job.scratch = fds.pop(0)
                job.directory = f"/proc/self/fd/{job.scratch}"
            for fd in fds:
                os.close(fd)
        self.selector.unregister(job.handle)
        job.handle.close()
        job.handle = None

    def _read_code_box(self) -> None:
        assert self.code_box is not None
        events, alive = self.code_box.events()
        for event in events:
            job = self.by_slot.pop(int(event.get("slot", 0)), None)
            if job is None:
                continue
            if "refused" in event:
                job.pid = 0
                self._close_pipe(job)
                self._finish(job, error=str(event["refused"]), given_back=True)
                continue
            self._code_ended(job, int(event["status"]), bool(event.get("setup_failed")), event.get("error"))
        if not alive:
            # The code zygote is gone, and every code job with it: this zygote ends too, unanswered, as
            # if it had died itself (what it held is given back by the renderer, which pauses, starts a
            # new one and goes on).
            sys.stderr.write("render zygote: the code box ended; stopping\n")
            self._shutdown()
            raise SystemExit(1)

    def _code_ended(self, job: Job, status: int, setup_failed: bool, error: Any = None) -> None:
        _mark(job, "ended")
        if job.handle is not None:
            self._receive_scratch(job)
        if job.pipe >= 0:
            self._read_child(job)
            self._close_pipe(job)
        job.pid = 0
        if setup_failed and job.killed_for is None:  # its box was never built: the job did not run
            reason = messages.clean_text(error, 500) if isinstance(error, str) and error else ""
            self._finish(job, error=reason or "the code job's sandbox could not be set up", given_back=True)
            return
        if job.directory is None and job.killed_for is None:
            self._finish(job, error="the code job's sandbox sent no scratch directory", given_back=True)
            return
        self._after_stage(job, status)

    def _enter_process(self, keep: tuple[int, ...], limits: Limits) -> None:
        """What every child does first: default signals, a session of its own that dies with the
        zygote, no inherited descriptors but `keep`, and the limits that do not depend on the job."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        low = 3
        for fd in sorted(keep):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 65536)
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * resource.getpagesize()
        memory = current + limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    # --- spec workers -------------------------------------------------------------------------------

    def _replenish(self) -> None:
        """Keep the standby number of spec workers started (at start, and after one ends)."""
        while len(self.spec_workers) < self.spec_standby:
            # Behind the warm ones: the next job goes to a worker that is warm, if there is one.
            self.idle_workers.insert(0, self._fork_spec_worker(warm_up=True))

    def _fork_spec_worker(self, *, warm_up: bool) -> SpecWorker:
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        message_r, message_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(request_w)
                os.close(message_r)
                self._enter_process((request_r, message_w), self.spec_limits)
                self._serve_specs(request_r, message_w, warm_up)
                os._exit(0)
            except BaseException as exc:
                from ..specs import SpecError

                with contextlib.suppress(BaseException):
                    _child_send(message_w, {"error": _describe(exc),
                                            "code": "invalid_spec" if isinstance(exc, SpecError) else None})
                os._exit(1)
        os.close(request_r)
        os.close(message_w)
        os.set_blocking(message_r, False)
        worker = SpecWorker(pid=pid, requests=request_w, pipe=message_r)
        self.spec_workers[pid] = worker
        self.selector.register(message_r, selectors.EVENT_READ, worker)
        return worker

    def _serve_specs(self, requests_fd: int, out: int, warm_up: bool) -> None:
        """The worker's loop: one job per request line, in the job's directory, until SPEC_WORKER_JOBS
        are done or the zygote goes away. A spec that fails validation is answered and the worker goes
        on; any other failure ends the worker (the caller answers for it)."""
        from .. import specs
        from ..spec import render

        os.environ.clear()
        os.environ["HOME"] = os.environ["TMPDIR"] = "."
        import tempfile

        tempfile.tempdir = "."  # the libraries' temporary files go to the job's own directory
        if warm_up:
            self._prefault(requests_fd)
        requests = os.fdopen(requests_fd, "rb")
        _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
        for _ in range(SPEC_WORKER_JOBS):
            line = requests.readline()
            if not line:
                return
            request = json.loads(line)
            # CPU time adds up over a worker's life: each job gets cpu_s more than what was used so far.
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(usage.ru_utime + usage.ru_stime) + self.spec_limits.cpu_s
            resource.setrlimit(resource.RLIMIT_CPU, (soft if cpu_hard == resource.RLIM_INFINITY
                                                     else min(soft, cpu_hard), cpu_hard))
            os.chdir(os.path.join(self.work_dir, request["id"]))
            job_type = request["job_type"]
            progress = _PacedProgress(out)
            answer: dict[str, Any]
            try:
                # Validated here, not in the renderer: checking a spec of 100,000 rows is CPU work too.
                specs.validate(job_type, request["spec"])
                progress(3, "spec validated")
                preview = render(job_type, request["spec"], request.get("title", ""),
                                 Path(f"document.{EXTENSIONS[job_type]}"), progress)
                answer = {"done": True, "preview": preview}
            except specs.SpecError as exc:
                answer = {"error": str(exc), "code": "invalid_spec"}
            finally:
                progress.close()
            _child_send(out, answer)
            os.chdir("/")

    def _prefault(self, requests_fd: int) -> None:
        """Render the sample documents once, before the first job. A forked worker shares the zygote's
        pages until it writes to them, and a render writes to many (every object it uses has its reference
        count changed): the first job of a fresh worker took 23-47 ms where the next took 12 (a small pdf,
        end to end), each page copied on its first write. Done here, while the worker waits for its first
        job, that copying is not in any job's time. A job that comes meanwhile waits for one sample at most
        (the warm-up takes ~110 ms in all); a warm-up that fails leaves the worker to serve cold."""
        os.chdir(self.work_dir)
        try:
            for job_type in SAMPLE_SPECS:
                if select.select([requests_fd], [], [], 0)[0]:
                    return  # a job is waiting: it goes first
                warm_renders([job_type])
        except Exception:  # only the warm-up is lost; a job's own failure is reported
            pass
        finally:
            os.chdir("/")

    def _start_spec(self, job: Job, line: bytes) -> None:
        for _ in range(2):
            # A worker forked here, for a job already waiting, does not warm up first (its job would wait).
            worker = (self.idle_workers.pop() if self.idle_workers else self.successors.pop(0) if self.successors
                      else self._fork_spec_worker(warm_up=False))
            try:
                _write_all(worker.requests, line + b"\n")
            except OSError:  # it died while idle (reaped soon): never use it again
                self._retire(worker)
                continue
            worker.job, job.worker, job.pid = job, worker, worker.pid
            job.deadline = time.monotonic() + self.spec_limits.timeout_s
            if worker.served == SPEC_WORKER_JOBS - SUCCESSOR_LEAD_JOBS:
                # Its successor starts now and warms up (_prefault) while it serves its last jobs.
                self.successors.append(self._fork_spec_worker(warm_up=True))
            return
        self._finish(job, error="the spec worker could not be started", given_back=True)

    def _retire(self, worker: SpecWorker) -> None:
        """No more jobs for this worker: it reads the end of its requests and exits (or is already dead).
        A successor started ahead takes its place."""
        if worker in self.idle_workers:
            self.idle_workers.remove(worker)
        if worker in self.successors:
            self.successors.remove(worker)
        elif worker.requests >= 0 and self.successors:
            self.idle_workers.insert(0, self.successors.pop(0))  # behind any warmer
        if worker.requests >= 0:
            os.close(worker.requests)
            worker.requests = -1

    def _read_worker(self, worker: SpecWorker) -> None:
        """A spec worker's messages: progress is forwarded (the last of a batch), an answer ends its job.
        A worker runs our code only, but over a job's data: anything it says out of turn or out of
        shape ends it (and its job, if it has one), never this process."""
        worker.buffer, lines, end = _read_messages(worker.pipe, worker.buffer)
        progress: tuple[Job, Progress] | None = None
        fault = f"a line longer than {messages.MAX_CHILD_LINE} bytes" if end == "overflow" else None
        for line in lines:
            job = worker.job
            try:
                if job is None:
                    raise BadMessage("a message while it had no job")
                message = messages.parse_child(line, SPEC_WORKER)
            except BadMessage as exc:
                fault = str(exc)
                break
            if isinstance(message, Progress):
                progress = (job, message)
                continue
            if progress is not None:
                _forward_progress(*progress)
                progress = None
            assert isinstance(message, Done | Failed)
            self._worker_answered(worker, job, message)
        if progress is not None and progress[0].killed_for is None:
            _forward_progress(*progress)
        if fault is not None:
            job = worker.job
            if job is not None and job.killed_for is None:
                job.killed_for = f"the spec worker sent a malformed message ({fault})"
            self._retire(worker)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)  # its job ends as it is reaped (_worker_ended)
        if end is not None or fault is not None:
            self._close_worker_pipe(worker)

    def _worker_answered(self, worker: SpecWorker, job: Job, message: Done | Failed) -> None:
        worker.job, job.worker, job.pid = None, None, 0
        worker.served += 1
        clean = isinstance(message, Done) or message.code == "invalid_spec"
        if (clean and job.killed_for is None and worker.served < SPEC_WORKER_JOBS
                and len(self.idle_workers) < self.spec_standby):
            self.idle_workers.append(worker)
        else:
            self._retire(worker)
            if job.killed_for is not None or not clean:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
        if job.killed_for is not None:
            self._finish(job, error=job.killed_for)
        elif isinstance(message, Failed):
            self._finish(job, error=message.error, code=message.code)
        else:
            # Our own renderer made it (and its preview, from what it wrote): no output check.
            job.file = f"document.{EXTENSIONS[job.job_type]}"
            self._finish(job, preview=message.preview or {})

    def _close_worker_pipe(self, worker: SpecWorker) -> None:
        if worker.pipe >= 0:
            self.selector.unregister(worker.pipe)
            os.close(worker.pipe)
            worker.pipe = -1

    def _worker_ended(self, worker: SpecWorker, status: int) -> None:
        if worker.pipe >= 0:
            self._read_worker(worker)  # its last answer may still be in the pipe
            self._close_worker_pipe(worker)
        self._retire(worker)
        job = worker.job
        if job is not None:
            worker.job, job.worker, job.pid = None, None, 0
            self._after_stage(job, status)
        if worker.served or job is not None:
            self._replenish()  # not for a worker that died before its first job: no fork loop

    # --- children's messages and ends --------------------------------------------------------------

    def _read_child(self, job: Job) -> None:
        """A code job's messages (or its output check's). The job's process runs the model's code and
        can write anything on its pipe: each line is parsed strictly (messages.py); one that is not a
        message it may send ends that job (its box is killed) and nothing else. Its first final word
        counts (its forks may say theirs too). Progress is forwarded, the last of a batch only."""
        checking = job.stage == "check"
        job.buffer, lines, end = _read_messages(job.pipe, job.buffer)
        progress: Progress | None = None
        fault = f"a line longer than {messages.MAX_CHILD_LINE} bytes" if end == "overflow" else None
        for line in lines:
            try:
                message = messages.parse_child(line, CHECKER if checking else CODE_CHILD)
            except BadMessage as exc:
                fault = str(exc)
                break
            if isinstance(message, Progress):
                progress = message
            elif not job.messages:  # the first final word counts (the code's forks may say theirs too)
                job.messages.append(message)
                _mark(job, "verdict" if checking else "done")
                if isinstance(message, Done) and not checking and self.code_box is not None:
                    # Done means "look": the box is ended now rather than left to exit, and its
                    # document is checked as soon as nothing of it runs (codezygote.py, _end).
                    job.ending = True
                    self.code_box.end(job.slot)
        if progress is not None and job.killed_for is None:
            _forward_progress(job, progress)
        if fault is not None and job.killed_for is None:
            job.killed_for = (f"the output check sent a malformed message ({fault})" if checking else
                              f"the job sent a malformed message on its message pipe ({fault})")
            self._kill(job)
        if end is not None or fault is not None or (checking and job.messages):
            self._close_pipe(job)
            if checking:
                self._after_check(job)  # its verdict, or the end of its pipe (it ended, or was killed)

    def _close_pipe(self, job: Job) -> None:
        if job.pipe >= 0:
            self.selector.unregister(job.pipe)
            os.close(job.pipe)
            job.pipe = -1

    def _reap(self) -> None:
        for pid, status in linux.reaped():
            worker = self.spec_workers.pop(pid, None)
            if worker is not None:
                self._worker_ended(worker, status)
            # else an orphan of a spec worker, adopted as subreaper (code jobs end in the code box)

    def _after_stage(self, job: Job, status: int) -> None:
        """A job's process has ended: a spec worker that died under its job, a code job's process, or its
        output check. A code job that says it is done is not believed: its document goes to the check."""
        final = job.messages[-1] if job.messages else None
        if job.killed_for is not None:
            return self._finish(job, error=job.killed_for)
        if isinstance(final, Failed):
            return self._finish(job, error=final.error, code=final.code)
        ended = job.ending or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)  # killed after its Done
        if job.mode != "code" or not ended or not isinstance(final, Done):
            return self._finish(job, error=_exit_reason(status, self._limits(job)))
        found = self._output_file(job)
        if found.startswith("!"):
            return self._finish(job, error=found[1:])
        job.file = found
        return self._start_check(job)

    def _prestart_check(self, job: Job) -> None:
        """Start the job's output check (checker.py) beside the job, in a box of its own forked from the
        pristine code zygote: it waits there for the document, so its box is built while the code
        runs, and a check costs the job the reading of its document only. Where it cannot start, the
        job fails when it comes to its check."""
        assert self.code_box is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        channel, channel_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        job.check_slot, self.next_slot = self.next_slot, self.next_slot + 1
        try:
            self.code_box.check(job.check_slot, job.job_type, [theirs.fileno(), write_fd, channel_theirs.fileno()])
        except OSError:
            ours.close()
            channel.close()
            os.close(read_fd)
            return
        finally:
            theirs.close()
            channel_theirs.close()
            os.close(write_fd)
        job.check_document, job.check_pipe, job.check_channel = ours, read_fd, channel

    def _start_check(self, job: Job) -> None:
        """Copy the saved document, by the kernel, into a sealed memfd (nobody can change it from now
        on, and its bytes never enter this process), and hand a read-only descriptor on it to the job's
        output check. Its verdict, on its pipe, decides; the end of that pipe is the end of the check."""
        assert job.directory is not None and job.file is not None
        if job.check_document is None:
            return self._finish(job, error="the output check could not be started", given_back=True)
        try:
            source = os.open(os.path.join(job.directory, job.file), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            return self._finish(job, error=f"the saved document cannot be read: {exc.strerror}")
        try:
            info = os.fstat(source)
            if not stat.S_ISREG(info.st_mode):
                return self._finish(job, error=f"{job.file} is not a regular file")
            job.document = os.memfd_create("document", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            _send_file(source, job.document, info.st_size)
            fcntl.fcntl(job.document, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                        | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        except OSError as exc:
            return self._finish(job, error=f"the saved document cannot be read: {exc.strerror}",
                                given_back=_host_fault(exc))
        finally:
            os.close(source)
        readonly = os.open(f"/proc/self/fd/{job.document}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            socket.send_fds(job.check_document, [b"d"], [readonly])
        except OSError:  # the check is gone (its box refused, or died waiting)
            return self._finish(job, error="the output check could not be started", given_back=True)
        finally:
            os.close(readonly)
        os.set_blocking(job.check_pipe, False)
        job.stage, job.messages, job.buffer = "check", [], b""
        job.slot, job.pid, job.pipe, job.check_pipe = job.check_slot, -1, job.check_pipe, -1
        job.deadline = time.monotonic() + CHECK_TIMEOUT_S
        self.selector.register(job.pipe, selectors.EVENT_READ, job)
        _mark(job, "document sent")

    def _after_check(self, job: Job) -> None:
        verdict = job.messages[-1] if job.messages else None
        if job.killed_for in ("cancelled", "the renderer is stopping"):
            return self._finish(job, error=job.killed_for)
        if job.killed_for is not None:
            reason = (f"timed out after {CHECK_TIMEOUT_S:g} s" if job.killed_for.startswith("timed out")
                      else job.killed_for)
            return self._finish(job, error=f"the saved document could not be checked: {reason}", code=INVALID_OUTPUT)
        if isinstance(verdict, Checked):
            return self._finish(job, preview=verdict.preview)
        if isinstance(verdict, Failed) and verdict.code == INVALID_OUTPUT:
            return self._finish(job, error=verdict.error, code=INVALID_OUTPUT)
        if isinstance(verdict, Failed):  # its box could not be built: not the job's doing
            return self._finish(job, error=verdict.error, given_back=True)
        return self._finish(job, error=f"the saved document could not be checked: the check ended without an "
                            f"answer (it may need more than {checker.CHECK_MEMORY_MB} MB of memory or "
                            f"{checker.CHECK_CPU_S} s of CPU time)", code=INVALID_OUTPUT)

    def _output_file(self, job: Job) -> str:
        assert job.directory is not None
        ext = EXTENSIONS[job.job_type]
        names = [n for n in os.listdir(job.directory) if n.lower().endswith("." + ext)]
        if not names:
            return f"!the code saved no .{ext} file in its output directory (use output_path)"
        if len(names) > 1:
            return f"!the code saved {len(names)} .{ext} files ({', '.join(sorted(names)[:5])}); save exactly one"
        if not stat.S_ISREG(os.lstat(os.path.join(job.directory, names[0])).st_mode):
            return f"!{names[0]} is not a regular file"
        return names[0]

    def _finish(self, job: Job, error: str | None = None, preview: dict[str, Any] | None = None,
                code: str | None = None, given_back: bool = False) -> None:
        answer: ZygoteMessage
        if error is None:
            try:
                answer = Rendered(job.id, self._copy_out(job), preview or {})
                if job.marks is not None:
                    _mark(job, "answered")
                    answer = Rendered(answer.id, answer.file, answer.preview, _phases(job.marks))
            except OSError as exc:  # the host's doing (its disk full) or the document's (not a file)
                answer = RenderFailed(job.id, f"the saved document cannot be copied out: {exc.strerror}",
                                      given_back=_host_fault(exc))
        elif job.killed_for == "cancelled":
            answer = RenderFailed(job.id, "cancelled", cancelled=True)
        else:
            answer = RenderFailed(job.id, error, given_back=given_back, code=code)
        if job.check_slot and self.code_box is not None:
            self.code_box.kill(job.check_slot)  # done, or no longer needed (it may still be waiting)
        for channel in (job.check_document, job.check_channel):
            if channel is not None:
                channel.close()
        job.check_document = job.check_channel = None
        for fd in (job.document, job.check_pipe):
            if fd >= 0:
                os.close(fd)
        job.document = job.check_pipe = -1
        self._release(job)
        self.jobs.pop(job.id, None)
        send(answer)

    def _copy_out(self, job: Job) -> str:
        """Copy the document to the host's output directory, by the kernel (sendfile): no job's bytes
        pass through this process, which spec workers are forked from. A code job's document is the
        sealed copy its check read; a spec job's is taken from its directory, a regular file only
        (never through a symlink)."""
        name = f"{job.id}.{EXTENSIONS[job.job_type]}"
        if job.document >= 0:
            source = os.dup(job.document)
        else:
            assert job.file is not None and job.directory is not None
            source = os.open(os.path.join(job.directory, job.file), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = os.fstat(source)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=self.out_fd)
            try:
                _send_file(source, target, info.st_size)
            except OSError:  # a part written (the disk full): nothing of it stays to fill the disk
                os.unlink(name, dir_fd=self.out_fd)
                raise
            finally:
                os.close(target)
        finally:
            os.close(source)
        return name

    def _release(self, job: Job) -> None:
        """What a finished job held: a spec job's directory; a code job's pipes and the handle on its
        scratch tmpfs (closing the last handle frees the tmpfs, whose namespace is gone with the job)."""
        if job.mode == "code":
            self.by_slot.pop(job.slot, None)
            if job.handle is not None:
                self.selector.unregister(job.handle)
                job.handle.close()
                job.handle = None
            self._close_pipe(job)
            if job.scratch >= 0:
                os.close(job.scratch)
                job.scratch = -1
            job.directory = None
        elif job.directory is not None:
            shutil.rmtree(job.directory, ignore_errors=True)

    def _kill(self, job: Job) -> None:
        if job.mode == "code":
            # The job's keeper: its process (PID 1 of the job's namespace) dies with it, and with that
            # process every other process of the job, wherever it went (setsid, double fork).
            if job.pid and self.code_box is not None:
                self.code_box.kill(job.slot)
        elif job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _shutdown(self) -> None:
        for job in list(self.jobs.values()):
            job.killed_for = "the renderer is stopping"
            self._kill(job)
        if self.code_box is not None:
            self.code_box.close()


# Errors that say the host ran out of something (memory, descriptors, disk), not that the job did wrong.
HOST_FAULTS = frozenset({errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT})


def _host_fault(exc: OSError) -> bool:
    return exc.errno in HOST_FAULTS


def _read_messages(fd: int, buffer: bytes) -> tuple[bytes, list[bytes], str | None]:
    """What a child has written since, as lines: (the unfinished rest, the whole lines, the end: None
    while the pipe is open, "eof", or "overflow" when a line grows past messages.MAX_CHILD_LINE). At
    most MAX_READS chunks at a time, so a child that writes without end cannot hold the loop."""
    lines: list[bytes] = []
    for _ in range(MAX_READS):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return buffer, lines, None
        except OSError:
            chunk = b""
        if not chunk:
            return buffer, lines, "eof"
        *complete, buffer = (buffer + chunk).split(b"\n")
        lines += complete
        if len(buffer) > messages.MAX_CHILD_LINE:
            return b"", lines, "overflow"
    return buffer, lines, None


def _mark(job: Job, step: str) -> None:
    if job.marks is not None and step not in job.marks:
        job.marks[step] = time.monotonic()


# A traced code job's phases: (name, from step, to step).
PHASES = (("handoff", "received", "started"), ("code", "started", "done"), ("box end", "done", "ended"),
          ("to check", "ended", "document sent"), ("check", "document sent", "verdict"),
          ("copy out", "verdict", "answered"), ("total", "received", "answered"))


def _phases(marks: dict[str, float]) -> dict[str, float]:
    return {name: round((marks[end] - marks[start]) * 1000, 3) for name, start, end in PHASES
            if start in marks and end in marks}


def _forward_progress(job: Job, progress: Progress) -> None:
    send(JobProgress(job.id, progress.percent, progress.text))


def _send_file(source: int, target: int, size: int) -> None:
    """Copy size bytes from the start of source to target, in the kernel."""
    offset = 0
    while offset < size:
        sent = os.sendfile(target, source, offset, min(size - offset, 1 << 30))
        if sent == 0:
            raise OSError(errno.EIO, "the file ended early")
        offset += sent


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _wait_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _exit_reason(status: int, limits: Limits) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return f"exceeded the CPU time limit of {limits.cpu_s} s"
        if sig == signal.SIGXFSZ:
            return f"tried to write a file larger than the limit of {limits.file_mb} MB"
        if sig == signal.SIGKILL:
            return f"was killed (CPU time limit of {limits.cpu_s} s or memory limit of {limits.memory_mb} MB)"
        return f"was killed by signal {signal.Signals(sig).name}"
    return f"exited with status {os.WEXITSTATUS(status)} without finishing"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "ran out of memory (the memory limit was reached)"
    if isinstance(exc, SyntaxError) and exc.filename == "<document code>":
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    lines = [f"{type(exc).__name__}: {exc}"]
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<document code>"]
    if frames:
        lines.append(f"(line {frames[-1].lineno} of the document code)")
    from ..specs import SpecError

    if isinstance(exc, SpecError):
        return str(exc)
    return " ".join(lines)[:1000]


class _PacedProgress:
    """A spec render's progress callback: a report goes to the zygote once the render has run
    SPEC_PROGRESS_AFTER_S, then at most every SPEC_PROGRESS_EVERY_S. Of the reports in between, the
    latest is held back and sent when its time comes, by a timer signal if the render says nothing more
    by then (a stage such as "saving" or "laying out pages" can take seconds). close() before the
    render's answer: nothing held back goes out after it."""

    __slots__ = ("_held", "_next", "_out", "_sending")

    def __init__(self, out: int) -> None:
        self._out = out
        self._next = time.monotonic() + SPEC_PROGRESS_AFTER_S
        self._held: tuple[int, str] | None = None
        self._sending = False
        signal.signal(signal.SIGALRM, self._on_alarm)

    def __call__(self, progress: int, message: str) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._send((progress, message))
            return
        first, self._held = self._held is None, (progress, message)
        if first:  # held before the timer is set: an alarm due at once finds it
            # (at least 1 ms: a timer of less than a microsecond would be no timer at all)
            signal.setitimer(signal.ITIMER_REAL, max(self._next - now, 0.001))

    def close(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._held = None

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        # Runs in the render's thread, between two of its bytecodes (a long call into C, zlib's or lxml's,
        # puts it off until it returns), never inside a send of this callback's own. A report it cannot
        # send is dropped here, not raised into the render: the answer meets the same pipe, and its
        # failure ends the worker where that is handled.
        if self._held is not None and not self._sending:
            with contextlib.suppress(Exception):
                self._send(self._held)

    def _send(self, report: tuple[int, str]) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._held = None
        self._next = time.monotonic() + SPEC_PROGRESS_EVERY_S
        self._sending = True
        try:
            _child_send(self._out, {"progress": report[0], "message": report[1]})
        finally:
            self._sending = False


def _child_send(fd: int, message: ChildMessage | dict[str, Any]) -> None:
    """A child's message to the zygote, as messages.py reads it (its text cleaned and bounded)."""
    _write_all(fd, messages.encode(_child_message(message) if isinstance(message, dict) else message))


def _child_message(data: dict[str, Any]) -> ChildMessage:
    if "progress" in data:
        return Progress(int(data["progress"]), str(data.get("message", "")))
    if "done" in data:
        return Done(data.get("preview"))
    if "checked" in data:
        return Checked(data["preview"])
    return Failed(str(data["error"]), data.get("code"))


def send(message: ZygoteMessage | dict[str, Any]) -> None:
    """A message to the renderer, as messages.py reads it (its text cleaned and bounded)."""
    sys.stdout.buffer.write(messages.encode(_zygote_message(message) if isinstance(message, dict) else message))
    sys.stdout.flush()


def _zygote_message(data: dict[str, Any]) -> ZygoteMessage:
    if "ready" in data:
        if not data["ready"]:
            return NotReady(str(data.get("error", "")))
        return Ready({str(k): str(v) for k, v in data.get("isolation", {}).items()}, int(data.get("pid", os.getpid())))
    if "progress" in data:
        return JobProgress(str(data["id"]), int(data["progress"]), str(data.get("message", "")))
    if data.get("ok"):
        return Rendered(str(data["id"]), str(data["file"]), dict(data.get("preview") or {}))
    return RenderFailed(str(data["id"]), str(data.get("error", "")), given_back=bool(data.get("given_back")),
                        code=data.get("code"), cancelled=bool(data.get("cancelled")))


def refuse(reason: str) -> NoReturn:
    """End the zygote at start, saying why in one line (the renderer then refuses to start)."""
    send({"ready": False, "error": f"code jobs cannot be isolated here: {reason}"})
    raise SystemExit(1)


def main() -> None:
    config = json.loads(sys.argv[1])
    code_box = None
    if config.get("code"):
        try:
            code_box = CodeBox.launch(config.get("code_limits", {}),  # it warms up while we do
                                      jobs=int(config.get("spec_workers", 1)))
        except BoxError as exc:
            refuse(str(exc))
    warm()
    from ..spec import calc

    calc.warm()  # the formula engine, for spec workers only (the code zygote's warm() leaves it out)
    # Everything imported so far is shared with the children copy-on-write; without this, the first
    # full garbage collection in a child touches every object and copies every page (~70 ms).
    gc.freeze()
    if code_box is not None:
        try:
            code_box.wait_ready(BOX_START_S)
        except BoxError as exc:
            refuse(str(exc))
    zygote = Zygote(config["out_dir"], config["work_dir"], Limits.from_json(config.get("code_limits", {})),
                    Limits.from_json(config.get("spec_limits", {})), int(config.get("spec_workers", 1)),
                    code_box=code_box, trace=bool(config.get("trace")))
    zygote.isolate()
    zygote.run()


if __name__ == "__main__":
    main()
