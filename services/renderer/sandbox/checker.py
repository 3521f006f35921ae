"""The output check: a code job's document, judged outside the process that made it.

A code job's process runs the model's code, so whatever it says about its own document is worthless: it
can write garbage to output_path, find its message pipe and send `{"done": true}` with a preview of its
choosing. So the job's word is never taken. Once the job's box has ended (every process of it), its
document is copied, by the kernel (the zygote never reads a job's bytes), into a sealed memfd, and a
short-lived checker process opens that copy with the format's reader and makes the preview the job
returns. The document is delivered only if the check says so; the copy it checked is the one delivered.
The check is started beside the job and waits for the document, so its box is built while the code runs.

The checker reads an attacker's file, so it is built like a code job: forked from the pristine code
zygote into a box of its own (its own uid, namespaces, seccomp: codezygote.py), and then held tighter
than a job (`run`): CHECK_MEMORY_MB of address space, CHECK_CPU_S of CPU, no file writes, no new
processes; the zygote kills it after CHECK_TIMEOUT_S. An office document (a zip) may unpack to at most
MAX_UNPACKED_MB in all, in at most MAX_MEMBERS members, deflated or stored only: every reader here reads
the zip through Python's zipfile, which never yields more than a member's declared size (nor a member
whose data does not match its CRC), so a zip bomb is refused before a byte is unpacked. A document that
exhausts a limit anyway (a PDF whose streams inflate without end) ends the check, and the job fails with
`invalid_output`; the checker is gone, the zygote and the renderer are not touched.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import socket
import stat
import zipfile
from typing import IO, Any

from docjobs.jobtypes import EXTENSIONS

from .messages import Checked, Failed, encode

CHECK_TIMEOUT_S = 20.0
CHECK_CPU_S = 10
CHECK_MEMORY_MB = 768
MAX_UNPACKED_MB = 512
MAX_MEMBERS = 10_000
INVALID_OUTPUT = "invalid_output"
# The part each office format cannot do without; its absence tells a zip that is no such document.
MAIN_PART = {"spreadsheet": "xl/workbook.xml", "document": "word/document.xml",
             "presentation": "ppt/presentation.xml"}
KIND = {"spreadsheet": "an Excel workbook", "document": "a Word document", "pdf": "a PDF",
        "presentation": "a PowerPoint presentation"}


SAMPLES: dict[str, bytes] = {}  # job type: a small document of that type, made by the code zygote's warm-up


class InvalidOutput(Exception):
    """The saved file is not a document of its job's type; the text says why, for the job's error."""


def check(job_type: str, document: IO[bytes]) -> dict[str, Any]:
    """The document's preview, read back with its format's reader, or InvalidOutput."""
    if job_type in MAIN_PART:
        _check_zip(job_type, document)
    elif job_type == "pdf":
        document.seek(0)
        if not document.read(1024).lstrip(b"\0\t\n\f\r ").startswith(b"%PDF-"):
            raise InvalidOutput("the saved .pdf file is not a PDF (it does not start with %PDF-)")
    document.seek(0)
    from ..preview import preview

    try:
        return preview(job_type, document)
    except MemoryError:
        raise InvalidOutput(f"the saved .{EXTENSIONS[job_type]} file is too large to open within the check's "
                            "memory limit") from None
    except RecursionError:
        raise InvalidOutput(f"the saved .{EXTENSIONS[job_type]} file is nested too deep to open") from None
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise InvalidOutput(f"the saved .{EXTENSIONS[job_type]} file does not open as "
                            f"{KIND.get(job_type, 'a document')} ({detail})") from None


def _check_zip(job_type: str, document: IO[bytes]) -> None:
    ext = EXTENSIONS[job_type]
    try:
        archive = zipfile.ZipFile(document)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InvalidOutput(f"the saved .{ext} file is not {KIND[job_type]}: it is no zip archive "
                            f"(BadZipFile: {' '.join(str(exc).split())[:200]})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise InvalidOutput(f"the saved .{ext} file has {len(members)} parts (at most {MAX_MEMBERS})")
        unpacked = 0
        for member in members:
            if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise InvalidOutput(f"the saved .{ext} file uses a compression office documents do not "
                                    f"(method {member.compress_type})")
            unpacked += member.file_size
        if unpacked > MAX_UNPACKED_MB * 1024 * 1024:
            raise InvalidOutput(f"the saved .{ext} file would unpack to {unpacked // (1024 * 1024)} MB (at most "
                                f"{MAX_UNPACKED_MB} MB): a zip bomb, or too large a document")
        names = {m.filename for m in members}
        if "[Content_Types].xml" not in names or MAIN_PART[job_type] not in names:
            raise InvalidOutput(f"the saved .{ext} file is a zip archive but not {KIND[job_type]} "
                                f"(it has no {MAIN_PART[job_type]})")


def run(job_type: str, document_fd: int, out: int, warmed: bool = False) -> int:
    """The checker's process, in its box: tighter limits, then the document (a descriptor on it, or a
    socket on which it arrives once the job has saved it: the box is built while the job runs), the
    check, and its verdict on `out` as one message (messages.CHECKER). Returns the exit status."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * resource.getpagesize()
    _lower(resource.RLIMIT_AS, current + CHECK_MEMORY_MB * 1024 * 1024)
    _lower(resource.RLIMIT_CPU, CHECK_CPU_S)
    _lower(resource.RLIMIT_FSIZE, 0)  # it writes no file (its verdict goes to a pipe)
    _lower(resource.RLIMIT_NPROC, 0)  # nor starts a process
    if stat.S_ISSOCK(os.fstat(document_fd).st_mode):
        if not warmed:
            warm_up(job_type)
        with socket.socket(fileno=document_fd) as channel:
            _, fds, _, _ = socket.recv_fds(channel, 16, 1)
        if not fds:
            return 0  # the job ended without a document to check
        document_fd = fds[0]
    if job_type not in EXTENSIONS:
        _write_all(out, encode(Failed(f"no check for the job type {job_type!r}", INVALID_OUTPUT)))
        return 1
    with os.fdopen(document_fd, "rb") as document:
        try:
            verdict: Checked | Failed = Checked(check(job_type, document))
        except InvalidOutput as exc:
            verdict = Failed(str(exc), INVALID_OUTPUT)
    _write_all(out, encode(verdict))
    return 0


def warm_up(job_type: str) -> None:
    """Check a small document of our own (made at the zygote's warm-up) before the job's: this
    process's first check touches, and so copies, many pages it shares with the code zygote, and fills
    the readers' caches; done before, the job's document is checked about a third faster."""
    sample = SAMPLES.get(job_type)
    if sample is not None:
        with contextlib.suppress(Exception):
            check(job_type, io.BytesIO(sample))


def _lower(limit: int, value: int) -> None:
    """Lower both the soft and hard limit to value (never raise them)."""
    soft, hard = resource.getrlimit(limit)
    new = value if hard == resource.RLIM_INFINITY else min(hard, value)
    resource.setrlimit(limit, (new if soft == resource.RLIM_INFINITY else min(soft, new), new))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
