"""Everything a code job's process says is untrusted. Each test is an attack by the job on the way its word
travels: its message pipe (found by scanning its descriptors), its progress text on the way to the
jobstore, the file it saved and its claim to be done. Named by attack class:

* untrusted message: a malformed line on the pipe fails that job only; the zygote and every other job
  go on;
* heartbeat poisoning: text the jobstore refuses (control characters, lone surrogates) never makes a
  Heartbeat or a Fail fail, so the lease never lapses (the job runs once) and a cancellation is heard;
* forged done: garbage saved, a forged `done` sent: the output check, in a process of its own, fails
  the job (`invalid_output`);
* zip bomb: the check refuses it, or dies of its limits; the job fails, the checker and the renderer
  go on.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docx
import openpyxl
import psutil
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from renderer.sandbox.client import RenderError, Sandbox
from renderer.sandbox.codebox import UID_BASE, UID_END
from renderer.sandbox.codezygote import SPARE_NAME

from .conftest import RunningJobStore, module_jobstore, wait_until
from .renderers import RendererProcess, download, submit, wait_finished

SPEC_LIMITS = {"timeout_s": 60.0, "cpu_s": 30, "memory_mb": 1024, "file_mb": 100, "processes": 16}
CODE_LIMITS = {"timeout_s": 60.0, "cpu_s": 10, "memory_mb": 512, "file_mb": 20, "processes": 8}
# The job's message pipe is one of its descriptors: the only pipe it has.
FIND_PIPE = """
import os, stat, time
def message_pipe():
    for fd in range(3, 1024):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass
    raise RuntimeError("no pipe found")
"""
GOOD_CODE = """
from openpyxl import Workbook
wb = Workbook()
wb.active.title = "Fine"
wb.active.append(["Item", "Amount"])
wb.active.append(["Coffee", 3.5])
wb.save(output_path)
"""
SLOW_GOOD_CODE = "import time\ntime.sleep(1.5)\n" + GOOD_CODE


def noop(_percent: int, _text: str) -> None:
    pass


def writes(raw: bytes, then: str = "time.sleep(50)") -> str:
    """Code that writes raw bytes on its own message pipe, then does `then`."""
    return FIND_PIPE + f"os.write(message_pipe(), {raw!r})\n{then}\n"


def sandbox_processes(below: int) -> list[psutil.Process]:
    """Live processes of a sandbox uid under the process `below` (as root every code job and every
    output check runs as a uid of its own)."""
    try:
        tree = psutil.Process(below).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in tree:
        try:
            if (UID_BASE <= proc.uids().real < UID_END
                    and proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
                    and proc.name() != SPARE_NAME):  # a spare box waiting for its job has run nothing
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
async def box(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(tmp_path_factory.mktemp("untrusted") / "sandbox", CODE_LIMITS, SPEC_LIMITS, spec_workers=1,
                      code=True)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


async def render_code(box: Sandbox, code: str, job_type: str = "spreadsheet") -> Path:
    result = await box.render(box.new_render_id(), job_type, "code", code, "t", noop)
    return result.path


# --- untrusted message ------------------------------------------------------------------------------

MALFORMED = {
    "a number (valid JSON, not an object)": b"5\n",
    "a list": b"[]\n",
    "a progress as text": b'{"progress": "50"}\n',
    "a progress as a boolean": b'{"progress": true}\n',
    "a progress above 100": b'{"progress": 1000}\n',
    "a message that is no text": b'{"progress": 50, "message": {"a": 1}}\n',
    "not UTF-8": b"\xff\xfe\n",
    "NaN": b'{"progress": NaN}\n',
    "an unknown key": b'{"done": true, "secret": 1}\n',
    "a forged preview": b'{"done": true, "preview": {"kind": "spreadsheet", "sheets": []}}\n',
    "an error code it may not give": b'{"error": "x", "code": "invalid_spec"}\n',
    "nesting a hundred thousand deep": b"[" * 100_000 + b"\n",
    "a line of 2 MiB": b"x" * (2 << 20),
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_untrusted_message_a_malformed_line_fails_its_own_job_only(box: Sandbox, name: str) -> None:
    zygote = box.pid
    assert zygote is not None
    innocent = asyncio.create_task(render_code(box, SLOW_GOOD_CODE))
    spec = asyncio.create_task(box.render(box.new_render_id(), "document", "spec",
                                          {"blocks": [{"type": "paragraph", "text": "innocent"}]}, "t", noop))
    with pytest.raises(RenderError) as refused:
        await render_code(box, writes(MALFORMED[name]))
    assert "malformed message" in str(refused.value), str(refused.value)
    assert not refused.value.given_back and not refused.value.cancelled
    # The other jobs, code and spec, complete; the zygote is the same process, never restarted.
    assert openpyxl.load_workbook(await innocent)["Fine"]["A2"].value == "Coffee"
    assert docx.Document(str((await spec).path)).paragraphs[-1].text == "innocent"
    assert box.pid == zygote and box.restarts == 0 and psutil.pid_exists(zygote)
    # The attacker was killed (it was to sleep for 50 s), and nothing of it is left.
    await wait_until(lambda: not sandbox_processes(zygote), timeout=10)
    assert openpyxl.load_workbook(await render_code(box, GOOD_CODE))["Fine"]["B2"].value == 3.5


# --- forged done ------------------------------------------------------------------------------------

FORGED_DONE = b'{"done": true}\n'


@pytest.mark.parametrize("forged", [True, False])
async def test_forged_done_over_garbage_fails_the_job_as_invalid_output(box: Sandbox, forged: bool) -> None:
    # Garbage saved, then a forged `done` and a quiet exit (or just the end of the code): either way the
    # job's word is not taken, the check's is.
    code = "open(output_path, 'wb').write(b'PK\\x03\\x04 not really a workbook')\n"
    code += writes(FORGED_DONE, "os._exit(0)") if forged else ""
    render_id = box.new_render_id()
    with pytest.raises(RenderError) as refused:
        await box.render(render_id, "spreadsheet", "code", code, "t", noop)
    assert refused.value.code == "invalid_output" and not refused.value.given_back
    assert "is not an Excel workbook: it is no zip archive" in str(refused.value)
    assert not (box.out_dir / f"{render_id}.xlsx").exists()  # nothing was delivered


@pytest.mark.parametrize("job_type,kind", [("document", "Word document"), ("presentation", "PowerPoint presentation"),
                                           ("pdf", "PDF")])
async def test_forged_done_over_a_file_of_another_kind_fails_as_invalid_output(box: Sandbox, job_type: str,
                                                                              kind: str) -> None:
    # A real workbook, saved as a .docx / .pptx / .pdf: it opens, but not as what the job promised.
    code = GOOD_CODE + writes(FORGED_DONE, "os._exit(0)")
    with pytest.raises(RenderError) as refused:
        await render_code(box, code, job_type)
    assert refused.value.code == "invalid_output", str(refused.value)
    assert kind in str(refused.value)


# --- zip bomb ---------------------------------------------------------------------------------------


def deflated(head: bytes, unit: bytes, times: int, tail: bytes) -> tuple[bytes, int, int]:
    """A raw deflate stream of head + unit * times + tail, cheaply: each part is compressed on its own (a
    full flush between), so the unit's block is the same every time. With its CRC-32 and size."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(unit) + compressor.flush(zlib.Z_FULL_FLUSH)
    last = compressor.compress(tail) + compressor.flush()
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(unit, crc)
    return first + block * times + last, zlib.crc32(tail, crc), len(head) + len(unit) * times + len(tail)


def zip_with(members: dict[str, bytes], name: str, stream: tuple[bytes, int, int],
             declared: int | None = None) -> bytes:
    """A zip of the given members plus one deflated member written by hand from a raw deflate stream;
    `declared` is the size its headers claim (its real size unless given)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    body = out.getvalue()
    end = body.rindex(b"PK\x05\x06")
    entries = int.from_bytes(body[end + 10:end + 12], "little")
    directory_size = int.from_bytes(body[end + 12:end + 16], "little")
    directory_offset = int.from_bytes(body[end + 16:end + 20], "little")
    files, directory = body[:directory_offset], body[directory_offset:directory_offset + directory_size]
    data, crc, size = stream
    sizes = (crc.to_bytes(4, "little") + len(data).to_bytes(4, "little")
             + (size if declared is None else declared).to_bytes(4, "little") + len(name).to_bytes(2, "little"))
    local = b"PK\x03\x04" + (20).to_bytes(2, "little") + bytes(2) + (8).to_bytes(2, "little") + bytes(4) + sizes
    central = (b"PK\x01\x02" + (20).to_bytes(2, "little") * 2 + bytes(2) + (8).to_bytes(2, "little") + bytes(4)
               + sizes + bytes(12) + len(files).to_bytes(4, "little"))
    files += local + bytes(2) + name.encode() + data
    directory += central + name.encode()
    return (files + directory + b"PK\x05\x06" + bytes(4) + (entries + 1).to_bytes(2, "little") * 2
            + len(directory).to_bytes(4, "little") + len(files).to_bytes(4, "little") + bytes(2))


def parts_of(document: Any, leave_out: str) -> dict[str, bytes]:
    out = io.BytesIO()
    document.save(out)
    with zipfile.ZipFile(out) as archive:
        return {name: archive.read(name) for name in archive.namelist() if name != leave_out}


@functools.cache
def bombs() -> dict[str, tuple[str, bytes, tuple[str, ...]]]:
    """name: (job type, the file, what the job's error says (one of))."""
    workbook = parts_of(openpyxl.Workbook(), "xl/worksheets/sheet1.xml")
    zeros = deflated(b"", bytes(1 << 20), 1024, b"")  # a GiB of zeros in a MiB
    paragraphs = deflated(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="'
                          b'http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>',
                          b"<w:p/>" * ((1 << 20) // 6), 400, b"</w:body></w:document>")
    return {
        "a gigabyte of zeros": ("spreadsheet", zip_with(workbook, "xl/worksheets/sheet1.xml", zeros),
                                ("would unpack to 1024 MB",)),
        "sizes that lie": ("spreadsheet", zip_with(workbook, "xl/worksheets/sheet1.xml", zeros, declared=1000),
                           ("does not open as an Excel workbook",)),
        # 400 MB of empty paragraphs: within what a document may unpack to, but more than the check may
        # hold in memory: it runs out (or out of CPU time) and dies, and only the job fails.
        "a document that needs gigabytes": ("document", zip_with(parts_of(docx.Document(), "word/document.xml"),
                                                                 "word/document.xml", paragraphs),
                                            ("too large to open", "could not be checked")),
    }


@pytest.mark.parametrize("name", ["a gigabyte of zeros", "sizes that lie", "a document that needs gigabytes"])
async def test_zip_bomb_fails_its_job_and_the_checker_and_zygote_go_on(box: Sandbox, name: str) -> None:
    zygote = box.pid
    job_type, data, expected = bombs()[name]
    code = (f"import base64\nopen(output_path, 'wb').write(base64.b64decode({base64.b64encode(data).decode()!r}))\n"
            + writes(FORGED_DONE, "os._exit(0)"))
    with pytest.raises(RenderError) as refused:
        await render_code(box, code, job_type)
    assert refused.value.code == "invalid_output" and not refused.value.given_back, str(refused.value)
    assert any(text in str(refused.value) for text in expected), str(refused.value)
    assert box.pid == zygote and box.restarts == 0
    assert zygote is not None
    await wait_until(lambda: not sandbox_processes(zygote), timeout=10)
    assert openpyxl.load_workbook(await render_code(box, GOOD_CODE))["Fine"]["A2"].value == "Coffee"


# --- through a renderer: heartbeat poisoning, and a forged done ----------------------------------

# Text the jobstore refuses in a Heartbeat or a Fail (a NUL, control characters, DEL, C1) and that
# protobuf cannot even encode (a lone surrogate), as valid JSON on the pipe.
POISON = "poisoned\x00 text\x01 with\x1b[31m escapes, a lone surrogate \ud800, DEL\x7f and C1\x9b"


# One jobstore and renderer for the module's tests through a renderer (each checks that it goes on).
@pytest.fixture(scope="module")
async def jobstore(pg, template_db) -> AsyncIterator[RunningJobStore]:
    async with module_jobstore(pg, template_db) as running:
        yield running


@pytest.fixture(scope="module")
async def renderer(jobstore, tmp_path_factory) -> AsyncIterator[RendererProcess]:
    # A short lease, heard often: a lease lapses within 3 s unless a heartbeat lands.
    process = RendererProcess(jobstore.address, tmp_path_factory.mktemp("renderer"),
                              DOCJOBS_CODE_EXECUTION="sandbox", DOCJOBS_LEASE_MS="3000", DOCJOBS_HEARTBEAT_S="0.5",
                              DOCJOBS_SANDBOX_TIMEOUT_S="40", DOCJOBS_SANDBOX_CPU_S="20").start()
    yield process
    await process.shutdown()


def poisoned_progress(seconds: float) -> str:
    """Code that reports poisoned progress on its pipe five times a second for that long."""
    return FIND_PIPE + (f"import json\nfd = message_pipe()\nfor i in range({int(seconds * 5)}):\n"
                        f"    os.write(fd, (json.dumps({{'progress': 10 + i % 80, 'message': {POISON!r}}}) + '\\n')"
                        ".encode())\n    time.sleep(0.2)\n")


def clean(text: str) -> bool:
    return not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in text)


async def test_heartbeat_poisoning_progress_text_never_lets_the_lease_lapse(stub, renderer) -> None:
    job = await submit(stub, "spreadsheet", {"code": poisoned_progress(6) + GOOD_CODE}, max_retries=2)
    final, events = await wait_finished(stub, job.id, timeout=90)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error.message
    # It ran once: one claim, one attempt, though it reported for twice the lease.
    assert final.retry_count == 0 and {e.attempt for e in events} == {1}
    assert len([e for e in events if e.kind == pb.EVENT_KIND_STATUS and e.status == pb.JOB_STATUS_PROCESSING]) == 1
    progress = [e.message for e in events if e.kind == pb.EVENT_KIND_PROGRESS]
    assert any(m.startswith("poisoned text with[31m escapes") for m in progress), progress
    assert all(clean(m) for m in progress)
    assert "lease lost" not in renderer.log


async def test_heartbeat_poisoning_a_cancel_is_heard_at_once(stub, renderer) -> None:
    job = await submit(stub, "spreadsheet", {"code": poisoned_progress(30)})
    assert renderer.process is not None
    below = renderer.process.pid

    async def running() -> bool:
        current = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
        return current.status == pb.JOB_STATUS_PROCESSING and bool(sandbox_processes(below))

    await wait_until(running, timeout=30)
    await stub.Cancel(pb.CancelRequest(job_id=job.id))
    # Heard at the next heartbeat (every 0.5 s here): the render is killed long before its 40 s.
    await wait_until(lambda: not sandbox_processes(below), timeout=5)
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_CANCELLED


async def test_heartbeat_poisoning_error_text_never_keeps_a_failure_from_landing(stub, renderer) -> None:
    job = await submit(stub, "spreadsheet", {"code": f"raise RuntimeError({POISON!r})"}, max_retries=2)
    final, _ = await wait_finished(stub, job.id, timeout=60)
    assert final.status == pb.JOB_STATUS_FAILED
    assert final.error.code == "code_failed" and final.retry_count == 0, final.error.message
    assert "RuntimeError: poisoned text with[31m escapes" in final.error.message and clean(final.error.message)


async def test_forged_done_through_a_renderer_fails_as_invalid_output(stub, renderer, tmp_path) -> None:
    code = "open(output_path, 'w').write('not a workbook')\n" + writes(FORGED_DONE, "os._exit(0)")
    final, _ = await wait_finished(stub, (await submit(stub, "spreadsheet", {"code": code})).id)
    assert final.status == pb.JOB_STATUS_FAILED and final.retry_count == 0
    assert final.error.code == "invalid_output" and not final.error.retryable
    assert "not an Excel workbook" in final.error.message
    # The renderer goes on, and a good job's preview is the check's reading of the file.
    good, _ = await wait_finished(stub, (await submit(stub, "spreadsheet", {"code": GOOD_CODE})).id)
    assert good.status == pb.JOB_STATUS_COMPLETED, good.error.message
    result = json.loads(good.result_json)
    assert result["preview"]["sheets"][0]["rows"] == [["Item", "Amount"], ["Coffee", "3.5"]]
    await download(stub, result["artifact_id"], tmp_path / "good.xlsx")
    assert openpyxl.load_workbook(tmp_path / "good.xlsx")["Fine"]["B2"].value == 3.5
