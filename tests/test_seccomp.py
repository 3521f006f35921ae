"""The code jobs' seccomp filter (renderer/sandbox/seccomp.py), loaded by a real process: each call it
must refuse is answered by the filter itself, whatever the caller's capabilities.

A job's box has no capability, so most of these calls fail there even without a filter (reboot and
init_module need capabilities of the host, setns a namespace to join): the probe inside a job
(tests/test_code_isolation.py) cannot tell the filter's EPERM from the kernel's. Here the filter is built
to answer an errno no call gives of itself, and loaded in a process that is root of a user namespace of its
own (full capabilities there, none on the host), where unshare, mount, setns and clone with namespace flags
would otherwise succeed."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from renderer.sandbox import linux
from renderer.sandbox.seccomp import REFUSED

PROBE = """
import ctypes, errno, json, os, sys
import pyseccomp
from renderer.sandbox import linux, seccomp

MARK = errno.ENOTRECOVERABLE
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
arch = pyseccomp.system_arch()

def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_ulong(a) for a in args])
    if result == 0 and os.getpid() != parent:  # a clone the filter let through: the child leaves at once
        os._exit(0)
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

parent = os.getpid()
program = seccomp.code_job_filter(MARK)
linux.unshare(linux.CLONE_NEWUSER)  # root of a namespace of its own: capabilities here, none on the host
before = {"unshare(CLONE_NEWNS)": call(pyseccomp.resolve_syscall(arch, "unshare"), linux.CLONE_NEWNS)}
linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
linux.load_seccomp(program)
answers = {name: call(pyseccomp.resolve_syscall(arch, name), 0, 0, 0, 0, 0, 0)
           for name in json.loads(sys.argv[1])}
clone = pyseccomp.resolve_syscall(arch, "clone")
for flag, name in [(linux.CLONE_NEWUSER, "NEWUSER"), (linux.CLONE_NEWNS, "NEWNS"), (linux.CLONE_NEWPID, "NEWPID"),
                   (linux.CLONE_NEWNET, "NEWNET"), (linux.CLONE_NEWIPC, "NEWIPC"), (linux.CLONE_NEWUTS, "NEWUTS"),
                   (linux.CLONE_NEWCGROUP, "NEWCGROUP"), (linux.CLONE_NEWTIME, "NEWTIME")]:
    answers[f"clone(CLONE_{name})"] = call(clone, flag | 17, 0, 0, 0, 0)  # 17: SIGCHLD, as fork
pid = os.fork()  # a plain fork (clone without namespace flags) still works
if pid == 0:
    os._exit(7)
answers["fork"] = os.waitpid(pid, 0)[1] >> 8
answers["getpid"] = call(pyseccomp.resolve_syscall(arch, "getpid"))
print(json.dumps({"before": before, "answers": answers}))
"""


@pytest.fixture(scope="module")
def answers() -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(REFUSED)], capture_output=True, text=True,
                         timeout=60, start_new_session=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # Without the filter, root of its own user namespace makes namespaces: what follows is the filter's doing.
    assert report["before"] == {"unshare(CLONE_NEWNS)": "ok"}, report
    return dict(report["answers"])


def test_every_refused_call_is_answered_by_the_filter(answers: dict[str, object]) -> None:
    mark = errno.errorcode[errno.ENOTRECOVERABLE]
    refused = {name: answers[name] for name in REFUSED}
    assert refused == dict.fromkeys(REFUSED, mark), {k: v for k, v in refused.items() if v != mark}
    for name in ("setns", "mount", "ptrace", "bpf", "init_module", "finit_module", "reboot", "io_uring_setup",
                 "keyctl", "perf_event_open", "kexec_load", "unshare"):  # what the design names, at least
        assert name in REFUSED, name


def test_clone_into_any_new_namespace_is_refused_and_a_plain_fork_is_not(answers: dict[str, object]) -> None:
    mark = errno.errorcode[errno.ENOTRECOVERABLE]
    clones = {k: v for k, v in answers.items() if k.startswith("clone(")}
    assert len(clones) == len(linux.NAMESPACE_FLAGS) and set(clones.values()) == {mark}, clones
    assert answers["fork"] == 7 and answers["getpid"] == "ok"
