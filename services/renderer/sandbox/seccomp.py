"""The seccomp filter every code job runs under, built with libseccomp (through pyseccomp).

It is built once, in the zygote, as raw BPF, and handed to the code zygote, which installs it in each
code job's process as the last step before the job's code runs (linux.load_seccomp). What it refuses
(EPERM) are the doors from a job's box into the kernel that document code never needs: new namespaces or
joining others (the way to full capabilities in a fresh user namespace, and to most kernel attack
surface), mounts, tracing other processes, the kernel keyring, BPF, perf events, io_uring (its requests
bypass seccomp), modules, kexec and reboot. clone3 answers ENOSYS, as on older kernels, because its
flags sit in memory a filter cannot read: the C library then falls back to clone, whose flags are checked.
Calls of another ABI (x32, i386) are refused by libseccomp's architecture check.
"""

from __future__ import annotations

import errno
import os

import pyseccomp

from . import linux

REFUSED = (
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # kernel surfaces document code has no use for
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "open_by_handle_at",
    "name_to_handle_at", "lookup_dcookie", "personality", "vhangup",
)


def code_job_filter(refusal: int = errno.EPERM) -> bytes:
    """The filter as BPF instructions, ready for linux.load_seccomp. `refusal` is the errno a refused call
    gets (a test asks for one no call would give of itself, to tell the filter's answer from the kernel's)."""
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in REFUSED:
        rules.add_rule(pyseccomp.ERRNO(refusal), name)
    for flag in linux.NAMESPACE_FLAGS:
        rules.add_rule(pyseccomp.ERRNO(refusal), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            rules.export_bpf(f)
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)
