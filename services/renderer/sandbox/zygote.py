"""The zygote: a warm parent that forks the processes that render.

It is started by the renderer as its own process, with an almost empty environment, and speaks JSON
lines on stdin/stdout. At start it imports the document libraries (so a child costs a fork, not half a
second of imports) and, where it runs as root, isolates itself once:

* a new network namespace: the children have no network at all (not even a working loopback);
* a new mount namespace in which every mount is read-only (/tmp included), and the job directories
  live on a small private tmpfs mounted at /dev/shm (so /dev/shm is private too), so nothing a job writes
  reaches the host, and no directory of the host has to be opened to the jobs' uids; finished documents
  are copied out through a directory handle opened before isolating.

Spec jobs (our own renderers, fed data) run in long-lived spec workers forked from the zygote: a worker
takes one job at a time over a pipe and serves up to SPEC_WORKER_JOBS of them before it is replaced,
so a small document costs its render, not a fork, copy-on-write faults and an exit. A worker that fails
a job in any way but a clean validation error, is cancelled or runs out of time is killed, never reused.
Code jobs always get a fresh child of their own.

Each code job's child additionally runs as a uid of its own (no other process has it), with no
supplementary groups and no_new_privs, so it cannot read other processes' files or /proc entries, and
every process it starts can be killed at once (kill(-1) as that uid). Every child gets rlimits on CPU
time, address space, file size, processes and open files, and a wall-clock deadline; the code child
has an empty environment and its job directory as working directory.

Where a step is not possible (not root, no namespaces), the zygote says so in its "ready" message and
the renderer logs it at start.

Requests (one JSON object per line):
  {"op": "render", "id": ..., "job_type": ..., "mode": "spec"|"code", "spec"|"code": ..., "title": ...}
  {"op": "cancel", "id": ...}
Answers:
  {"ready": true, "isolation": {...}}
  {"id": ..., "progress": 0-100, "message": ...}
  {"id": ..., "ok": true, "file": <host path>, "preview": {...}}
  {"id": ..., "ok": false, "error": ..., "retryable": false, "code": "invalid_spec" | null}
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import resource
import selectors
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from docjobs.jobtypes import EXTENSIONS

from . import linux

UID_BASE = 2_000_000_000  # far above any account
UIDS_PER_ZYGOTE = 64  # each zygote takes a block of its own, from its pid, so two never share a uid
PR_SET_CHILD_SUBREAPER = 36
MAX_MESSAGE = 1024 * 1024
SPEC_WORKER_JOBS = 100  # a spec worker is replaced after this many jobs (bounded heap growth)


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
    directory: str
    uid: int | None
    pid: int = 0
    pipe: int = -1
    deadline: float = 0.0
    buffer: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)
    killed_for: str | None = None
    file: str | None = None
    worker: SpecWorker | None = None


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


def warm() -> None:
    """Import what renders need (and what model-written code usually imports) once, before forking."""
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
    from ..spec import document, pdf, presentation, spreadsheet  # noqa: F401

    warm_renders()


def warm_renders() -> None:
    """Render and read back one small document of each type: the libraries import much of themselves
    lazily (writers, XML and zip machinery) and fill caches on first use. Done once here, every child
    starts warm instead of paying ~25 ms each."""
    import tempfile

    from .. import specs
    from ..preview import preview
    from ..spec import render

    samples: dict[str, dict[str, Any]] = {
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
    with tempfile.TemporaryDirectory(prefix="docjobs-warm-") as tmp:
        for job_type, spec in samples.items():
            specs.validate(job_type, spec)
            path = Path(tmp) / f"warm.{EXTENSIONS[job_type]}"
            render(job_type, spec, "warm-up", path, lambda _p, _m: None)
            preview(job_type, path)


class Zygote:
    def __init__(self, out_dir: str, work_dir: str, limits: Limits, spec_limits: Limits,
                 spec_workers: int = 1) -> None:
        self.limits = limits
        self.spec_limits = spec_limits
        self.spec_standby = spec_workers  # spec workers started ahead, before any job asks
        self.spec_workers: dict[int, SpecWorker] = {}
        self.idle_workers: list[SpecWorker] = []
        self.out_fd = os.open(out_dir, os.O_DIRECTORY | os.O_RDONLY)
        self.work_dir = work_dir  # where job directories live: set by isolate()
        self.made_job_root: str | None = None  # a directory isolate() made for them, removed at the end
        self.root = os.geteuid() == 0
        self.isolation: dict[str, str] = {}
        self.jobs: dict[str, Job] = {}
        self.by_pid: dict[int, Job] = {}
        first = UID_BASE + (os.getpid() % 2**21) * UIDS_PER_ZYGOTE
        self.free_uids = list(range(first + UIDS_PER_ZYGOTE - 1, first - 1, -1))
        self.selector = selectors.DefaultSelector()
        self.stdin_buffer = b""

    # --- isolation, once ---------------------------------------------------------------------------

    def isolate(self) -> None:
        if not self.root:
            self.isolation = {
                "network": "none: not running as root, so no network namespace",
                "filesystem": "none: job directories are on the host file system",
                "uid": "shared: code runs as the renderer's own user",
            }
            os.makedirs(self.work_dir, exist_ok=True)
            return
        os.makedirs(self.work_dir, exist_ok=True)
        try:
            linux.unshare(linux.CLONE_NEWNET | linux.CLONE_NEWNS)
        except OSError as exc:
            self.isolation = {"network": f"none: {exc}", "filesystem": f"none: {exc}", "uid": "per job"}
            self.work_dir = self._host_job_root()
            return
        self.isolation["network"] = "namespace: no interfaces up"
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
        self.work_dir = self._private_job_root()
        self.isolation["filesystem"] = ("read-only, private tmpfs for job directories" if not failed
                                        else f"read-only except {', '.join(failed)}; private tmpfs for jobs")
        self.isolation["uid"] = "per job"

    # Where job directories live, as root. Code jobs run as uids of their own, and the libraries hand out
    # absolute paths (tempfile does), so those uids must be able to pass through every directory above
    # the job directories; the permissions of a directory docjobs did not create are never changed to
    # that end. A place where the way is not open is refused with one line, and the zygote exits (the
    # renderer then cannot start: it cannot isolate code jobs).

    def _private_job_root(self) -> str:
        """In the mount namespace: a private, size-limited tmpfs, visible in this namespace only, at
        /dev/shm (the way there is open on any Linux), or over the renderer's work directory where there
        is no /dev/shm. /tmp and the rest stay as they are, read-only: masking /tmp would also hide
        a Python installation or checkout that lives there."""
        tmpfs = f"size={self.limits.tmpfs_mb}m,mode=0711"
        if os.path.isdir("/dev/shm") and closed_to_others("/dev") is None:
            linux.mount("tmpfs", "/dev/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, tmpfs)
            return "/dev/shm"
        closed = closed_to_others(os.path.dirname(os.path.realpath(self.work_dir)))
        if closed is not None:
            refuse(f"code jobs could not reach their directories under {self.work_dir}: {closed}")
        linux.mount("tmpfs", self.work_dir, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, tmpfs)
        return self.work_dir

    def _host_job_root(self) -> str:
        """Without a mount namespace, job directories are on the host: in the renderer's work directory
        (made by the renderer for the zygote, so ours to open) when the way to it is open, else in a
        directory made for them in the system's temporary directory, removed when the zygote stops."""
        closed = closed_to_others(os.path.dirname(os.path.realpath(self.work_dir)))
        if closed is None:
            os.chmod(self.work_dir, 0o711)
            return self.work_dir
        temporary = tempfile.gettempdir()
        closed = closed_to_others(temporary)
        if closed is not None:
            refuse(f"code jobs could not reach their directories under {self.work_dir} or {temporary}: {closed}")
        made = tempfile.mkdtemp(prefix="docjobs-jobs-", dir=temporary)
        os.chmod(made, 0o711)
        self.made_job_root = made
        return made

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
                elif isinstance(key.data, SpecWorker):
                    self._read_worker(key.data)
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
        if request["mode"] == "code" and self.root and not self.free_uids:
            send({"id": job_id, "ok": False, "error": "too many code jobs at once", "retryable": True})
            return
        uid = self.free_uids.pop() if (request["mode"] == "code" and self.root) else None
        directory = os.path.join(self.work_dir, job_id)
        os.makedirs(directory, mode=0o700)
        if uid is not None:
            os.chown(directory, uid, uid)
        job = Job(id=job_id, job_type=request["job_type"], mode=request["mode"], request=request,
                  directory=directory, uid=uid)
        self.jobs[job_id] = job
        if job.mode == "spec":
            self._start_spec(job, line)
        else:
            self._start(job, self._render_child)

    def _limits(self, job: Job) -> Limits:
        return self.limits if job.mode == "code" else self.spec_limits

    def _start(self, job: Job, target: Any) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child
            try:
                os.close(read_fd)
                self._enter_child(job, write_fd)
                target(job, write_fd)
                os._exit(0)
            except BaseException as exc:
                from ..specs import SpecError

                _child_send(write_fd, {"error": _describe(exc),
                                       "code": "invalid_spec" if isinstance(exc, SpecError) else None})
                os._exit(1)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        job.pid, job.pipe, job.buffer = pid, read_fd, b""
        job.deadline = time.monotonic() + self._limits(job).timeout_s
        self.by_pid[pid] = job
        self.selector.register(read_fd, selectors.EVENT_READ, job)

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

    def _enter_child(self, job: Job, write_fd: int) -> None:
        limits = self._limits(job)
        self._enter_process((write_fd,), limits)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        # The job's directory is opened before dropping privileges and entered by handle: the job's uid
        # need not (and cannot) look up the directories above it. Paths from here on are relative.
        directory = os.open(job.directory, os.O_RDONLY | os.O_DIRECTORY)
        if job.uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
            os.setgroups([])
            os.setgid(job.uid)
            os.setuid(job.uid)
        if job.mode == "code":
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        os.fchdir(directory)
        os.close(directory)
        os.environ.clear()
        os.environ["HOME"] = os.environ["TMPDIR"] = "."
        import tempfile

        tempfile.tempdir = "."  # the libraries' temporary files go to the job's own directory

    # --- what the children run -------------------------------------------------------------------

    def _render_child(self, job: Job, out: int) -> None:
        """A code job, in its fresh child."""
        ext = EXTENSIONS[job.job_type]
        from ..preview import preview as read_preview

        _child_send(out, {"progress": 10, "message": "running the document code"})
        code = compile(job.request["code"], "<document code>", "exec")
        scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__,
                                 "output_path": f"document.{ext}"}
        exec(code, scope)
        # Read the saved document back: a file the reader cannot open fails the job here. (The zygote
        # checks again, independently, that there is exactly one regular file before copying it out.)
        saved = [n for n in os.listdir(".") if n.lower().endswith("." + ext)]
        if len(saved) == 1 and os.path.isfile(saved[0]) and not os.path.islink(saved[0]):
            _child_send(out, {"progress": 90, "message": "checking the saved document"})
            _child_send(out, {"done": True, "preview": read_preview(job.job_type, Path(saved[0]))})
        else:
            _child_send(out, {"done": True, "preview": {}})

    # --- spec workers -------------------------------------------------------------------------------

    def _replenish(self) -> None:
        """Keep the standby number of spec workers started (at start, and after one ends)."""
        while len(self.spec_workers) < self.spec_standby:
            self.idle_workers.append(self._fork_spec_worker())

    def _fork_spec_worker(self) -> SpecWorker:
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        message_r, message_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(request_w)
                os.close(message_r)
                self._enter_process((request_r, message_w), self.spec_limits)
                self._serve_specs(request_r, message_w)
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

    def _serve_specs(self, requests_fd: int, out: int) -> None:
        """The worker's loop: one job per request line, in the job's directory, until SPEC_WORKER_JOBS
        are done or the zygote goes away. A spec that fails validation is answered and the worker goes
        on; any other failure ends the worker (the caller answers for it)."""
        from .. import specs
        from ..spec import render

        os.environ.clear()
        os.environ["HOME"] = os.environ["TMPDIR"] = "."
        import tempfile

        tempfile.tempdir = "."  # the libraries' temporary files go to the job's own directory
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
            try:
                # Validated here, not in the renderer: checking a spec of 100,000 rows is CPU work too.
                specs.validate(job_type, request["spec"])
                _child_send(out, {"progress": 3, "message": "spec validated"})
                preview = render(job_type, request["spec"], request.get("title", ""),
                                 Path(f"document.{EXTENSIONS[job_type]}"),
                                 lambda p, m: _child_send(out, {"progress": p, "message": m}))
            except specs.SpecError as exc:
                _child_send(out, {"error": str(exc), "code": "invalid_spec"})
            else:
                _child_send(out, {"done": True, "preview": preview})
            os.chdir("/")

    def _start_spec(self, job: Job, line: bytes) -> None:
        for _ in range(2):
            worker = self.idle_workers.pop() if self.idle_workers else self._fork_spec_worker()
            try:
                _write_all(worker.requests, line + b"\n")
            except OSError:  # it died while idle (reaped soon): never use it again
                self._retire(worker)
                continue
            worker.job, job.worker, job.pid = job, worker, worker.pid
            job.deadline = time.monotonic() + self.spec_limits.timeout_s
            return
        self._finish(job, error="the spec worker could not be started")

    def _retire(self, worker: SpecWorker) -> None:
        """No more jobs for this worker: it reads the end of its requests and exits (or is already dead)."""
        if worker in self.idle_workers:
            self.idle_workers.remove(worker)
        if worker.requests >= 0:
            os.close(worker.requests)
            worker.requests = -1

    def _read_worker(self, worker: SpecWorker) -> None:
        worker.buffer, messages, end = _read_messages(worker.pipe, worker.buffer)
        for message in messages:
            job = worker.job
            if job is None:
                continue
            if "progress" in message:
                _forward_progress(job, message)
            else:
                self._worker_answered(worker, job, message)
        if end == "overflow":
            os.kill(worker.pid, signal.SIGKILL)
        if end is not None:
            self._close_worker_pipe(worker)

    def _worker_answered(self, worker: SpecWorker, job: Job, message: dict[str, Any]) -> None:
        worker.job, job.worker, job.pid = None, None, 0
        worker.served += 1
        clean = "done" in message or message.get("code") == "invalid_spec"
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
        elif "error" in message:
            self._finish(job, error=str(message["error"]), code=message.get("code"))
        else:
            job.file = f"document.{EXTENSIONS[job.job_type]}"
            preview = message.get("preview")
            self._finish(job, preview=preview if isinstance(preview, dict) else {})

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
        job.buffer, messages, end = _read_messages(job.pipe, job.buffer)
        for message in messages:
            if "progress" in message:
                _forward_progress(job, message)
            else:
                job.messages.append(message)
        if end == "overflow":
            job.killed_for = job.killed_for or "sent too much output"
            self._kill(job)
        if end is not None:
            self._close_pipe(job)

    def _close_pipe(self, job: Job) -> None:
        if job.pipe >= 0:
            self.selector.unregister(job.pipe)
            os.close(job.pipe)
            job.pipe = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.spec_workers.pop(pid, None)
            if worker is not None:
                self._worker_ended(worker, status)
                continue
            job = self.by_pid.pop(pid, None)
            if job is None:
                continue  # an orphan of some job, adopted as subreaper
            if job.pipe >= 0:
                self._read_child(job)
                self._close_pipe(job)
            job.pid = 0
            self._kill(job)  # whatever the job left running
            self._after_stage(job, status)

    def _after_stage(self, job: Job, status: int) -> None:
        final = job.messages[-1] if job.messages else {}
        if job.killed_for is not None:
            return self._finish(job, error=job.killed_for)
        if "error" in final:
            return self._finish(job, error=str(final["error"]), code=final.get("code"))
        if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0 or not final.get("done"):
            return self._finish(job, error=_exit_reason(status, self._limits(job)))
        found = self._output_file(job)  # a code job's child (spec workers answer in _worker_answered)
        if found.startswith("!"):
            return self._finish(job, error=found[1:])
        job.file = found
        preview = final.get("preview")
        return self._finish(job, preview=preview if isinstance(preview, dict) else {})

    def _output_file(self, job: Job) -> str:
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
                code: str | None = None) -> None:
        answer: dict[str, Any] = {"id": job.id}
        if error is None:
            try:
                answer.update(ok=True, file=self._copy_out(job), preview=preview or {})
            except OSError as exc:
                answer.update(ok=False, error=f"the saved document cannot be read: {exc.strerror}",
                              retryable=False)
        elif job.killed_for == "cancelled":
            answer.update(ok=False, error="cancelled", retryable=False, cancelled=True)
        else:
            answer.update(ok=False, error=error, retryable=False, code=code)
        shutil.rmtree(job.directory, ignore_errors=True)
        if job.uid is not None:
            self.free_uids.append(job.uid)
        self.jobs.pop(job.id, None)
        send(answer)

    def _copy_out(self, job: Job) -> str:
        """Copy the document to the host's output directory, refusing anything but a regular file."""
        assert job.file is not None
        source = os.open(os.path.join(job.directory, job.file), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(source).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            name = f"{job.id}.{EXTENSIONS[job.job_type]}"
            target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=self.out_fd)
            try:
                while chunk := os.read(source, 1024 * 1024):
                    os.write(target, chunk)
            finally:
                os.close(target)
        finally:
            os.close(source)
        return name

    def _kill(self, job: Job) -> None:
        if job.uid is not None:
            # Every process of the job's uid, wherever it went (setsid, double fork): kill(-1) as that uid.
            pid = os.fork()
            if pid == 0:
                try:
                    os.setgid(job.uid)
                    os.setuid(job.uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            _wait_quietly(pid)
        elif job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _shutdown(self) -> None:
        for job in list(self.jobs.values()):
            job.killed_for = "the renderer is stopping"
            self._kill(job)
        if self.made_job_root is not None:
            shutil.rmtree(self.made_job_root, ignore_errors=True)


def closed_to_others(path: str) -> str | None:
    """The first directory on the way to `path` (itself included) that other users may not pass through,
    with its mode, or None when the whole way is open to them."""
    for directory in [*reversed(Path(path).parents), Path(path)]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            return f"{directory} is private (mode {stat.S_IMODE(mode):04o})"
    return None


def refuse(reason: str) -> NoReturn:
    """End the zygote at start with one line on stderr (the renderer's log)."""
    raise SystemExit(f"render zygote: cannot isolate code jobs: {reason}")


def _read_messages(fd: int, buffer: bytes) -> tuple[bytes, list[dict[str, Any]], str | None]:
    """What a child has written so far, as JSON lines: (the unfinished rest, the messages, the end:
    None while the pipe is open, "eof", or "overflow" when a line grows past MAX_MESSAGE)."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return buffer, messages, None
        except OSError:
            chunk = b""
        if not chunk:
            return buffer, messages, "eof"
        buffer += chunk
        if len(buffer) > MAX_MESSAGE:
            return buffer, messages, "overflow"
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue


def _forward_progress(job: Job, message: dict[str, Any]) -> None:
    send({"id": job.id, "progress": int(message["progress"]), "message": str(message.get("message", ""))[:200]})


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


def _child_send(fd: int, message: dict[str, Any]) -> None:
    data = (json.dumps(message, default=str) + "\n").encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


def main() -> None:
    config = json.loads(sys.argv[1])
    warm()
    # Everything imported so far is shared with the children copy-on-write; without this, the first
    # full garbage collection in a child touches every object and copies every page (~70 ms).
    gc.freeze()
    zygote = Zygote(config["out_dir"], config["work_dir"], Limits.from_json(config.get("code_limits", {})),
                    Limits.from_json(config.get("spec_limits", {})), int(config.get("spec_workers", 1)))
    zygote.isolate()
    zygote.run()


if __name__ == "__main__":
    main()
