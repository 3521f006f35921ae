"""Images, page furniture, structure, charts and themes in spec-mode documents, read back with readers
that are not ours: LibreOffice (docx -> PDF), poppler (pdftotext, pdfimages, pdffonts), pypdf,
python-docx, python-pptx, openpyxl. Hostile images are refused at the gateway where the schema can
tell, else the job fails naming the field."""

from __future__ import annotations

import base64
import io
import json
import random
import re
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path
from typing import Any

import docx
import openpyxl
import pptx
import pypdf
import pytest
from PIL import Image
from pptx.enum.shapes import MSO_SHAPE_TYPE

from docjobs import specs
from docjobs.v1 import jobstore_pb2 as pb
from renderer.spec import render

from .gateway_client import bearer
from .renderers import EXAMPLES, submit, wait_finished

HEADING, ACCENT = "#8B1A1A", "#2E8B57"
CHART = {"type": "column", "title": "Revenue by quarter", "categories": ["Q1", "Q2", "Q3", "Q4"],
         "series": [{"name": "2025", "values": [10, 12, 9, 14]}, {"name": "2026", "values": [11, 13, 12, 16]}]}

needs_office = pytest.mark.skipif(shutil.which("soffice") is None or shutil.which("pdftotext") is None,
                                  reason="LibreOffice and poppler-utils are installed by .ci/run")


def png(width: int = 200, height: int = 100, color: tuple[int, int, int] = (200, 30, 30)) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def jpeg(width: int = 120, height: int = 80) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 30, 200)).save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode()


def bomb_png(width: int = 6000, height: int = 5000) -> str:
    """30 megapixels of zeros: about 30 KB on the wire, 30 MB (90 as RGB) once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + one grey byte a pixel
    idat = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


THEME = {"fontFamily": "Times New Roman", "headingColor": HEADING, "accentColor": ACCENT,
         "logo": {"data": png(120, 40, (0, 128, 0)), "mediaType": "image/png", "widthCm": 2.5}}


def document_spec() -> dict[str, Any]:
    return {
        "title": "Quarterly report", "author": "Ada Lovelace", "language": "en-GB", "theme": THEME,
        "header": {"left": "{title}", "right": "Confidential"},
        "blocks": [
            {"type": "toc"},
            {"type": "heading", "text": "Introduction"},
            {"type": "paragraph", "runs": [{"text": "See "}, {"text": "our site", "link": "https://example.com/docs"},
                                           {"text": " or "}, {"text": "mail us", "link": "mailto:team@example.com"}]},
            {"type": "image", "data": png(), "mediaType": "image/png", "widthCm": 6, "caption": "A red box"},
            {"type": "image", "data": jpeg(), "mediaType": "image/jpeg"},
            {"type": "pageBreak"},
            {"type": "heading", "text": "Numbers", "level": 2},
            {"type": "chart", "chart": CHART},
            {"type": "table", "header": ["Quarter", "Revenue"], "rows": [["Q1", 10]]},
        ],
    }


def render_to(job_type: str, spec: dict[str, Any], path: Path) -> dict[str, Any]:
    specs.validate(job_type, spec)
    return render(job_type, spec, "Job title", path, lambda *_: None)


def run(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=180,
                          cwd=cwd).stdout


def to_pdf(path: Path) -> Path:
    """LibreOffice's own rendering of an office file (a profile of its own: tests may run at once)."""
    profile = path.parent / "lo-profile"
    run("soffice", f"-env:UserInstallation=file://{profile}", "--headless", "--convert-to", "pdf", "--outdir",
        path.parent, path)
    return path.with_suffix(".pdf")


def fills(content: bytes) -> set[str]:
    """The RGB fill colours a PDF content stream sets, as #RRGGBB."""
    found = set()
    for r, g, b in re.findall(rb"([\d.]+) ([\d.]+) ([\d.]+) rg", content):
        found.add("#" + "".join(f"{round(float(v) * 255):02X}" for v in (r, g, b)))
    return found


@needs_office
def test_docx_images_furniture_toc_links_chart_and_theme(tmp_path: Path) -> None:
    path = tmp_path / "report.docx"
    render_to("document", document_spec(), path)

    names = zipfile.ZipFile(path).namelist()
    assert "word/charts/chart1.xml" in names and any(n.startswith("word/embeddings/") for n in names)
    assert len([n for n in names if n.startswith("word/media/")]) == 3  # the logo, the PNG, the JPEG
    document = docx.Document(str(path))
    assert len(document.inline_shapes) == 3  # two pictures and the chart (the logo is in the header)
    links = {r.target_ref for r in document.part.rels.values() if r.is_external}
    assert links == {"https://example.com/docs", "mailto:team@example.com"}
    props = document.core_properties
    assert (props.title, props.author, props.language) == ("Quarterly report", "Ada Lovelace", "en-GB")
    styles = zipfile.ZipFile(path).read("word/styles.xml").decode()
    assert 'w:ascii="Times New Roman"' in styles and f'w:val="{HEADING[1:]}"' in styles
    assert f'w:fill="{ACCENT[1:]}"' in zipfile.ZipFile(path).read("word/document.xml").decode()
    settings = zipfile.ZipFile(path).read("word/settings.xml").decode()
    assert settings.index("<w:updateFields") < settings.index("<w:compat")  # Word wants the schema's order

    pdf = to_pdf(path)
    pages = run("pdftotext", "-layout", pdf, "-").split("\f")
    assert "Page 1 of 2" in pages[0] and "Page 2 of 2" in pages[1]
    assert "Quarterly report" in pages[1] and "Confidential" in pages[1]  # the header, on every page
    contents = pages[0][pages[0].index("Contents"):pages[0].index("See our site")]
    assert "Introduction" in contents and "Numbers" in contents  # the table of contents lists the headings
    assert "Revenue by quarter" in pages[1] and all(q in pages[1] for q in ("Q1", "Q4", "2025"))  # the chart
    images = run("pdfimages", "-list", pdf).splitlines()[2:]
    assert len(images) >= 4  # the logo on both pages, the PNG, the JPEG
    fonts = [line.split()[0] for line in run("pdffonts", pdf).splitlines()[2:]]
    # Every text in the theme's font (LibreOffice's metric-compatible Times New Roman, where it has no other).
    assert fonts and all(re.search("TimesNewRoman|LiberationSerif", font) for font in fonts), fonts


def test_pdf_images_furniture_toc_links_chart_and_theme(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    preview = render_to("pdf", document_spec(), path)
    assert preview["pages"] == 2

    pages = run("pdftotext", "-layout", path, "-").split("\f")
    assert "Page 1 of 2" in pages[0] and "Page 2 of 2" in pages[1]
    assert "Quarterly report" in pages[1] and "Confidential" in pages[1]
    toc = [line.split() for line in pages[0].splitlines() if "Introduction" in line or "Numbers" in line][:2]
    assert toc[0][0] == "Introduction" and toc[0][-1] == "1" and toc[1][0] == "Numbers" and toc[1][-1] == "2"
    assert "Revenue by quarter" in pages[1] and all(q in pages[1] for q in ("Q1", "Q4", "2025", "2026"))

    reader = pypdf.PdfReader(str(path))
    uris = {a.get_object()["/A"]["/URI"] for a in reader.pages[0].get("/Annots", [])
            if a.get_object().get("/A", {}).get("/URI")}
    assert uris == {"https://example.com/docs", "mailto:team@example.com"}
    assert len(reader.pages[0].images) == 3 and len(reader.pages[1].images) == 1  # logo, PNG, JPEG; logo
    assert reader.metadata is not None
    assert (reader.metadata.title, reader.metadata.author) == ("Quarterly report", "Ada Lovelace")
    assert str(reader.root_object["/Lang"]) == "en-GB"
    assert [o.title for o in reader.outline if not isinstance(o, list)][:1] == ["Introduction"]
    chart_page = reader.pages[1].get_contents()
    assert chart_page is not None
    drawn = chart_page.get_data()
    assert drawn.count(b" re") >= 8 and ACCENT in fills(drawn)  # the bars, vector, the first series in the accent
    assert HEADING in fills(reader.pages[0].get_contents().get_data())  # type: ignore[union-attr]
    assert "Times-Roman" in run("pdffonts", path) and "Times-Bold" in run("pdffonts", path)


def test_presentation_image_logo_chart_and_theme(tmp_path: Path) -> None:
    path = tmp_path / "deck.pptx"
    spec = {"title": "Quarterly report", "author": "Ada Lovelace", "language": "en-GB", "theme": THEME, "slides": [
        {"layout": "title", "title": "Quarterly report", "subtitle": "2026"},
        {"layout": "bullets", "title": "Highlights", "bullets": ["Up 12%"],
         "image": {"data": png(400, 300), "mediaType": "image/png", "caption": "Our shop"}},
        {"layout": "chart", "title": "Revenue", "chart": CHART}]}
    render_to("presentation", spec, path)
    deck = pptx.Presentation(str(path))
    assert (deck.core_properties.title, deck.core_properties.author, deck.core_properties.language) == (
        "Quarterly report", "Ada Lovelace", "en-GB")
    title, bullets, chart = deck.slides
    assert [s.shape_type for s in title.shapes].count(MSO_SHAPE_TYPE.PICTURE) == 1  # the logo
    picture = next(s for s in bullets.shapes if s.shape_type == MSO_SHAPE_TYPE.PICTURE)
    body = bullets.placeholders[1]
    assert body.height > 0 and body.left + body.width <= picture.left  # beside the bullets, not over them
    assert picture.width / picture.height == pytest.approx(4 / 3, rel=0.01)
    assert any(s.has_text_frame and s.text_frame.text == "Our shop" for s in bullets.shapes)
    for slide in deck.slides:
        assert str(slide.shapes.title.text_frame.paragraphs[0].font.color.rgb) == HEADING[1:]
    graphic = next(s for s in chart.shapes if s.has_chart)
    assert graphic.chart.chart_title.text_frame.text == "Revenue by quarter"
    assert str(graphic.chart.plots[0].series[0].format.fill.fore_color.rgb) == ACCENT[1:]
    theme = zipfile.ZipFile(path).read("ppt/theme/theme1.xml").decode()
    assert theme.count('<a:latin typeface="Times New Roman"/>') == 2 and f'val="{ACCENT[1:]}"' in theme


def test_spreadsheet_images_and_theme(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    spec = {"title": "Quarterly report", "author": "Ada Lovelace", "language": "en-GB", "theme": THEME, "sheets": [
        {"name": "Data", "columns": [{"header": "Quarter"}, {"header": "Revenue", "format": "integer"}],
         "rows": [["Q1", 10], ["Q2", 12]], "charts": [{"type": "column", "categoryColumn": 0, "valueColumns": [1]}],
         "images": [{"data": png(), "mediaType": "image/png", "anchor": "E20", "widthCm": 5}]}]}
    render_to("spreadsheet", spec, path)
    assert "xl/media/image1.png" in zipfile.ZipFile(path).namelist()
    book = openpyxl.load_workbook(path)
    sheet = book["Data"]
    (image,) = sheet._images  # type: ignore[attr-defined]
    assert image.anchor._from.col == 4 and image.anchor._from.row == 19  # E20
    assert image.anchor.ext.width == pytest.approx(5 * 360000, rel=0.01)  # 5 cm, in EMU
    assert sheet["A2"].font.name == sheet["A1"].font.name == "Times New Roman"
    assert sheet["A1"].fill.fgColor.rgb.endswith(ACCENT[1:])
    tab = sheet.sheet_properties.tabColor
    assert tab is not None and tab.rgb.endswith(HEADING[1:])
    assert (book.properties.title, book.properties.creator, book.properties.language) == (
        "Quarterly report", "Ada Lovelace", "en-GB")
    assert ACCENT[1:] in zipfile.ZipFile(path).read("xl/charts/chart1.xml").decode()


@pytest.mark.parametrize(("image", "field", "words"), [
    ({"data": bomb_png(), "mediaType": "image/png"}, "data", "decompression bomb"),
    ({"data": png(), "mediaType": "image/jpeg"}, "mediaType", "says image/jpeg but the data is image/png"),
    ({"data": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(), "mediaType": "image/png"}, "data",
     "not a readable image/png"),
    ({"data": base64.b64encode(base64.b64decode(png(1200, 1200))[:-400]).decode(), "mediaType": "image/png"}, "data",
     "not a readable image/png"),
    ({"data": "!!!!", "mediaType": "image/png"}, "data", "not base64"),
])
@pytest.mark.parametrize("job_type", ["document", "pdf", "presentation", "spreadsheet"])
def test_hostile_images_fail_with_the_field_named(tmp_path: Path, job_type: str, image: dict[str, Any], field: str,
                                                  words: str) -> None:
    """The renderer's own check (the schema's is bypassed: the spec goes straight to render)."""
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "document": ({"blocks": [{"type": "image", **image}]}, "spec.blocks[0]"),
        "pdf": ({"blocks": [{"type": "paragraph", "text": "x"}], "theme": {"logo": image}}, "spec.theme.logo"),
        "presentation": ({"slides": [{"layout": "bullets", "title": "t", "bullets": ["b"], "image": image}]},
                         "spec.slides[0].image"),
        "spreadsheet": ({"sheets": [{"name": "s", "columns": [{"header": "h"}],
                                     "images": [{**image, "anchor": "B2"}]}]}, "spec.sheets[0].images[0]"),
    }
    spec, where = cases[job_type]
    with pytest.raises(specs.SpecError) as raised:
        render(job_type, spec, "t", tmp_path / "out", lambda *_: None)
    assert raised.value.path == f"{where}.{field}" and words in raised.value.message


def post(http: Any, gateway: Any, body: dict[str, Any]) -> Any:
    # A file object: aiohttp warns that megabytes of bytes in one piece would hold up its loop.
    return http.post(gateway.base + "/api/jobs", data=io.BytesIO(json.dumps(body).encode()),
                     headers={**bearer("imogen"), "Content-Type": "application/json"})


@pytest.mark.parametrize(("image", "field", "words"), [
    ({"data": "bm90IGFuIGltYWdl!", "mediaType": "image/png"}, "spec.blocks[0].data", "is not base64"),
    ({"data": "A" * (3 * 1024 * 1024 // 3 * 4), "mediaType": "image/png"}, "spec.blocks[0].data",
     "an image may be at most 2 MB"),
    ({"data": png(), "mediaType": "image/gif"}, "spec.blocks[0].mediaType", "is not one of"),
    ({"url": "https://example.com/a.png", "mediaType": "image/png"}, "spec.blocks[0]", "url"),
])
async def test_the_gateway_refuses_what_the_schema_can_tell(http, gateway, stub, image, field, words) -> None:
    body = {"documentType": "pdf", "title": "t", "spec": {"blocks": [{"type": "image", **image}]}}
    async with post(http, gateway, body) as r:
        assert r.status == 422, await r.text()
        error = (await r.json())["error"]
    assert error["field"] == field and words in error["message"]
    assert list((await stub.ListJobs(pb.ListJobsRequest(user_id="imogen"))).jobs) == []


async def test_a_2_mb_image_fits_the_request_limit(http, gateway) -> None:
    raw = base64.b64decode(png(40, 40))
    padded = raw + b"\0" * (2 * 1024 * 1024 - len(raw))  # 2 MB to the byte: 2.8 MB of base64 in the body
    image = {"type": "image", "data": base64.b64encode(padded).decode(), "mediaType": "image/png"}
    body = {"documentType": "pdf", "title": "t", "spec": {"blocks": [image]}}
    async with post(http, gateway, body) as r:
        assert r.status == 202, await r.text()


async def test_in_the_sandbox_the_example_renders_and_bad_images_fail_the_job(stub, renderer, tmp_path) -> None:
    example = json.loads((EXAMPLES / "document-images-theme.json").read_text())
    specs.validate(example["documentType"], example["spec"])
    good = await submit(stub, "document", {"spec": example["spec"]}, title=example["title"])
    bomb = await submit(stub, "pdf", {"spec": {"blocks": [{"type": "image", "data": bomb_png(),
                                                           "mediaType": "image/png"}]}})
    liar = await submit(stub, "presentation", {"spec": {"slides": [
        {"layout": "bullets", "title": "t", "bullets": ["b"], "image": {"data": png(), "mediaType": "image/jpeg"}}]}})
    final, _ = await wait_finished(stub, good.id)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    for job, words in ((bomb, "spec.blocks[0].data: is refused as a decompression bomb"),
                       (liar, "spec.slides[0].image.mediaType: says image/jpeg but the data is image/png")):
        final, _ = await wait_finished(stub, job.id)
        assert final.status == pb.JOB_STATUS_FAILED and words in final.error.message, final.error
        assert final.error.code == "invalid_spec" and not final.error.retryable


def test_pdf_chart_labels_in_any_script(tmp_path: Path) -> None:
    """Chart text goes through the same per-character fonts and shaping as the paragraphs: a standard
    font (the theme's Times here) would draw these labels as boxes."""
    path = tmp_path / "chart.pdf"
    chart = {"type": "pie", "title": "Доля продаж", "categories": ["Кофе", "咖啡", "Tea"],
             "series": [{"name": "Q3", "values": [1, 2, 3]}]}
    render_to("pdf", {"theme": {"fontFamily": "Times"}, "blocks": [{"type": "chart", "chart": chart}]}, path)
    text = run("pdftotext", path, "-")
    assert all(word in text for word in ("Доля продаж", "Кофе", "咖啡", "Tea")), text
    fonts = run("pdffonts", path)
    assert "Times-Roman" in fonts and "NotoSans" in fonts and "DroidSansFallback" in fonts


def test_a_pdf_theme_font_the_renderer_lacks_is_a_warning(tmp_path: Path) -> None:
    blocks = [{"type": "paragraph", "text": "x"}]
    preview = render_to("pdf", {"theme": {"fontFamily": "Comic Sans MS"}, "blocks": blocks}, tmp_path / "a.pdf")
    (warning,) = preview["warnings"]
    assert warning["code"] == "font_unavailable" and warning["where"] == "theme.fontFamily"
    assert "Comic Sans MS" in warning["message"]
    assert "warnings" not in render_to("pdf", {"theme": {"fontFamily": "Courier New"}, "blocks": blocks},
                                       tmp_path / "b.pdf")


@pytest.mark.parametrize(("sheet", "field"), [
    ({"images": [{"data": png(), "mediaType": "image/png", "anchor": "XFE1"}]}, "spec.sheets[0].images[0].anchor"),
    ({"images": [{"data": png(), "mediaType": "image/png", "anchor": "A1048577"}]}, "spec.sheets[0].images[0].anchor"),
    ({"charts": [{"type": "pie", "categoryColumn": 0, "valueColumns": [0], "anchor": "ZZZ1"}]},
     "spec.sheets[0].charts[0].anchor"),
])
def test_an_anchor_past_the_last_cell_is_refused(tmp_path: Path, sheet: dict[str, Any], field: str) -> None:
    spec = {"sheets": [{"name": "s", "columns": [{"header": "h"}], "rows": [[1]], **sheet}]}
    specs.validate("spreadsheet", spec)  # the schema's pattern cannot tell
    with pytest.raises(specs.SpecError) as raised:
        render("spreadsheet", spec, "t", tmp_path / "out.xlsx", lambda *_: None)
    assert raised.value.path == field and "outside a sheet" in raised.value.message


def test_a_pdf_table_of_contents_lists_headings_in_any_script(tmp_path: Path) -> None:
    """reportlab's own contents entries crashed on a shaped heading (Greek, Chinese, Arabic, Hindi)."""
    headings = ["Ελληνικά", "季度销售报告", "Отчёт", "שלום עולם"]
    blocks: list[dict[str, Any]] = [{"type": "toc"}]
    for n, text in enumerate(headings):
        blocks += [{"type": "heading", "text": text, "level": 1 + n % 2}, {"type": "pageBreak"}]
    render_to("pdf", {"blocks": blocks}, tmp_path / "toc.pdf")
    contents = run("pdftotext", "-f", "1", "-l", "1", tmp_path / "toc.pdf", "-")
    for n, text in enumerate(headings[:3]):
        assert text in contents and str(n + 1) in contents
    assert "םולש םלוע" in contents or "שלום עולם" in contents


def cmyk_jpeg(color: tuple[int, int, int, int] = (0, 200, 200, 0)) -> str:
    """A CMYK JPEG (an Adobe marker, no JFIF or Exif header: as Photoshop saves them)."""
    out = io.BytesIO()
    Image.new("CMYK", (60, 40), color).save(out, "JPEG")
    assert out.getvalue()[2:4] != b"\xff\xe0"
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize("job_type", ["document", "pdf", "presentation", "spreadsheet"])
def test_a_jpeg_without_a_jfif_header_is_shown(tmp_path: Path, job_type: str) -> None:
    image = {"data": cmyk_jpeg(), "mediaType": "image/jpeg"}
    logo = {"data": cmyk_jpeg((200, 0, 0, 0)), "mediaType": "image/jpeg"}
    specs_by_type: dict[str, dict[str, Any]] = {
        "document": {"theme": {"logo": logo}, "blocks": [{"type": "image", **image}]},
        "pdf": {"theme": {"logo": logo}, "blocks": [{"type": "image", **image}]},
        "presentation": {"slides": [{"layout": "bullets", "title": "t", "bullets": ["b"], "image": image}]},
        "spreadsheet": {"sheets": [{"name": "s", "columns": [{"header": "h"}],
                                    "images": [{**image, "anchor": "B2"}]}]},
    }
    extension = {"document": "docx", "pdf": "pdf", "presentation": "pptx", "spreadsheet": "xlsx"}[job_type]
    path = tmp_path / f"out.{extension}"
    render_to(job_type, specs_by_type[job_type], path)
    if job_type == "pdf":
        assert len(pypdf.PdfReader(str(path)).pages[0].images) == 2
    else:
        media = [n for n in zipfile.ZipFile(path).namelist() if "/media/" in n]
        assert len(media) == (2 if job_type == "document" else 1)


def test_docx_drawings_have_distinct_ids(tmp_path: Path) -> None:
    """Word repairs (and asks the reader about) a document whose drawings share an id."""
    path = tmp_path / "ids.docx"
    chart = {"type": "chart", "chart": CHART}
    render_to("document", {"blocks": [chart, {"type": "image", "data": png(), "mediaType": "image/png"}, chart]}, path)
    ids = re.findall(r'<wp:docPr id="(\d+)"', zipfile.ZipFile(path).read("word/document.xml").decode())
    assert len(ids) == 3 and len(set(ids)) == 3


@needs_office
def test_docx_header_right_text_stays_on_its_line(tmp_path: Path) -> None:
    """Left text that runs past the middle of the page, and right text: one line, as in the PDF."""
    path = tmp_path / "header.docx"
    header = {"left": "Harbour Café: the third quarter of 2026 reviewed", "right": "Internal"}
    render_to("document", {"header": header, "blocks": [{"type": "paragraph", "text": "Body"}]}, path)
    lines = [line for line in run("pdftotext", "-layout", to_pdf(path), "-").splitlines() if line.strip()]
    assert "Harbour Café: the third quarter of 2026 reviewed" in lines[0] and lines[0].rstrip().endswith("Internal")


def noise_png(width: int, height: int) -> str:
    """A PNG that does not compress: its file is about width x height x 3 bytes."""
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), random.Random(7).randbytes(width * height * 3)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


async def test_an_image_near_2_mb_goes_through_the_whole_way(http, gateway, stub, renderer, tmp_path) -> None:
    """Gateway body, stored payload, the renderer's claim and the sandbox's pipes all carry it."""
    data = noise_png(800, 860)
    assert 2_000_000 < len(base64.b64decode(data)) <= 2 * 1024 * 1024
    body = {"documentType": "pdf", "title": "Big picture",
            "spec": {"blocks": [{"type": "image", "data": data, "mediaType": "image/png", "widthCm": 10}]}}
    async with post(http, gateway, body) as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["jobId"]
    final, _ = await wait_finished(stub, job_id)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
