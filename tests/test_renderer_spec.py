"""Spec mode end to end: a real renderer process renders each example; the files are read back with
independent readers and checked against what the spec asked for."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import docx
import openpyxl
import pptx
import pypdf
import pytest
from docx.text.paragraph import Paragraph

from docjobs.v1 import jobstore_pb2 as pb

from .conftest import RunningJobStore, module_jobstore
from .renderers import RendererProcess, download, example, submit, wait_finished


# One jobstore and one spec-mode renderer for the module: each test renders on the renderer the ones
# before it used.
@pytest.fixture(scope="module")
async def jobstore(pg, template_db) -> AsyncIterator[RunningJobStore]:
    async with module_jobstore(pg, template_db) as running:
        yield running


@pytest.fixture(scope="module")
async def renderer(jobstore, tmp_path_factory) -> AsyncIterator[RendererProcess]:
    process = RendererProcess(jobstore.address, tmp_path_factory.mktemp("renderer")).start()
    yield process
    await process.shutdown()


def style_name(paragraph: Paragraph) -> str:
    assert paragraph.style is not None  # python-docx gives every paragraph one
    name: str = paragraph.style.name
    return name


async def render_example(stub, job_type: str, tmp_path: Path) -> tuple[pb.Job, dict[str, Any], Path, list[pb.JobEvent]]:
    body = example(job_type)
    job = await submit(stub, job_type, {"spec": body["spec"]}, title=body["title"])
    final, events = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    result = json.loads(final.result_json)
    path = tmp_path / result["filename"]
    info = await download(stub, result["artifact_id"], path)
    assert info.size_bytes == result["size_bytes"] == path.stat().st_size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == result["sha256"] == info.sha256
    assert result["download_path"] == f"/api/jobs/{job.id}/artifact"
    assert "/" not in result["filename"] and str(tmp_path) not in final.result_json
    return final, result, path, events


async def test_spreadsheet_example(stub, renderer, tmp_path) -> None:
    _, result, path, events = await render_example(stub, "spreadsheet", tmp_path)
    assert result["filename"] == "Q3-2026-Regional-Sales-Report.xlsx"
    assert result["content_type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", "Orders"]
    summary = book["Summary"]
    assert [c.value for c in summary[1]] == ["Region", "July", "August", "September", "Q3 Total", "Growth Jul-Sep"]
    assert summary["A1"].font.bold and summary["A1"].fill.fgColor.rgb.endswith("1F4E78")
    assert [summary.cell(row=r, column=1).value for r in range(2, 8)] == [
        "North", "South", "East", "West", "Central", "Total"]
    assert summary["B2"].value == 182000 and summary["B2"].number_format == '"$"#,##0.00'
    assert summary["E2"].value == "=SUM(B2:D2)"
    assert summary["F2"].number_format == "0.0%"
    assert summary["B7"].value == "=SUM(B2:B6)"
    assert summary.freeze_panes == "A2"
    assert summary.auto_filter.ref == "A1:F7"
    assert summary.column_dimensions["A"].width == 16
    [chart] = summary._charts  # type: ignore[attr-defined]  # a sheet's charts: private, left out of the stubs
    assert chart.tagname == "barChart" and len(chart.series) == 3
    orders = book["Orders"]
    assert orders["B2"].value.date() == date(2026, 7, 3) and orders["B2"].number_format == "yyyy-mm-dd"
    assert orders["G2"].value == "=E2*F2"
    assert result["preview"]["sheets"][0]["rows"][1][:2] == ["North", "182000"]
    # A document done in a fraction of a second: pending, processing, completed (no progress report).
    assert [(e.kind, e.status) for e in events if e.kind != pb.EVENT_KIND_PROGRESS] == [
        (pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PENDING), (pb.EVENT_KIND_STATUS, pb.JOB_STATUS_PROCESSING),
        (pb.EVENT_KIND_COMPLETED, pb.JOB_STATUS_COMPLETED)]


async def test_document_example(stub, renderer, tmp_path) -> None:
    _, result, path, _ = await render_example(stub, "document", tmp_path)
    document = docx.Document(str(path))
    headings = [(style_name(p), p.text) for p in document.paragraphs if style_name(p).startswith(("Heading", "Title"))]
    assert headings == [
        ("Title", "Memo: Hybrid Work Policy Update"), ("Heading 1", "Summary"), ("Heading 1", "What changes"),
        ("Heading 2", "Next steps"), ("Heading 2", "Office days by team"), ("Heading 3", "Frequently asked questions"),
        ("Heading 1", "Appendix: policy text")]
    summary = next(p for p in document.paragraphs if p.text.startswith("Starting"))
    bold = [r.text for r in summary.runs if r.bold]
    italic = [r.text for r in summary.runs if r.italic]
    assert bold == ["January 5, 2027"] and italic == ["Core collaboration days are Tuesday and Wednesday."]
    bullets = [p.text for p in document.paragraphs if style_name(p) == "List Bullet"]
    numbered = [p.text for p in document.paragraphs if style_name(p) == "List Number"]
    assert len(bullets) == 3 and bullets[0].startswith("Three office days")
    assert numbered[0] == "Managers confirm team schedules by December 15."
    [table] = document.tables
    assert [c.text for c in table.rows[0].cells] == ["Team", "Office days", "Owner"]
    assert [c.text for c in table.rows[2].cells] == ["Sales", "Mon, Tue, Wed", "J. Okafor"]
    assert all(r.bold for r in table.rows[0].cells[0].paragraphs[0].runs)
    assert "w:br" in document.element.xml and 'w:type="page"' in document.element.xml
    assert document.core_properties.title == "Memo: Hybrid Work Policy Update"
    assert result["preview"]["headings"][:2] == ["Memo: Hybrid Work Policy Update", "Summary"]


async def test_pdf_example(stub, renderer, tmp_path) -> None:
    _, result, path, _ = await render_example(stub, "pdf", tmp_path)
    reader = pypdf.PdfReader(str(path))
    assert reader.metadata is not None
    assert reader.metadata.title == "Invoice INV-2026-0117"
    assert reader.metadata.author == "Northwind Design Studio"
    width, height = (float(v) for v in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    text = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    for expected in ("Invoice INV-2026-0117", "Brand identity workshop", "£11,304.00", "Total due",
                     "Thank you for your business.", "Page 1"):
        assert expected in text
    assert result["preview"]["pages"] == len(reader.pages)
    assert "Invoice INV-2026-0117" in result["preview"]["firstPageText"]
    assert "Brand identity workshop" in result["preview"]["firstPageText"]  # table cells count too
    assert text.count("Invoice INV-2026-0117") == 1  # the spec's heading is not repeated as a title


async def test_pdf_pages_are_numbered_and_sized(stub, renderer, tmp_path) -> None:
    blocks = [{"type": "heading", "text": f"Section {i}", "level": 1} for i in range(3)]
    blocks.insert(1, {"type": "pageBreak"})
    blocks.insert(3, {"type": "pageBreak"})
    job = await submit(stub, "pdf", {"spec": {"pageSize": "Letter", "orientation": "landscape", "blocks": blocks}},
                       title="Three pages")
    final, _ = await wait_finished(stub, job.id)
    result = json.loads(final.result_json)
    path = tmp_path / "three.pdf"
    await download(stub, result["artifact_id"], path)
    reader = pypdf.PdfReader(str(path))
    assert len(reader.pages) == 3
    assert [round(float(v)) for v in reader.pages[0].mediabox.upper_right] == [792, 612]
    for n, page in enumerate(reader.pages, start=1):
        assert f"Page {n}" in page.extract_text()


async def test_presentation_example(stub, renderer, tmp_path) -> None:
    _, result, path, _ = await render_example(stub, "presentation", tmp_path)
    deck = pptx.Presentation(str(path))
    slides = list(deck.slides)
    assert [s.shapes.title.text for s in slides] == [
        "Q3 2026 Quarterly Business Review", "Highlights", "Revenue by month (USD thousands)", "Pipeline for Q4",
        "Q4 priorities"]
    assert slides[0].placeholders[1].text == "Revenue, customers and the plan for Q4"
    body = slides[1].placeholders[1].text_frame.paragraphs
    assert [(p.text, p.level) for p in body][:2] == [("Revenue $3.19M, up 11% on Q2", 0),
                                                      ("East region led with $644K", 1)]
    chart = next(s for s in slides[2].shapes if s.has_chart).chart
    assert list(chart.plots[0].categories) == ["July", "August", "September"]
    assert [s.name for s in chart.series] == ["2026", "2025"]
    assert list(chart.series[0].values) == [811.3, 845.7, 912.4]
    table = next(s for s in slides[3].shapes if s.has_table).table
    assert [table.cell(0, c).text for c in range(3)] == ["Stage", "Deals", "Value (USD)"]
    assert table.cell(1, 0).text == "Qualified" and table.cell(1, 1).text == "42"
    assert slides[0].notes_slide.notes_text_frame.text.startswith("Welcome everyone")
    assert result["preview"] == {"kind": "presentation", "slides": 5, "titles": [s.shapes.title.text for s in slides]}


async def test_invalid_spec_fails_for_good_naming_the_field(stub, renderer) -> None:
    job = await submit(stub, "spreadsheet", {"spec": {"sheets": [{"name": "A", "columns": [{"header": "x"}],
                                                                  "rows": [[{"formula": ""}]]}]}}, max_retries=3)
    final, events = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_FAILED and final.retry_count == 0
    assert final.error.code == "invalid_spec"
    assert final.error.message.startswith("spec.sheets[0].rows[0][0].formula:")
    assert [e.kind for e in events].count(pb.EVENT_KIND_FAILED) == 1


async def test_a_chart_over_a_missing_column_is_a_clear_error(stub, renderer) -> None:
    spec = {"sheets": [{"name": "A", "columns": [{"header": "x"}, {"header": "y"}], "rows": [["a", 1]],
                        "charts": [{"type": "line", "categoryColumn": 0, "valueColumns": [5]}]}]}
    final, _ = await wait_finished(stub, (await submit(stub, "spreadsheet", {"spec": spec})).id)
    assert final.status == pb.JOB_STATUS_FAILED and final.error.code == "invalid_spec"
    assert "spec.sheets[0].charts[0].valueColumns[0]" in final.error.message


async def test_text_that_looks_like_a_formula_stays_text(stub, renderer, tmp_path) -> None:
    spec = {"sheets": [{"name": "A", "columns": [{"header": "note"}], "rows": [["=HYPERLINK(\"http://x\",\"y\")"]]}]}
    final, _ = await wait_finished(stub, (await submit(stub, "spreadsheet", {"spec": spec})).id)
    path = tmp_path / "a.xlsx"
    await download(stub, json.loads(final.result_json)["artifact_id"], path)
    cell = openpyxl.load_workbook(path)["A"]["A2"]
    assert cell.data_type == "s" and cell.value.startswith("=HYPERLINK")


async def test_code_mode_is_off_by_default(stub, renderer) -> None:
    job = await submit(stub, "spreadsheet", {"code": "import openpyxl\nopenpyxl.Workbook().save(output_path)"})
    final, _ = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_FAILED and final.retry_count == 0
    assert final.error.code == "code_execution_disabled"
    assert "DOCJOBS_CODE_EXECUTION" in final.error.message


async def test_jobs_at_the_payload_limit_render_however_many_a_renderer_takes_at_once(stub, renderer,
                                                                                      tmp_path) -> None:
    """A payload may be 4 MiB. Three such jobs pushed together passed what one gRPC message holds (16 MiB),
    and a renderer's channel took no message over 4 MiB (grpc's default): the jobs stayed leased to a
    worker that never had them, and failed when their retries ran out without ever being rendered."""
    row = "x" * 30_000
    rows = [[f"{i}{row}"] for i in range(137)]
    spec = {"sheets": [{"name": "Big", "columns": [{"header": "Text"}], "rows": rows}]}
    payload = json.dumps({"spec": spec})
    assert 4_000_000 < len(payload) <= 4 * 1024 * 1024
    jobs = [(await stub.Enqueue(pb.EnqueueRequest(job_type="spreadsheet", user_id=f"big-{i}", title="Big",
                                                  payload_json=payload))).job for i in range(4)]
    for job in jobs:
        final, _ = await wait_finished(stub, job.id, timeout=120)
        assert final.status == pb.JOB_STATUS_COMPLETED, final.error
        assert final.retry_count == 0  # rendered on its first attempt: none was lost on the way
    result = json.loads(final.result_json)
    path = tmp_path / result["filename"]
    await download(stub, result["artifact_id"], path)
    sheet = openpyxl.load_workbook(path)["Big"]
    assert sheet.max_row == 138 and sheet["A138"].value == f"136{row}"
