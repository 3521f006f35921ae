"""Renditions end to end: real renderer processes (LibreOffice in its box, pdfium), the real gateway.

Each example type yields a PDF of the right number of pages and a PNG thumbnail at least 400 px wide;
a code-mode document that links to a local file and to a URL converts without reading either; a
converter killed mid-conversion fails the rendition only; a bad `renditions` value is a 422."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
import pypdf
import pytest

from .conftest import wait_until
from .gateway_client import bearer
from .renderers import RendererProcess, example

pytestmark = [pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed"),
              pytest.mark.timeout(300)]  # each starts LibreOffice (seconds of CPU) on a shared machine


@pytest.fixture
async def renderer(jobstore, tmp_path):
    process = RendererProcess(jobstore.address, tmp_path / "renderer", DOCJOBS_CODE_EXECUTION="sandbox").start()
    yield process
    await process.shutdown()


async def post(http, gateway, body: dict[str, Any], user: str = "alice") -> tuple[int, dict[str, Any]]:
    data = io.BytesIO(json.dumps(body).encode())  # a large body from a buffer, not as one bytes object
    async with http.post(gateway.base + "/api/jobs", data=data,
                         headers={**bearer(user), "Content-Type": "application/json"}) as r:
        return r.status, await r.json()


async def finished(http, gateway, job_id: str, user: str = "alice", timeout: float = 120) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        async with http.get(f"{gateway.base}/api/jobs/{job_id}", headers=bearer(user)) as r:
            job: dict[str, Any] = await r.json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return await wait_until(done, timeout=timeout, interval=0.2)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def fetch(http, gateway, url: str) -> tuple[int, str, bytes]:
    async with http.get(gateway.base + url) as r:  # a plain link: its token is in the URL
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_each_example_type_yields_a_pdf_and_a_thumbnail(http, gateway, renderer) -> None:
    jobs = {}
    for job_type in ("document", "spreadsheet", "presentation", "pdf"):
        status, created = await post(http, gateway, {**example(job_type), "renditions": ["pdf", "thumbnail"]})
        assert status == 202, created
        jobs[job_type] = created["jobId"]
    for job_type, job_id in jobs.items():
        job = await finished(http, gateway, job_id)
        assert job["status"] == "completed", job
        made = job["result"]["renditions"]
        assert set(made) == {"pdf", "thumbnail"}, made
        assert "error" not in made["pdf"] and "error" not in made["thumbnail"], made
        status, content_type, pdf = await fetch(http, gateway, made["pdf"]["url"])
        assert status == 200 and content_type == "application/pdf" and len(pdf) == made["pdf"]["sizeBytes"]
        pages = len(pypdf.PdfReader(io.BytesIO(pdf)).pages)
        assert made["pdf"]["pages"] == pages
        spec = example(job_type)["spec"]
        if job_type == "presentation":
            assert pages == len(spec["slides"])
        elif job_type == "pdf":
            _, _, document = await fetch(http, gateway, job["result"]["downloadUrl"])
            assert pdf == document  # a pdf job's PDF is the document itself
        elif job_type == "spreadsheet":
            assert pages >= len(spec["sheets"])
        else:
            assert pages >= 1
        status, content_type, png = await fetch(http, gateway, made["thumbnail"]["url"])
        assert status == 200 and content_type == "image/png" and len(png) == made["thumbnail"]["sizeBytes"]
        width, height = png_size(png)
        assert width >= 400 and (width, height) == (made["thumbnail"]["width"], made["thumbnail"]["height"])
        # Another user's token cannot read them.
        async with http.get(gateway.base + made["thumbnail"]["url"].split("?")[0], headers=bearer("mallory")) as r:
            assert r.status == 404


async def test_a_bad_renditions_value_is_a_422_naming_the_field(http, gateway) -> None:
    for value in ["pdf", ["pdf", "pdf"], ["png"], [1], {"pdf": True}]:
        status, answer = await post(http, gateway, {**example("document"), "renditions": value})
        assert status == 422 and answer["error"]["field"] == "renditions", (value, answer)


class Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        Recorder.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


LINKING_CODE = """
import zipfile
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
fields = ['INCLUDETEXT "{secret}"', 'INCLUDEPICTURE "{url}/picture.png" \\\\d', 'INCLUDETEXT "{url}/text.txt"']
paragraphs = "".join('<w:p><w:fldSimple w:instr="%s"><w:r><w:t>linked</w:t></w:r></w:fldSimple></w:p>'
                     % f.replace('"', "&quot;")
                     for f in fields)
drawing = ('<w:p><w:r><w:drawing><wp:inline><wp:extent cx="914400" cy="914400"/><wp:docPr id="1" name="p"/>'
           '<a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">'
           '<pic:pic><pic:nvPicPr><pic:cNvPr id="1" name="p"/><pic:cNvPicPr/></pic:nvPicPr>'
           '<pic:blipFill><a:blip r:link="rIdImage"/><a:stretch><a:fillRect/></a:stretch></pic:blipFill>'
           '<pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="914400" cy="914400"/></a:xfrm>'
           '<a:prstGeom prst="rect"/></pic:spPr></pic:pic></a:graphicData></a:graphic></wp:inline>'
           '</w:drawing></w:r></w:p>')
document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<w:document xmlns:w="%s" xmlns:r="%s" '
            'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
            'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
            'xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture">'
            '<w:body><w:p><w:r><w:t>Links</w:t></w:r></w:p>%s%s</w:body></w:document>' % (W, R, paragraphs, drawing))
with zipfile.ZipFile(output_path, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8"?><Types '
               'xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
               '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
               '<Default Extension="xml" ContentType="application/xml"/>'
               '<Override PartName="/word/document.xml" ContentType="application/'
               'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
               '<Override PartName="/word/styles.xml" ContentType="application/'
               'vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/></Types>')
    z.writestr("_rels/.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships '
               'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
               'Type="%s/officeDocument" Target="word/document.xml"/></Relationships>' % R)
    z.writestr("word/_rels/document.xml.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships '
               'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship '
               'Id="rIdImage" Type="%s/image" Target="{url}/linked-image.png" TargetMode="External"/>'
               '<Relationship Id="rIdStyles" Type="%s/styles" Target="styles.xml"/></Relationships>' % (R, R))
    # Styles of its own: a reader of a document without them falls back on python-docx's template files.
    z.writestr("word/styles.xml", '<?xml version="1.0" encoding="UTF-8"?><w:styles xmlns:w="%s"/>' % W)
    z.writestr("word/document.xml", document)
"""

EXTERNAL_XLSX_CODE = """
from openpyxl import Workbook
wb = Workbook()
ws = wb.active
ws["A1"] = "linked"
ws["A2"] = "=HYPERLINK(\\"{url}/cell\\", \\"x\\")"
ws["A3"] = "='file://{secret}'#$Sheet1.A1"
ws["A4"] = '=WEBSERVICE("{url}/webservice")'
wb.save(output_path)
"""


async def test_a_code_document_converts_without_reading_its_links(http, gateway, renderer, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's own file\n")
    old = time.time() - 86_400
    os.utime(secret, (old - 86_400, old))  # atime before mtime: any read would move it (relatime)
    before = os.stat(secret).st_atime
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        jobs = []
        for job_type, code in (("document", LINKING_CODE), ("spreadsheet", EXTERNAL_XLSX_CODE)):
            status, created = await post(http, gateway, {
                "documentType": job_type, "title": "Links", "sessionId": "s",
                "code": code.replace("{secret}", str(secret)).replace("{url}", url),
                "renditions": ["pdf", "thumbnail"]})
            assert status == 202, created
            jobs.append(created["jobId"])
        for job_id in jobs:
            job = await finished(http, gateway, job_id)
            assert job["status"] == "completed", job.get("error")
            made = job["result"]["renditions"]
            assert "error" not in made["pdf"] and "error" not in made["thumbnail"], made
            _, _, pdf = await fetch(http, gateway, made["pdf"]["url"])
            text = "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
            assert "the host's own file" not in text
    finally:
        server.shutdown()
        server.server_close()
    assert Recorder.seen == []
    assert os.stat(secret).st_atime == before


def soffice_processes(renderer: RendererProcess) -> list[tuple[psutil.Process, list[str]]]:
    assert renderer.process is not None
    found = []
    for child in psutil.Process(renderer.process.pid).children(recursive=True):
        try:
            if child.name().startswith("soffice") and child.status() != psutil.STATUS_ZOMBIE:
                found.append((child, child.cmdline()))
        except psutil.Error:  # gone meanwhile
            pass
    return found


def big_spreadsheet() -> dict[str, Any]:
    rows = [[f"row {i}", i, i * 1.5, f"text {i} " * 4] for i in range(20_000)]  # seconds of converting
    return {"sheets": [{"name": "Data", "columns": [{"header": "Name"}, {"header": "N", "format": "integer"},
                                                    {"header": "X", "format": "decimal"}, {"header": "Text"}],
                        "rows": rows}]}


async def test_a_converter_killed_mid_conversion_fails_only_the_rendition(http, gateway, renderer) -> None:
    status, created = await post(http, gateway, {"documentType": "spreadsheet", "title": "Big", "sessionId": "s",
                                                 "spec": big_spreadsheet(), "renditions": ["pdf", "thumbnail"]})
    assert status == 202, created

    polls = 0

    async def converting() -> list[psutil.Process] | None:
        # The warm office (it holds its keep-open document) and a second soffice handing it the job.
        nonlocal polls
        found = soffice_processes(renderer)
        warm = [p for p, cmdline in found if any("keep-open" in a for a in cmdline)]
        busy = [p for p, cmdline in found if any(a.endswith("/in/document.xlsx") for a in cmdline)]  # not a warm-up
        if warm and busy:
            return warm + busy
        polls += 1
        if polls % 40 == 0:  # a job that ended before its conversion was seen says why here
            async with http.get(f"{gateway.base}/api/jobs/{created['jobId']}", headers=bearer("alice")) as r:
                job = await r.json()
            assert job["status"] not in ("completed", "failed"), job
        return None

    # The whole office dies (a client that outlives the warm office converts the document itself).
    for process in await wait_until(converting, timeout=240, interval=0.05):
        with contextlib.suppress(psutil.Error):
            process.kill()
    job = await finished(http, gateway, created["jobId"])
    assert job["status"] == "completed", job
    made = job["result"]["renditions"]
    # converter_crashed, as a rule; rendition_failed should the office still look alive when it is asked
    assert made["pdf"]["error"]["code"] in ("converter_crashed", "rendition_failed"), made
    status, _, document = await fetch(http, gateway, job["result"]["downloadUrl"])
    assert status == 200 and document[:2] == b"PK"
    # The next document gets a fresh converter.
    status, created = await post(http, gateway, {**example("presentation"), "renditions": ["thumbnail"]})
    job = await finished(http, gateway, created["jobId"])
    assert job["status"] == "completed" and "url" in job["result"]["renditions"]["thumbnail"], job


async def test_without_libreoffice_an_office_rendition_fails_the_job_saying_what_to_install(
        http, gateway, jobstore, tmp_path) -> None:
    # A renderer whose PATH has no soffice: as on a machine without LibreOffice.
    (tmp_path / "bin").mkdir()
    bare = RendererProcess(jobstore.address, tmp_path / "bare", PATH=str(tmp_path / "bin")).start()
    try:
        status, office = await post(http, gateway, {**example("presentation"), "renditions": ["thumbnail"]})
        assert status == 202
        status, plain = await post(http, gateway, example("presentation"))
        status, pdf = await post(http, gateway, {**example("pdf"), "renditions": ["pdf", "thumbnail"]})
        failed = await finished(http, gateway, office["jobId"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "renditions_unavailable", failed
        assert "libreoffice-impress-nogui" in failed["error"]["message"]
        # Everything else still works there: a document without renditions, a pdf job's thumbnail.
        assert (await finished(http, gateway, plain["jobId"]))["status"] == "completed"
        job = await finished(http, gateway, pdf["jobId"])
        assert job["status"] == "completed" and "url" in job["result"]["renditions"]["thumbnail"], job
    finally:
        await bare.shutdown()
