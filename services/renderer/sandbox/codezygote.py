"""The code zygote: the warm, pristine process that code jobs' processes are forked from.

It runs inside the code box (bubblewrap, started by codebox.py): a mount namespace holding only the
Python runtime and the libraries, read-only, with no network and its own PID namespace. It imports the
document libraries once and then never holds a job's data: the zygote sends it, per job, a slot number and
three descriptors (SCM_RIGHTS), which it passes on to the job's box without reading them:

* the job (a sealed memfd with the code, type and title), read by the job's own process only;
* the write end of the job's message pipe (the zygote reads it);
* a socket on which the job's box sends back a handle on its scratch directory (the zygote copies the
  document out through it).

So whatever a job finds in its memory (gc, sys._getframe, freed pages) is this process's: libraries, and
no other job's request. Each job runs in a box of its own, made in one clone(): its process starts in
new user, mount, PID, network, IPC and UTS namespaces, PID 1 of its own (so it sees only its own
processes, and all of them die with it). This process maps its uid (1000 inside; outside, as root, one of
a block, a uid per job, else this box's own). The box's process then mounts its size-limited tmpfs on
/tmp, mounts its own /proc, drops every capability, sets no_new_privs, the rlimits and the seccomp
filter, and says "k" (its box is built). Only then does it get its job: the three descriptors, on its
sync socket, the first and only thing it is ever sent; it sends the zygote the handle on its scratch
directory, reads its job from its descriptor and runs the code. A box dies with this process
(PR_SET_PDEATHSIG, set after its last change of uid, and checked against a parent that died first), so
the end of this process, or of the code box, ends every job; killing a box's process ends everything it
started.

Spare boxes: building a box and a library's first use in a fresh process (which copies the pages it
touches, shared with this process until then) cost a job tens of milliseconds before its code does
anything. So once the box of a job or check of a kind (start or check, and the job type) has ended, the
next box of that kind is built and warms up on a small document of our own of that type (made with the
library as model-written code makes one, or a check), while no job is in it; the next job of that kind
is handed the waiting box, even before its warm-up is over: the job's arrival interrupts the warm-up
(_warm_up). Not earlier: on two cores, a spare warming up beside the job it replaces takes the job's
CPU. An output check's box is done with once its verdict is in (the zygote kills it), and its spare
is made then (_kill), not when the kernel has taken the box down. A spare
holds no job's data (it is forked from this pristine process and has only ever run our sample), and it
is used once. Its process is named "docjobs spare" while it waits ("docjobs job" or "docjobs check"
once it has its job). A kind never asked for has no spare; at most one waits per kind.

A job's "done" means "look" (the zygote never takes it further): the zygote then asks for its end, and
its box is killed. The box's own exit takes milliseconds (the unmapping of a heap shared with this
process, the namespaces' teardown), which its output check need not wait for: once the killed process
is the only one of its box (one thread, no child: every other process of its PID namespace would
descend from it, and a process with SIGKILL pending forks no more), nothing of the box can run again,
and its end is told at once. Otherwise it is told when the box is reaped, as for any other end.

Control messages (JSON, one per SOCK_SEQPACKET datagram), zygote to here:
  {"op": "start" | "check", "slot": n, "job_type": t} with the three descriptors; {"op": "kill", "slot": n};
  {"op": "end", "slot": n} (the job said it is done)
Here to the zygote:
  {"ready": true, "isolation": "..."} or {"ready": false, "error": "..."} once, at start
  {"slot": n, "status": <wait status>, "setup_failed": bool[, "error": why]} when a job's process has ended
  {"slot": n, "status": 0, "setup_failed": false, "ended": true} when a box asked to end has, as above
  {"slot": n, "refused": "..."} when a job cannot be started at all
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gc
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from docjobs.jobtypes import EXTENSIONS

from . import linux

JOB_UID = 1000  # the job's uid inside its own user namespace
# What `ps` shows of a box (its process name): waiting for a job, then running one or checking its document.
SPARE_NAME = "docjobs spare"
# The files (and directories) a job's tmpfs holds. Its size counts file data only: a job making empty
# files held ~4 GB of the host's kernel memory outside its memory limit (3 million of them), and their
# teardown as the job ended stalled every other job of the renderer for seconds. A document job makes a
# handful; libraries' caches, a few dozen.
TMPFS_FILES = 4096
SETUP_FAILED = 121  # a job's exit status when its box could not be built (not the job's fault)
MAX_REQUEST = 8 * 1024 * 1024
NAMESPACES = (linux.CLONE_NEWUSER | linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWNET
              | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)


@dataclass(frozen=True)
class Config:
    control_fd: int
    seccomp: bytes
    first_uid: int | None  # as root: the block of uids jobs take, one each
    uids: int
    timeout_s: float
    cpu_s: int
    memory_mb: int
    file_mb: int
    processes: int
    tmpfs_mb: int
    # Runtime directories (the virtualenv of a checkout in /tmp, say) that a job's own tmpfs on /tmp would
    # hide: each is bound again, read-only, inside that tmpfs.
    under_tmp: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        limits = data["limits"]
        return cls(control_fd=int(data["control_fd"]), seccomp=base64.b64decode(data["seccomp"]),
                   first_uid=data.get("first_uid"), uids=int(data.get("uids", 64)),
                   timeout_s=float(limits.get("timeout_s", 60.0)), cpu_s=int(limits.get("cpu_s", 30)),
                   memory_mb=int(limits.get("memory_mb", 1024)), file_mb=int(limits.get("file_mb", 100)),
                   processes=int(limits.get("processes", 16)), tmpfs_mb=int(limits.get("tmpfs_mb", 512)),
                   under_tmp=tuple(str(p) for p in data.get("under_tmp", ())))


@dataclass
class Box:
    """A job's (or an output check's) process: being built, waiting for its job as a spare, or running."""

    pid: int
    uid: int | None
    sync: socket.socket  # ours: "g" (its uid is mapped), then "j" with the job's descriptors; it says "k" or "e..."
    kind: tuple[str, str]  # ("start" or "check", the job type)
    slot: int | None = None  # None while a spare waits for its job, and once its end has been told
    replace: bool = False  # a spare of its kind is to be built once it has ended


class CodeZygote:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.control = socket.socket(fileno=config.control_fd)
        self.boxes: dict[int, Box] = {}
        self.by_slot: dict[int, int] = {}
        self.spares: dict[tuple[str, str], int] = {}  # kind -> the pid of a built, warm box waiting for a job
        first = config.first_uid
        self.free_uids: list[int] | None = (None if first is None
                                            else list(range(first + config.uids - 1, first - 1, -1)))

    def prepare(self) -> None:
        """Once, before any job: a /proc of this box's own with nothing mounted over it (the jobs' boxes
        may mount their own /proc only where one is fully visible), then the capabilities this process
        needs no more go."""
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        if self.free_uids is not None:
            os.setgroups([])  # a job's process keeps the groups it is made with (it may not change them)

    def probe(self) -> str | None:
        """Build one job's box for nothing, all the way to its seccomp filter: where the kernel refuses any
        step, say so now (the renderer then refuses to start) rather than fail every job later."""
        uid = self._take_uid()
        pid, sync = self._spawn(uid, ("probe", ""), warm=False)
        _, status = os.waitpid(pid, 0)
        if uid is not None and self.free_uids is not None:
            self.free_uids.append(uid)
        said = _said(sync)
        sync.close()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and said == b"k":
            return None
        if said.startswith(b"e"):
            return said[1:].decode(errors="replace")
        return f"building a code job's box failed (wait status {status})"

    def _take_uid(self) -> int | None:
        if self.free_uids is None:
            return None
        return self.free_uids.pop() if self.free_uids else -1

    def run(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "signal")
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                elif not self._read_control():
                    self.kill_boxes()
                    return
            self._reap()

    def _read_control(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 65536, 8)
        except BlockingIOError:
            return True
        except ConnectionResetError:  # the zygote closed with our last events unread: it is gone all the same
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            message = json.loads(data)
            slot = int(message["slot"])
            if message["op"] == "kill":
                self._kill(slot)
            elif message["op"] == "end":
                self._end(slot)
            elif len(fds) != 3:
                self._send({"slot": slot, "refused": "the zygote sent a job without its descriptors"})
            else:
                self._start(slot, (str(message["op"]), str(message.get("job_type", ""))), fds)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _start(self, slot: int, kind: tuple[str, str], fds: list[int]) -> None:
        """Hand a job (or a check) its box: the spare of its kind, built and warm, if there is one, else a
        box made now; then make the next spare of that kind, which builds and warms itself while this job
        runs. The descriptors pass through here unread."""
        pid = self.spares.pop(kind, None)
        if pid is None or not _hand(self.boxes[pid].sync, fds):
            made = self._new_box(kind, warm=False)
            if isinstance(made, str):
                self._send({"slot": slot, "refused": made})
                return
            pid = made
            if not _hand(self.boxes[pid].sync, fds):
                self._send({"slot": slot, "refused": "the job's box ended before it could start"})
                return
        self.boxes[pid].slot = slot
        self.by_slot[slot] = pid
        # Its replacement is built once it has ended, not beside it: on two cores, a spare warming up
        # beside a job slows the job's code by as much as the spare saves the next job.
        self.boxes[pid].replace = kind[1] in EXTENSIONS

    def _end(self, slot: int) -> None:
        """A job has said it is done: its box is killed, and when nothing of it can run any more (its
        process, PID 1 of its namespace, is killed and has no child, so no other process of the box
        exists), its end is told at once; the exit itself (the unmapping of a heap shared with this
        process, the namespaces' teardown) takes milliseconds that its output check need not wait for.
        Where the box has other processes, its end is told when it is reaped, as any other."""
        box = self._kill_box(slot)
        if box is None or not _alone(box.pid):
            return
        del self.by_slot[slot]
        box.slot = None
        self._send({"slot": slot, "status": 0, "setup_failed": False, "ended": True})
        if box.replace:  # its replacement starts now, while the kernel takes the box down
            box.replace = False
            self._new_spare(box.kind)

    def _kill(self, slot: int) -> None:
        """Kill a box. An output check's box is killed once its verdict is in (or no longer wanted): when
        nothing of it can run any more (as at a job's end, _end), its replacement is made at once, not
        when the kernel has taken it down, tens of milliseconds later, often just when the next job's
        start arrives and waits for the clone. (Its end is still told when it is reaped.)"""
        box = self._kill_box(slot)
        if box is not None and box.kind[0] == "check" and box.replace and _alone(box.pid):
            box.replace = False
            self._new_spare(box.kind)

    def _kill_box(self, slot: int) -> Box | None:
        """SIGKILL the box of a slot; the box, or None if there is none (or it is gone already)."""
        pid = self.by_slot.get(slot)
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return self.boxes[pid]

    def _new_spare(self, kind: tuple[str, str]) -> None:
        if kind in self.spares:
            return
        made = self._new_box(kind, warm=True)
        if isinstance(made, int):
            self.spares[kind] = made

    def _new_box(self, kind: tuple[str, str], warm: bool) -> int | str:
        """A new box's pid, or why none could be made."""
        uid = self._take_uid()
        if uid == -1:
            return "too many code jobs at once"
        try:
            pid, sync = self._spawn(uid, kind, warm)
        except OSError as exc:
            if uid is not None and self.free_uids is not None:
                self.free_uids.append(uid)
            return f"the job's box could not be made: {exc.strerror}"
        self.boxes[pid] = Box(pid, uid, sync, kind)
        return pid

    def _reap(self) -> None:
        replace = []
        for pid, status in linux.reaped():
            box = self.boxes.pop(pid, None)
            if box is None:
                continue
            if box.uid is not None and self.free_uids is not None:
                self.free_uids.append(box.uid)
            if box.replace:
                replace.append(box.kind)
            # The box said "k" once built, before any of the job ran; or "e" and why it could not be built.
            said = _said(box.sync)
            box.sync.close()
            if box.slot is None:  # a spare that ended unused (or a box whose end was told): nothing to say
                if self.spares.get(box.kind) == pid:
                    del self.spares[box.kind]
                continue
            self.by_slot.pop(box.slot, None)
            built = said == b"k"
            if built and os.WIFEXITED(status) and os.WEXITSTATUS(status) - 128 in (signal.SIGXCPU, signal.SIGXFSZ):
                status = os.WEXITSTATUS(status) - 128  # the limit's signal, as a wait status (see _box)
            event: dict[str, Any] = {"slot": box.slot, "status": status, "setup_failed": not built}
            if said.startswith(b"e"):
                event["error"] = said[1:].decode(errors="replace")
            self._send(event)
        for kind in replace:  # after the events: the zygote goes on while the spares are made
            self._new_spare(kind)

    def _send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    def kill_boxes(self) -> None:
        for pid in self.boxes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- one job's box ------------------------------------------------------------------------------

    def _spawn(self, uid: int | None, kind: tuple[str, str], warm: bool) -> tuple[int, socket.socket]:
        """Make a box's process, straight into namespaces of its own (one clone: a fork of this heap costs
        milliseconds, and there is no process between the job and us), and map its uid: 1000 inside,
        the job's own uid outside as root, else ours. Returns its pid and our end of its sync socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = linux.clone(NAMESPACES)
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            status = SETUP_FAILED
            try:
                ours.close()
                status = self._box(theirs, kind, warm)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    theirs.send(b"e" + f"the code job's sandbox could not be set up: {_oneline(exc)}".encode())
            finally:
                os._exit(status)
        theirs.close()
        try:
            outer_uid = uid if uid is not None else os.geteuid()
            outer_gid = uid if uid is not None else os.getegid()
            _write(f"/proc/{pid}/setgroups", "deny")
            _write(f"/proc/{pid}/uid_map", f"{JOB_UID} {outer_uid} 1")
            _write(f"/proc/{pid}/gid_map", f"{JOB_UID} {outer_gid} 1")
            ours.send(b"g")
        except OSError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # it waits for "g" and would never get it
        return pid, ours

    def _box(self, sync: socket.socket, kind: tuple[str, str], warm: bool) -> int:
        """The box's process, PID 1 of its namespaces: the rest of its box; a warm-up on documents of our
        own when it is a spare; then its job's descriptors, and the job (or the check)."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        _keep_only([sync.fileno()])
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if sync.recv(1) != b"g":  # its uid is mapped now (or we are gone)
            return SETUP_FAILED
        # Before the change of uid, which may not pass through the directories above them.
        runtime = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in self.config.under_tmp]
        os.setresgid(JOB_UID, JOB_UID, JOB_UID)
        os.setresuid(JOB_UID, JOB_UID, JOB_UID)
        linux.prctl(linux.PR_SET_DUMPABLE, 1)  # a change of uid makes /proc/self root's
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # after the last change of uid, which clears it
        if _gone(sync):
            return SETUP_FAILED
        flags = linux.MS_NOSUID | linux.MS_NODEV
        linux.mount("tmpfs", "/tmp", "tmpfs", flags,
                    f"size={self.config.tmpfs_mb}m,nr_inodes={TMPFS_FILES},mode=0700")
        for path, fd in zip(self.config.under_tmp, runtime, strict=True):
            os.makedirs(path, exist_ok=True)  # in the job's tmpfs; the bind below is read-only already
            linux.mount(f"/proc/self/fd/{fd}", path, None, linux.MS_BIND | linux.MS_REC)
            os.close(fd)
        scratch = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
        linux.mount("proc", "/proc", "proc", flags | linux.MS_NOEXEC)
        linux.drop_capabilities()
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        self._limit()
        # The kernel spares a PID namespace's init the signals it has no handler for: without these,
        # the CPU and file-size limits would not stop the job (only the CPU limit's hard SIGKILL would).
        for sig in (signal.SIGXCPU, signal.SIGXFSZ):
            signal.signal(sig, _ended_by_limit)
        linux.load_seccomp(self.config.seccomp)
        if kind[0] == "probe":
            try:
                linux.unshare(linux.CLONE_NEWUSER)
            except PermissionError:
                pass
            else:
                raise RuntimeError("the seccomp filter let a new user namespace through")
            sync.send(b"k")
            return 0
        sync.send(b"k")
        _name_process(SPARE_NAME)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.chdir("/tmp")
        os.environ.clear()
        os.environ["HOME"] = os.environ["TMPDIR"] = "/tmp"
        import tempfile

        tempfile.tempdir = "/tmp"
        if warm:
            _warm_up(kind, sync if kind[0] == "start" else None)
        # The job: its descriptors, the first and only thing this process is ever sent.
        try:
            message, fds, _, _ = socket.recv_fds(sync, 16, 3)
        except OSError:
            return 0
        if message != b"j" or len(fds) != 3:
            return 0  # the zygote is gone, or has no more use for this spare
        sync.close()
        _name_process("docjobs check" if kind[0] == "check" else "docjobs job")
        job_fd, message_fd, handle_fd = fds
        with socket.socket(fileno=handle_fd) as channel:
            socket.send_fds(channel, [b"d"], [scratch])
        os.close(scratch)
        _keep_only([job_fd, message_fd])
        if kind[0] == "check":  # job_fd: a socket on which the document arrives, read-only
            from .checker import run as run_check

            return run_check(kind[1], job_fd, message_fd, warmed=warm)
        try:
            request = _read_request(job_fd)
            os.close(job_fd)
            run_code(request, message_fd)
        except BaseException as exc:
            # Nothing is imported here that the zygote has not imported already: this may run out of
            # memory (a memory bomb), when an import would fail the box instead of telling the job why.
            from .zygote import _child_send, _describe

            _child_send(message_fd, {"error": _describe(exc), "code": None})
            return 1
        return 0

    def _limit(self) -> None:
        config = self.config
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * resource.getpagesize()
        memory = current + config.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (config.cpu_s, config.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (config.file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_NPROC, (config.processes, config.processes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # The first the kernel's OOM killer takes, should the renderer's memory (a container's limit) run
        # out: a job's process, never the renderer or a zygote (raising one's own score needs no privilege).
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")


def run_code(request: dict[str, Any], out: int) -> None:
    """A code job, in its own process: its code. Whatever it saved is judged after its box has ended,
    by an output check in a box of its own (checker.py); what the job says of it is not taken."""
    from .zygote import _child_send

    ext = EXTENSIONS[request["job_type"]]
    _child_send(out, {"progress": 10, "message": "running the document code"})
    code = compile(request["code"], "<document code>", "exec")
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__, "output_path": f"document.{ext}"}
    exec(code, scope)
    _child_send(out, {"done": True})


def _ended_by_limit(signum: int, _frame: Any) -> None:
    os._exit(128 + signum)  # told back into the limit's signal by the code zygote


def _read_request(fd: int) -> dict[str, Any]:
    size = os.fstat(fd).st_size
    if size > MAX_REQUEST:
        raise ValueError("the job is too large")
    data = os.pread(fd, size, 0)
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("the job is not an object")
    return request


def _alone(pid: int) -> bool:
    """Whether a killed box's process is the only process of its box: one thread (a thread exiting
    hands its children to another, which a read thread by thread could miss), and no child, alive or
    not yet reaped. Every other process of its PID namespace descends from it (an orphan is handed to
    it, or to a subreaper below it), and a process with SIGKILL pending forks no more."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        if threads != [str(pid)]:
            return False
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return not children.read().strip()
    except OSError:
        return False


def _keep_only(fds: list[int]) -> None:
    low = 3
    for fd in sorted(fds):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _oneline(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def _hand(sync: socket.socket, fds: list[int]) -> bool:
    """Send a box its job's descriptors; False if the box is gone."""
    try:
        socket.send_fds(sync, [b"j"], fds)
    except OSError:
        return False
    return True


def _said(sync: socket.socket) -> bytes:
    """What a box said on its sync socket ("k", or "e" and why), without waiting."""
    sync.setblocking(False)
    try:
        return sync.recv(4096)
    except OSError:
        return b""


def _only_thread() -> None:
    """Refuse to start holding a thread besides our own. A box is made by a raw clone(), which copies only
    the calling thread and runs no pthread_atfork handler: a library whose handler waits for its threads
    before a fork (OpenBLAS's joins its pool: codebox.py sets it to one thread, which starts none) would
    make every fork() in a job wait forever."""
    threads = os.listdir("/proc/self/task")
    if len(threads) > 1:
        raise RuntimeError(f"the code zygote holds {len(threads)} threads, and a box cloned from it would keep "
                           "only one: a library started threads at import or warm-up")


def _name_process(name: str) -> None:
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name)


def _waiting(sync: socket.socket) -> bool:
    """Whether something (the job's descriptors, or the zygote's end) waits on a box's sync socket."""
    try:
        sync.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _gone(sync: socket.socket) -> bool:
    """Whether the code zygote has closed its end (our parent died before the death signal was set)."""
    try:
        return sync.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


class _JobArrived(BaseException):
    """Raised in a spare's warm-up when its job has arrived."""


def _warm_up(kind: tuple[str, str], sync: socket.socket | None) -> None:
    """A spare box, before its job exists, does once what that job would do first: make a small
    document of the job's type with the library itself, as model-written code does (or check one, for
    a check). The first use of a library in a fresh process touches, and so copies, many pages it shares
    with this zygote and fills the libraries' caches: done here, the job does not wait for it. Only our
    sample passes through, and whatever it left in the scratch directory is removed. (Our spec renderer's
    sample was the warm-up before: it also warmed what code jobs never use, and took about 12 ms of CPU
    more, which a job sent right after the one before waited for; docs/performance.md.)

    With `sync` (a job's spare), the job never waits for the warm-up: its arrival on the sync socket
    (SIGIO) ends the warm-up where it is, and the job goes on from there, as warm as the spare got. Jobs
    sent back to back find their spare still warming up; the job waited for all of it, then did the rest
    of that work again in its own code. A check's spare warms up whole: its job's code runs meanwhile."""
    import shutil
    from pathlib import Path

    before = set(os.listdir("/tmp"))  # the runtime's directories, when it lives under /tmp
    armed = sync is not None

    def arrived(_signum: int, _frame: Any) -> None:
        nonlocal armed
        if armed:  # at most once, and never once the warm-up is over
            armed = False
            raise _JobArrived

    interrupted = False
    try:
        try:
            if sync is not None:  # armed inside the try: a job may arrive as soon as O_ASYNC is on
                signal.signal(signal.SIGIO, arrived)
                fcntl.fcntl(sync.fileno(), fcntl.F_SETOWN, os.getpid())
                fcntl.fcntl(sync.fileno(), fcntl.F_SETFL, fcntl.fcntl(sync.fileno(), fcntl.F_GETFL) | os.O_ASYNC)
            if sync is None or not _waiting(sync):  # a job that came before the signal was set up
                with contextlib.suppress(Exception):
                    if kind[0] == "check":
                        from .checker import warm_up as warm_check

                        warm_check(kind[1])
                    else:
                        _library_warm_up(kind[1], Path(f"/tmp/warm-up.{EXTENSIONS[kind[1]]}"))
        finally:
            armed = False
    except _JobArrived:
        interrupted = True
    if interrupted:  # after the except block, whose exception still holds the interrupted frames
        gc.collect()  # what the warm-up left open (its sample's files) is closed before they are removed
    if sync is not None:
        fcntl.fcntl(sync.fileno(), fcntl.F_SETFL, fcntl.fcntl(sync.fileno(), fcntl.F_GETFL) & ~os.O_ASYNC)
        signal.signal(signal.SIGIO, signal.SIG_DFL)
    for name in set(os.listdir("/tmp")) - before:
        path = os.path.join("/tmp", name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def warm() -> None:
    """Once, before any box: import the document libraries, register the renderer's fonts with reportlab
    (model code draws with them by name: docs/renderer.md), and make and check a small document of each
    type with the libraries (their lazy imports and caches; the output checks' samples). Not our spec
    renderer's warm-up: code jobs never use it, and every page this process holds is a page table entry
    each box's clone copies (docs/performance.md)."""
    import tempfile
    from pathlib import Path

    from ..fonts import coverage
    from ..preview import preview
    from . import checker
    from .zygote import import_libraries

    import_libraries()
    coverage()
    with tempfile.TemporaryDirectory(prefix="docjobs-warm-") as tmp:
        for job_type, ext in EXTENSIONS.items():
            path = Path(tmp) / f"warm.{ext}"
            _library_warm_up(job_type, path)
            if path.exists():
                preview(job_type, path)
                checker.SAMPLES[job_type] = path.read_bytes()  # an output check warms up on it while it waits


def _library_warm_up(job_type: str, path: Any) -> None:
    """What model-written code of the type does first, with the library itself."""
    if job_type == "spreadsheet":
        import datetime

        from openpyxl import Workbook
        from openpyxl.styles import Font

        book = Workbook()
        sheet = book.create_sheet("S", 0)
        sheet.append(["a", 1.5, datetime.date(2026, 1, 1)])
        sheet["A1"].font = Font(bold=True)
        sheet["B1"].number_format = "#,##0.00"
        sheet["B2"] = "=SUM(B1:B1)"
        book.save(path)
    elif job_type == "document":
        from docx import Document

        document = Document()
        document.add_heading("h")
        document.add_paragraph("p")
        document.save(path)
    elif job_type == "pdf":
        from reportlab.pdfgen.canvas import Canvas

        canvas = Canvas(str(path))
        canvas.drawString(72, 720, "p")
        canvas.save()
    elif job_type == "presentation":
        from pptx import Presentation

        deck = Presentation()
        deck.slides.add_slide(deck.slide_layouts[0]).shapes.title.text = "t"
        deck.save(path)


def fail_start(control: socket.socket, reason: str) -> NoReturn:
    with contextlib.suppress(OSError):
        control.send(json.dumps({"ready": False, "error": reason}).encode())
    raise SystemExit(1)


def main() -> None:
    config = Config.from_json(json.loads(sys.argv[1]))
    zygote = CodeZygote(config)
    try:
        zygote.prepare()
        warm()
        # What the warm-up left as garbage, collected and its pages given back: each box's clone copies
        # the page table of every page this process holds (10 MB less of its heap).
        gc.collect()
        linux.malloc_trim()
        # Shared with every job's process copy-on-write; without it the first full collection in a job
        # touches every object and copies every page.
        gc.freeze()
        _only_thread()
        problem = zygote.probe()
    except Exception as exc:
        traceback.print_exc()
        fail_start(zygote.control, _oneline(exc))
    if problem is not None:
        fail_start(zygote.control, problem)
    try:
        zygote._send({"ready": True})
        zygote.run()
    except (BrokenPipeError, ConnectionResetError):  # the zygote went away mid-answer: nothing is owed
        zygote.kill_boxes()


if __name__ == "__main__":
    main()
