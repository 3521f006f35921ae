"""Code mode: model-written Python runs only in the sandbox. Each test is a real escape attempt; each
ends in a failed job with a clear message, the renderer keeps serving, and nothing leaks to the host."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import openpyxl
import psutil
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from renderer.sandbox.codebox import UID_BASE, UID_END
from renderer.sandbox.codezygote import SPARE_NAME, TMPFS_FILES

from .conftest import RunningJobStore, module_jobstore, wait_until
from .renderers import RendererProcess, download, submit, wait_finished

LIMITS = {"DOCJOBS_CODE_EXECUTION": "sandbox", "DOCJOBS_SANDBOX_TIMEOUT_S": "8", "DOCJOBS_SANDBOX_CPU_S": "3",
          "DOCJOBS_SANDBOX_MEMORY_MB": "256", "DOCJOBS_SANDBOX_FILE_MB": "20", "DOCJOBS_SANDBOX_PROCESSES": "8"}
GOOD_CODE = """
from openpyxl import Workbook
wb = Workbook()
ws = wb.active
ws.title = "Made by code"
ws.append(["Item", "Amount"])
ws.append(["Coffee", 3.5])
ws["B3"] = "=SUM(B2:B2)"
wb.save(output_path)
"""


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


# One jobstore and one code-mode renderer for the whole module: every test also checks that the renderer
# keeps serving after its attempt (and escapes leave nothing behind), so sharing them is part of what is
# tested, and a code-mode renderer's start (its zygotes and warm boxes) is most of a small test's time.
@pytest.fixture(scope="module")
async def jobstore(pg, template_db) -> AsyncIterator[RunningJobStore]:
    async with module_jobstore(pg, template_db) as running:
        yield running


@pytest.fixture(scope="module")
async def code_renderer(jobstore, tmp_path_factory) -> AsyncIterator[RendererProcess]:
    process = RendererProcess(jobstore.address, tmp_path_factory.mktemp("code-renderer"), **LIMITS).start()
    yield process
    await process.shutdown()
    await process.shutdown()


def sandbox_processes() -> list[psutil.Process]:
    """Live processes running as a sandbox uid (a zombie or one exiting right now has stopped running)."""
    found = []
    # Every attribute read by process_iter, which skips a process that ends while it is read.
    for proc in psutil.process_iter(["uids", "status", "name"]):
        uids = proc.info["uids"]
        if uids is None or not UID_BASE <= uids.real < UID_END:
            continue
        if (proc.info["status"] not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) and proc.is_running()
                and proc.info["name"] != SPARE_NAME):  # a spare box waiting for its job has run nothing
            found.append(proc)
    return found


def sandbox_processes_of(renderer: RendererProcess) -> list[psutil.Process]:
    """The live sandbox processes under this renderer (not those another test's renderer left ending)."""
    assert renderer.process is not None
    try:
        below = {p.pid for p in psutil.Process(renderer.process.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return []
    return [p for p in sandbox_processes() if p.pid in below]


async def no_sandbox_process_left(renderer: RendererProcess) -> None:
    """No process of a sandbox uid under this renderer survives its job (each is killed as the job ends;
    allow the second that takes)."""
    await wait_until(lambda: not sandbox_processes_of(renderer), timeout=5)


async def run_code(stub, code: str, job_type: str = "spreadsheet") -> pb.Job:
    job = await submit(stub, job_type, {"code": code}, title="Code job", max_retries=2)
    final, _ = await wait_finished(stub, job.id, timeout=60)
    return final


# Each library as model-written code uses it: python-docx and python-pptx open their default templates from
# the runtime when the code runs, long after the box imported them.
EVERY_TYPE = {
    "document": "from docx import Document\nd = Document()\nd.add_heading('Made by code')\nd.save(output_path)\n",
    "presentation": ("from pptx import Presentation\np = Presentation()\n"
                     "p.slides.add_slide(p.slide_layouts[0]).shapes.title.text = 'Made by code'\n"
                     "p.save(output_path)\n"),
    "pdf": ("from reportlab.pdfgen.canvas import Canvas\nc = Canvas(output_path)\n"
            "c.drawString(72, 720, 'Made by code')\nc.save()\n"),
    "spreadsheet": GOOD_CODE,
}


@pytest.mark.parametrize("job_type", list(EVERY_TYPE))
async def test_code_for_every_document_type_completes(stub, code_renderer, job_type: str) -> None:
    final = await run_code(stub, EVERY_TYPE[job_type], job_type)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    assert "Made by code" in json.dumps(json.loads(final.result_json)["preview"])


async def test_code_that_builds_a_workbook_completes(stub, code_renderer, tmp_path) -> None:
    final = await run_code(stub, GOOD_CODE)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    result = json.loads(final.result_json)
    assert result["mode"] == "code" and result["filename"] == "Code-job.xlsx"
    path = tmp_path / "out.xlsx"
    await download(stub, result["artifact_id"], path)
    sheet = openpyxl.load_workbook(path)["Made by code"]
    assert [[c.value for c in row] for row in sheet.iter_rows()] == [["Item", "Amount"], ["Coffee", 3.5],
                                                                      [None, "=SUM(B2:B2)"]]
    assert result["preview"]["sheets"][0]["name"] == "Made by code"


ESCAPES = {
    # The CPU limit (3 s) normally ends it; on a machine busy enough, the wall clock (8 s) comes first.
    "endless loop": ("while True:\n    pass", ("CPU time limit", "timed out after 8 s")),
    "sleeping forever": ("import time\ntime.sleep(3600)", "timed out after 8 s"),
    "memory bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", "memory"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()", "Resource temporarily unavailable"),
    "10 GB file": ("with open('big.bin', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'x' * 10**7)",
                   "larger than the limit of 20 MB"),
    "reading the environment": ("import os\nassert not os.environ.get('DOCJOBS_JOBSTORE_ADDRESS'), 'leak'\n"
                                "raise RuntimeError('environment: ' + ','.join(sorted(os.environ)))",
                                "environment: HOME"),
    # PID 1 of the job's own PID namespace is the job itself; no process outside has a number there.
    "reading /proc/1/environ": ("e = open('/proc/1/environ', 'rb').read()\n"
                                "raise RuntimeError('init: ' + ('LEAK' if b'DOCJOBS' in e else 'clean'))",
                                "init: clean"),
    "reading the renderer's environ": ("open('/proc/RENDERER/environ', 'rb').read()",
                                       "No such file or directory: '/proc/RENDERER/environ'"),
    "a TCP connection to 127.0.0.1": ("import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=3)",
                                      "Network is unreachable"),
    "writing outside the working directory": ("open('/etc/docjobs-escape-MARK', 'w').write('x')",
                                              ("Read-only file system", "Permission denied")),
    # The job's /tmp is its own scratch tmpfs (its working directory): the file stays there.
    "writing to /tmp": ("open('/tmp/docjobs-escape-MARK', 'w').write('x')", "saved no .xlsx file"),
    "writing to the parent directory": ("open('../docjobs-escape-MARK', 'w').write('x')",
                                        ("Read-only file system", "Permission denied")),
    "saving no file": ("x = 1 + 1", "saved no .xlsx file"),
    "saving two files": ("from openpyxl import Workbook\nWorkbook().save('a.xlsx')\nWorkbook().save('b.xlsx')",
                         "saved 2 .xlsx files"),
    "a syntax error": ("def broken(:\n    pass", "SyntaxError"),
    "a symlink to a secret": ("import os\nos.symlink('/etc/shadow', output_path)", "not a regular file"),
}


async def test_a_code_job_can_make_only_so_many_files(stub, code_renderer, tmp_path) -> None:
    """A job's tmpfs was bounded in bytes, not in files: a job making empty files held gigabytes of the
    host's kernel memory outside its memory limit (3 million files), and their teardown stalled the
    renderer's other jobs. It may make TMPFS_FILES, then the kernel refuses, and the job goes on."""
    code = ("import os\nmade = 0\ntry:\n    for i in range(20000):\n        open(f'f{i}', 'w').close()\n"
            "        made += 1\nexcept OSError:\n    pass\nfor i in range(10):\n    os.remove(f'f{i}')\n"
            "from openpyxl import Workbook\nwb = Workbook()\nwb.active['A1'] = made\nwb.save(output_path)\n")
    final = await run_code(stub, code)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    path = tmp_path / "made.xlsx"
    await download(stub, json.loads(final.result_json)["artifact_id"], path)
    made = openpyxl.load_workbook(path).worksheets[0]["A1"].value
    assert 3000 < made < TMPFS_FILES, made
    await no_sandbox_process_left(code_renderer)


@pytest.mark.parametrize("name", list(ESCAPES))
async def test_escape_attempt_fails_cleanly_and_leaks_nothing(stub, code_renderer, listener, name: str) -> None:
    mark = uuid.uuid4().hex
    code, expected = ESCAPES[name]
    renderer = str(code_renderer.process.pid)
    code = code.replace("PORT", str(listener)).replace("MARK", mark).replace("RENDERER", renderer)
    final = await run_code(stub, code)
    assert final.status == pb.JOB_STATUS_FAILED, name
    assert final.error.code == "code_failed" and not final.error.retryable and final.retry_count == 0
    alternatives = tuple(text.replace("RENDERER", renderer)
                         for text in (expected if isinstance(expected, tuple) else (expected,)))
    assert any(text in final.error.message for text in alternatives), final.error.message
    assert not (Path("/etc") / f"docjobs-escape-{mark}").exists()
    for place in (Path("/tmp"), Path(code_renderer.env["DOCJOBS_DATA_DIR"])):
        # os.walk, not glob: other programs' temporary directories may vanish while we look.
        assert not [d for d, dirs, files in os.walk(place) if f"docjobs-escape-{mark}" in dirs + files]
    # The renderer keeps serving: the next job completes.
    assert (await run_code(stub, GOOD_CODE)).status == pb.JOB_STATUS_COMPLETED
    await no_sandbox_process_left(code_renderer)
    assert code_renderer.process.poll() is None


async def test_a_background_process_left_by_the_code_is_killed(stub, code_renderer) -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\n" + GOOD_CODE
    final = await run_code(stub, code)
    assert final.status == pb.JOB_STATUS_COMPLETED
    await no_sandbox_process_left(code_renderer)


async def test_cancelling_a_running_code_job_aborts_it(stub, code_renderer) -> None:
    job = await submit(stub, "spreadsheet", {"code": "import time\ntime.sleep(3600)"})

    def job_boxes() -> list[psutil.Process]:
        # The box running a job names itself so; a spare's replacement, built as the job's box ends, is
        # a sandbox process too for the moment before it names itself a spare (which once made this flaky).
        return [p for p in sandbox_processes_of(code_renderer) if p.info["name"] == "docjobs job"]

    async def running() -> list[psutil.Process]:
        current = await stub.GetJob(pb.GetJobRequest(job_id=job.id))
        return job_boxes() if current.status == pb.JOB_STATUS_PROCESSING else []

    # As long as a renderer takes to start its sandbox on a busy machine (another test worker beside it).
    [box] = await wait_until(running, timeout=60, interval=0.05)
    await stub.Cancel(pb.CancelRequest(job_id=job.id))

    def aborted() -> bool:
        try:
            return not box.is_running() or box.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            return True

    await wait_until(aborted, timeout=10, interval=0.05)  # the render was aborted
    assert job_boxes() == []
    assert (await stub.GetJob(pb.GetJobRequest(job_id=job.id))).status == pb.JOB_STATUS_CANCELLED
    assert (await run_code(stub, GOOD_CODE)).status == pb.JOB_STATUS_COMPLETED
