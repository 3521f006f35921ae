"""The code zygote: the warm, pristine process that code jobs' processes are forked from.

It runs inside the code box (bubblewrap, started by codebox.py): a mount namespace holding only the
Python runtime and the libraries, read-only, with no network and its own PID namespace. It imports the
document libraries once and then never holds a job's data: the zygote sends it, per job, a slot number and
three descriptors (SCM_RIGHTS), which it hands to a forked child without reading them:

* the job (a sealed memfd with the code, type and title), read by the job's own process only;
* the write end of the job's message pipe (the zygote reads it);
* a socket on which the job's box sends back a handle on its scratch directory (the zygote copies the
  document out through it).

So whatever a job finds in its memory (gc, sys._getframe, freed pages) is this process's: libraries, and
no other job's request. Each job then gets a box of its own, made in one clone(): its process starts in
new user, mount, PID, network, IPC and UTS namespaces, PID 1 of its own (so it sees only its own
processes, and all of them die with it). This process maps its uid (1000 inside; outside, as root, one of
a block, a uid per job, else this box's own). The job's process then mounts its size-limited tmpfs on
/tmp and sends the zygote a handle on it, mounts its own /proc, drops every capability, sets no_new_privs,
the rlimits and the seccomp filter, says "k" (its box is built), reads its job from its descriptor and
runs the code. It dies with this process (PR_SET_PDEATHSIG, set after its last change of uid, and checked
against a parent that died first), so the end of this process, or of the box, ends every job; killing a
job's process ends everything it started.

Control messages (JSON, one per SOCK_SEQPACKET datagram), zygote to here:
  {"op": "start", "slot": n} with the three descriptors; {"op": "kill", "slot": n}
Here to the zygote:
  {"ready": true, "isolation": "..."} or {"ready": false, "error": "..."} once, at start
  {"slot": n, "status": <wait status>, "setup_failed": bool} when a job's process has ended
  {"slot": n, "refused": "..."} when a job cannot be started at all
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import os
import resource
import select
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


class CodeZygote:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.control = socket.socket(fileno=config.control_fd)
        self.boxes: dict[int, tuple[int, int | None, socket.socket]] = {}  # pid -> (slot, uid, its sync socket)
        self.by_slot: dict[int, int] = {}
        self.checking: str | None = None  # set as a box is made for an output check: its job type
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
        job_r, job_w = os.pipe()
        os.close(job_w)
        message_r, message_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        uid = self._take_uid()
        pid, sync = self._spawn([job_r, message_w, theirs.fileno()], uid, probe=True)
        for fd in (job_r, message_w):
            os.close(fd)
        theirs.close()
        _, status = os.waitpid(pid, 0)
        sync.close()
        if uid is not None and self.free_uids is not None:
            self.free_uids.append(uid)
        report = b""
        with contextlib.suppress(OSError):
            report = os.read(message_r, 4096)
        os.close(message_r)
        ours.close()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return None
        try:
            return str(json.loads(report.splitlines()[0])["error"])
        except (ValueError, KeyError, IndexError, TypeError):
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
                    for pid in self.boxes:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
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
        message = json.loads(data)
        slot = int(message["slot"])
        if message["op"] == "kill":
            for fd in fds:
                os.close(fd)
            pid = self.by_slot.get(slot)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return True
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self._send({"slot": slot, "refused": "the zygote sent a job without its descriptors"})
            return True
        uid = self._take_uid()
        if uid == -1:
            for fd in fds:
                os.close(fd)
            self._send({"slot": slot, "refused": "too many code jobs at once"})
            return True
        # An output check (checker.py) gets a box like a job's; its process runs the check, not code.
        self.checking = str(message.get("job_type")) if message["op"] == "check" else None
        try:
            pid, sync = self._spawn(fds, uid)
        except OSError as exc:
            if uid is not None and self.free_uids is not None:
                self.free_uids.append(uid)
            self._send({"slot": slot, "refused": f"the job's box could not be made: {exc.strerror}"})
            return True
        finally:
            for fd in fds:
                os.close(fd)
        self.boxes[pid] = (slot, uid, sync)
        self.by_slot[slot] = pid
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            box = self.boxes.pop(pid, None)
            if box is None:
                continue
            slot, uid, sync = box
            self.by_slot.pop(slot, None)
            if uid is not None and self.free_uids is not None:
                self.free_uids.append(uid)
            # The job's process said "k" when its box was built, before any of the job ran.
            sync.setblocking(False)
            try:
                built = sync.recv(1) == b"k"
            except OSError:
                built = False
            sync.close()
            if built and os.WIFEXITED(status) and os.WEXITSTATUS(status) - 128 in (signal.SIGXCPU, signal.SIGXFSZ):
                status = os.WEXITSTATUS(status) - 128  # the limit's signal, as a wait status (see _box)
            self._send({"slot": slot, "status": status, "setup_failed": not built})

    def _send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    # --- one job's box ------------------------------------------------------------------------------

    def _spawn(self, fds: list[int], uid: int | None, probe: bool = False) -> tuple[int, socket.socket]:
        """Make a job's process, straight into namespaces of its own (one clone: a fork of this heap costs
        milliseconds, and there is no process between the job and us), and map its uid: 1000 inside,
        the job's own uid outside as root, else ours. Returns its pid and the socket it says "k" on once
        its box is built (closing ours tells it we are gone)."""
        ours, theirs = socket.socketpair()
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
                status = self._box(theirs, fds, probe)
            except BaseException as exc:
                _report(fds[1], f"the code job's sandbox could not be set up: {_oneline(exc)}")
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

    def _box(self, sync: socket.socket, fds: list[int], probe: bool) -> int:
        """The job's process, PID 1 of its namespaces: the rest of its box, then the job."""
        job_fd, message_fd, handle_fd = fds
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        _keep_only([*fds, sync.fileno()])
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if sync.recv(1) != b"g":  # its uid is mapped now (or we are gone)
            return SETUP_FAILED
        # Before the change of uid, which may not pass through the directories above them.
        runtime = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in self.config.under_tmp]
        os.setresgid(JOB_UID, JOB_UID, JOB_UID)
        os.setresuid(JOB_UID, JOB_UID, JOB_UID)
        linux.prctl(linux.PR_SET_DUMPABLE, 1)  # a change of uid makes /proc/self root's
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # after the last change of uid, which clears it
        if select.select([sync], [], [], 0)[0]:  # we never write again: readable means we are gone
            return SETUP_FAILED
        flags = linux.MS_NOSUID | linux.MS_NODEV
        linux.mount("tmpfs", "/tmp", "tmpfs", flags, f"size={self.config.tmpfs_mb}m,mode=0700")
        for path, fd in zip(self.config.under_tmp, runtime, strict=True):
            os.makedirs(path, exist_ok=True)  # in the job's tmpfs; the bind below is read-only already
            linux.mount(f"/proc/self/fd/{fd}", path, None, linux.MS_BIND | linux.MS_REC)
            os.close(fd)
        handle = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
        with socket.socket(fileno=handle_fd) as channel:
            socket.send_fds(channel, [b"d"], [handle])
        os.close(handle)
        linux.mount("proc", "/proc", "proc", flags | linux.MS_NOEXEC)
        linux.drop_capabilities()
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        self._limit()
        # The kernel spares a PID namespace's init the signals it has no handler for: without these,
        # the CPU and file-size limits would not stop the job (only the CPU limit's hard SIGKILL would).
        for sig in (signal.SIGXCPU, signal.SIGXFSZ):
            signal.signal(sig, _ended_by_limit)
        linux.load_seccomp(self.config.seccomp)
        if probe:
            try:
                linux.unshare(linux.CLONE_NEWUSER)
            except PermissionError:
                pass
            else:
                raise RuntimeError("the seccomp filter let a new user namespace through")
        sync.send(b"k")
        sync.close()
        if probe:
            return 0
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        _keep_only([job_fd, message_fd])
        os.chdir("/tmp")
        os.environ.clear()
        os.environ["HOME"] = os.environ["TMPDIR"] = "/tmp"
        import tempfile

        tempfile.tempdir = "/tmp"
        if self.checking is not None:  # job_fd is the document, read-only
            from .checker import run as run_check

            return run_check(self.checking, job_fd, message_fd)
        request = _read_request(job_fd)
        os.close(job_fd)
        try:
            run_code(request, message_fd)
        except BaseException as exc:
            from ..specs import SpecError
            from .zygote import _child_send, _describe

            _child_send(message_fd, {"error": _describe(exc),
                                     "code": "invalid_spec" if isinstance(exc, SpecError) else None})
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


def _report(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps({"error": text}) + "\n").encode())


def fail_start(control: socket.socket, reason: str) -> NoReturn:
    with contextlib.suppress(OSError):
        control.send(json.dumps({"ready": False, "error": reason}).encode())
    raise SystemExit(1)


def main() -> None:
    config = Config.from_json(json.loads(sys.argv[1]))
    zygote = CodeZygote(config)
    try:
        zygote.prepare()
        from .zygote import warm

        warm()
        # Shared with every job's process copy-on-write; without it the first full collection in a job
        # touches every object and copies every page.
        gc.freeze()
        problem = zygote.probe()
    except Exception as exc:
        traceback.print_exc()
        fail_start(zygote.control, _oneline(exc))
    if problem is not None:
        fail_start(zygote.control, problem)
    zygote._send({"ready": True})
    zygote.run()


if __name__ == "__main__":
    main()
