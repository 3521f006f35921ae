"""Every script in every format: the international examples rendered, read back as a person's tools
read them (LibreOffice converts the office files to PDF; pdftotext gives the text back, pdffonts the fonts
used), and compared with what the spec asked for; a character no font draws is a warning in the job's
result, which reaches GET /api/jobs/{jobId} and job-complete."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from gateway.payloads import result_document
from renderer.fonts import FONT_DIR
from renderer.spec import render

from .renderers import EXAMPLES, RendererProcess, submit, wait_finished

EXTENSIONS = {"pdf": "pdf", "document": "docx", "presentation": "pptx", "spreadsheet": "xlsx"}
# Scripts whose text pdftotext does not give back in its order: it reads the glyphs in the order they
# stand, and a Devanagari vowel sign drawn before its consonant comes back before it (a Thai mark may
# come back beside its letter). For these, every letter must come back.
LOSSY = re.compile("[\u0900-\u097f\u0e00-\u0e7f]")
RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")
HEBREW_LIGATURES = str.maketrans({"\u05f0": "\u05d5\u05d5", "\u05f1": "\u05d5\u05d9", "\u05f2": "\u05d9\u05d9"})
LAM_ALEF = re.compile("(\u0644)([\u0627\u0623\u0625\u0622])")
NOT_TEXT = re.compile("[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ue000-\uf8ff\ufffd]")


def international(job_type: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / f"{job_type}-international.json").read_text())
    return body


def texts(value: Any) -> list[str]:
    """Every text a spec asks to show (not the formulas: their values are checked in test_formulas.py)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in texts(item)]
    if isinstance(value, dict):
        return [t for key, item in value.items() if key not in ("type", "layout", "format", "formula", "pageSize")
                for t in texts(item)]
    return []


def normal(text: str) -> str:
    """Text as compared: Arabic presentation forms and ligatures to their letters (NFKC), no direction
    marks, no private-use characters, no whitespace."""
    text = unicodedata.normalize("NFKC", text).translate(HEBREW_LIGATURES)
    # The lam-alef ligature is one glyph, which LibreOffice's PDF gives back as alef-lam: either order counts.
    text = LAM_ALEF.sub(lambda m: m.group(2) + m.group(1), text)
    return "".join(NOT_TEXT.sub("", text).split())


def assert_shows(expected: str, shown: str) -> None:
    """`expected` (one text of the spec) is in `shown` (pdftotext's whole output)."""
    if LOSSY.search(expected):
        letters = [c for c in expected if unicodedata.category(c) == "Lo"]
        assert all(c in shown for c in letters), (expected, shown)
        return
    if RTL.search(expected):
        # pdftotext gives a right-to-left line in pieces, ordered by where they stand on the page: each
        # word of the text comes back, whole and in its own letter order.
        for word in re.findall(r"\w+", unicodedata.normalize("NFKC", expected)):
            assert normal(word) in normal(shown), (word, expected, shown)
        return
    assert normal(expected) in normal(shown), (expected, shown)


def pdftotext(path: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def pdffonts(path: Path) -> list[tuple[str, bool]]:
    """(font name without its subset tag, embedded) for each font of the PDF."""
    lines = subprocess.run(["pdffonts", str(path)], check=True, capture_output=True, text=True).stdout.splitlines()
    fonts = []
    for line in lines[2:]:
        name = line.split()[0]
        emb = line[line.index(" yes ") if " yes " in line else 0:]
        fonts.append((name.split("+")[-1], " yes " in line and emb.startswith(" yes")))
    return fonts


def render_example(job_type: str, directory: Path) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    body = international(job_type)
    path = directory / f"international.{EXTENSIONS[job_type]}"
    preview = render(job_type, body["spec"], body["title"], path, lambda _p, _m: None)
    return body, path, preview


def to_pdf(path: Path, directory: Path) -> Path:
    """LibreOffice's PDF of an office file, drawn with the renderer's own fonts (and the machine's)."""
    config = directory / "fonts.conf"
    config.write_text(f"""<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><include ignore_missing="yes">/etc/fonts/fonts.conf</include><dir>{FONT_DIR}</dir>
<cachedir>{directory / "fontcache"}</cachedir></fontconfig>""")
    env = {**os.environ, "FONTCONFIG_FILE": str(config), "HOME": str(directory)}
    subprocess.run(["soffice", f"-env:UserInstallation=file://{directory / 'profile'}", "--headless",
                    "--convert-to", "pdf", "--outdir", str(directory / "out"), str(path)],
                   check=True, capture_output=True, env=env, timeout=180)
    return directory / "out" / f"{path.stem}.pdf"


def test_a_pdf_draws_every_script_in_embedded_fonts(tmp_path: Path) -> None:
    body, path, preview = render_example("pdf", tmp_path)
    assert "warnings" not in preview
    shown = pdftotext(path)
    for text in texts(body["spec"]["blocks"]):
        assert_shows(text, shown)
    fonts = pdffonts(path)
    names = {name for name, _ in fonts}
    assert all(embedded for _, embedded in fonts), fonts
    assert not names & {"Helvetica", "Helvetica-Bold", "Times-Roman", "Courier"}, names  # nothing stands in
    assert {"NotoSans-Regular", "NotoSans-Bold", "DroidSansFallback", "DocjobsHangul-Regular",
            "NotoSansArabic-Regular", "NotoSansHebrew-Regular", "NotoSansDevanagari-Regular",
            "NotoSansThai-Regular"} <= names, names
    assert "季度销售报告" in preview["firstPageText"] and "ملخص المبيعات" in preview["firstPageText"]


def test_right_to_left_words_stand_right_to_left(tmp_path: Path) -> None:
    """pdftotext reads a right-to-left line back in logical order when its words stand right to left on
    the page (and in reverse when they stand left to right, as reportlab alone puts them): the line comes
    back as written, its number in its own order."""
    text = "אחת שתיים 123 שלוש ועוד ארבע"
    render("pdf", {"blocks": [{"type": "paragraph", "text": text}], "footer": {}}, "", tmp_path / "rtl.pdf",
           lambda _p, _m: None)
    assert normal(pdftotext(tmp_path / "rtl.pdf")) == normal(text)


def _pdf(blocks: list[dict[str, Any]], path: Path) -> str:
    render("pdf", {"blocks": blocks, "footer": {}}, "", path, lambda _p, _m: None)
    return pdftotext(path)


@pytest.mark.parametrize("note", [
    ("The quarterly revenue grew strongly in every region we operate in. " * 30)[:2000],
    ("الإيرادات الفصلية نمت بقوة في كل منطقة نعمل فيها. " * 60)[:2000],
], ids=["English", "Arabic"])
def test_a_table_row_taller_than_a_page_goes_on_over_the_page_break(tmp_path: Path, note: str) -> None:
    """A cell may hold 2,000 characters: in a narrow column its row is taller than a page, and the whole
    document failed (reportlab's LayoutError, or in Arabic a TypeError naming getPlainText)."""
    shown = _pdf([{"type": "table", "header": ["Region", "Q1", "Q2", "Notes"], "rows": [["EMEA", 1, 2, note]]}],
                 tmp_path / "table.pdf")
    assert "\f" in shown.rstrip("\f")  # more than one page
    # Every word of it (the header row, repeated on the next page, stands between its two parts).
    assert all(normal(word) in normal(shown) for word in set(note.split()))
    if not RTL.search(note):  # its end, on the next page, in one piece
        assert normal(note[-300:]) in normal(shown)


def test_a_link_in_a_right_to_left_paragraph_is_a_link(tmp_path: Path) -> None:
    """A paragraph with Arabic or Hebrew in it is laid out word by word, and its runs lost their links."""
    import pypdf

    path = tmp_path / "link.pdf"
    _pdf([{"type": "paragraph", "runs": [{"text": "مرحبا بالعالم "}, {"text": "the report",
                                                                      "link": "https://example.com/r"}]}], path)
    links = {annotation.get_object()["/A"]["/URI"] for page in pypdf.PdfReader(path).pages
             for annotation in page.get("/Annots", [])}
    assert links == {"https://example.com/r"}


def test_a_long_paragraph_of_chinese_quoting_an_arabic_name_is_laid_out(tmp_path: Path) -> None:
    """Chinese has no spaces: with one Arabic word in it the paragraph is laid out word by word, and all
    of its Chinese was one word wider than the line, one line taller than a page (a TypeError)."""
    chinese = "这是一个很长的中文段落\uff0c用来测试排版。" * 250  # \uff0c: a full-width comma
    shown = _pdf([{"type": "paragraph", "text": chinese + " محمد"}], tmp_path / "zh.pdf")
    assert "\f" in shown.rstrip("\f")
    assert normal(chinese) in normal(shown)


# A face, a skin tone, a ZWJ family, a flag, a keycap, a VS16 heart, a tag-sequence flag.
EMOJI = ["\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
         "\U0001f1ef\U0001f1f5", "1\ufe0f\u20e3", "\u2764\ufe0f",
         "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"]


def test_a_pdf_draws_emoji_as_pictures_that_copy_back(tmp_path: Path) -> None:
    """Each emoji is a colour picture in its line (pdfimages lists them), and the text under it is the
    emoji asked for: pdftotext gives every sequence back whole, in its place in the line."""
    line = "Launch " + " ".join(EMOJI) + " done \u2705"
    spec = {"blocks": [{"type": "heading", "text": "Party \U0001f389"}, {"type": "paragraph", "text": line},
                       {"type": "paragraph", "text": "\u0645\u0631\u062d\u0628\u0627 \U0001f600"},
                       {"type": "paragraph", "text": "\u0928\u092e\u0938\u094d\u0924\u0947\U0001f64f"},
                       {"type": "table", "header": ["a \U0001f680"], "rows": [["\U0001f389"]]}],
            "footer": {"center": "Page {page} \U0001f680"}}
    preview = render("pdf", spec, "", tmp_path / "emoji.pdf", lambda _p, _m: None)
    assert "warnings" not in preview
    shown = pdftotext(tmp_path / "emoji.pdf")
    assert line in shown.splitlines(), shown
    assert "Party \U0001f389" in shown and "Page 1 \U0001f680" in shown and "\U0001f64f" in shown
    assert "\u0645\u0631\u062d\u0628\u0627" in normal(shown) and shown.count("\U0001f600") == 2
    images = subprocess.run(["pdfimages", "-list", str(tmp_path / "emoji.pdf")], check=True, capture_output=True,
                            text=True).stdout.splitlines()[2:]
    pictures = {(row.split()[3], row.split()[4], row.split()[5]) for row in images if row.split()[2] == "image"}
    assert ("34", "32", "rgb") in pictures, images  # the pictures, in colour
    assert sum(1 for row in images if row.split()[2] == "smask") >= len(EMOJI)  # with their transparency


@pytest.mark.parametrize("job_type", ["pdf", "document", "presentation", "spreadsheet"])
def test_emoji_are_no_warning_in_any_format(job_type: str, tmp_path: Path) -> None:
    text = "ok " + " ".join(EMOJI)
    blocks = {"blocks": [{"type": "paragraph", "text": text}]}
    specs: dict[str, dict[str, Any]] = {
        "pdf": blocks, "document": blocks,
        "presentation": {"slides": [{"layout": "bullets", "title": "t \U0001f680", "bullets": [text]}]},
        "spreadsheet": {"sheets": [{"name": "S", "columns": [{"header": "a"}], "rows": [[text]]}]},
    }
    preview = render(job_type, specs[job_type], "t", tmp_path / f"doc.{EXTENSIONS[job_type]}", lambda _p, _m: None)
    assert not preview.get("warnings"), preview


def test_conjuncts_and_shaped_marks_copy_back_whole(tmp_path: Path) -> None:
    """A conjunct (Devanagari) or a mark moved for its consonant (Thai) is one glyph without a character
    of its own: the PDF's ToUnicode map gives it the characters it stands for."""
    words = ["\u0928\u092e\u0938\u094d\u0924\u0947", "\u0938\u094d\u0935\u093e\u0917\u0924",
             "\u0915\u094d\u0937\u0947\u0924\u094d\u0930", "\u0e17\u0e35\u0e48\u0e19\u0e35\u0e48"]
    render("pdf", {"blocks": [{"type": "paragraph", "text": " ".join(words)}], "footer": {}}, "",
           tmp_path / "indic.pdf", lambda _p, _m: None)
    assert pdftotext(tmp_path / "indic.pdf").split() == words


def test_percent_signs_and_digits_in_right_to_left_text(tmp_path: Path) -> None:
    """A percent sign beside digits in Arabic text (the Arabic ٪ after Latin digits, % after Arabic-Indic
    ones, a word in two faces) was a box or a wrong glyph, and Latin digits inside Arabic came out
    reversed ("51%"): each piece is drawn in its own face, where the bidirectional algorithm puts it."""
    lines = ["\u0646\u0645\u0648 \u066a\u0661\u0665 \u0641\u064a \u0627\u0644\u0631\u0628\u0639",
             "\u0627\u0644\u0645\u0628\u064a\u0639\u0627\u062a 15% \u0647\u0630\u0627",
             "\u0646\u0645\u0648 \u0661\u0665% \u0648 15\u066a", "(15%)\u0646\u0645\u0648",
             "\u0646\u0645\u064815%", "\u05d1-12% \u05d5\u05e2\u05d5\u05d3"]
    blocks: list[dict[str, Any]] = [{"type": "paragraph", "text": line} for line in lines]
    blocks.append({"type": "table", "header": ["\u066a\u0661\u0665"], "rows": [["15\u066a"]]})
    render("pdf", {"blocks": blocks, "footer": {"center": lines[2]}}, "", tmp_path / "percent.pdf",
           lambda _p, _m: None)
    shown = pdftotext(tmp_path / "percent.pdf")
    assert not re.search("[\ue000-\uf8ff]", shown), shown  # a glyph without a character: a box is one
    for line in lines:
        for word in re.findall(r"[^\W\d_]+|\d+", line):  # letters, and numbers, come back in their order
            assert normal(word) in normal(shown), (word, shown)
    assert "51" not in shown and "\u0665\u0661" not in shown, shown


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
@pytest.mark.parametrize("job_type", ["document", "presentation", "spreadsheet"])
def test_office_files_show_every_script_in_libreoffice(job_type: str, tmp_path: Path) -> None:
    body, path, _ = render_example(job_type, tmp_path)
    pdf = to_pdf(path, tmp_path)
    shown = pdftotext(pdf)
    spec = body["spec"]
    expected = texts(spec["sheets"] if job_type == "spreadsheet" else spec)
    if job_type == "spreadsheet":
        expected = [t for t in expected if t not in [s["name"] for s in spec["sheets"]]]  # tab names are not printed
    elif job_type == "presentation":
        expected = texts([{k: v for k, v in s.items() if k != "notes"} for s in spec["slides"]])  # notes: not shown
    for text in expected:
        assert_shows(text, shown)


def part(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name).decode()


def test_docx_runs_name_their_script_fonts_languages_and_direction(tmp_path: Path) -> None:
    _, path, _ = render_example("document", tmp_path)
    xml = part(path, "word/document.xml")
    paragraphs = re.findall(r"<w:p[ >].*?</w:p>", xml, re.S)
    arabic = next(p for p in paragraphs if "ارتفعت" in p)
    assert "<w:bidi/>" in arabic and "<w:rtl/>" in arabic and 'w:bidi="ar-SA"' in arabic and 'w:cs="Arial"' in arabic
    hebrew = next(p for p in paragraphs if "ברבעון" in p)
    assert "<w:bidi/>" in hebrew and 'w:bidi="he-IL"' in hebrew
    chinese = next(p for p in paragraphs if "本季度" in p)
    assert 'w:eastAsia="zh-CN"' in chinese and "<w:bidi/>" not in chinese
    assert 'w:eastAsia="ja-JP"' in next(p for p in paragraphs if "日本語" in p)
    assert 'w:eastAsia="ko-KR"' in next(p for p in paragraphs if "한국어" in p)
    hindi = next(p for p in paragraphs if "हिन्दी" in p)
    assert 'w:bidi="hi-IN"' in hindi and "<w:rtl/>" not in hindi and "<w:cs/>" in hindi
    assert 'w:val="ru-RU"' in next(p for p in paragraphs if "Итоги" in p)
    latin = next(p for p in paragraphs if "Quarterly report in seven scripts" in p)
    assert "<w:lang" not in latin and "<w:bidi/>" not in latin
    import docx

    docx.Document(str(path))  # python-docx reads it back (the properties stand in their schema order)


def test_pptx_paragraphs_are_marked_right_to_left_with_their_languages(tmp_path: Path) -> None:
    _, path, _ = render_example("presentation", tmp_path)
    slide = part(path, "ppt/slides/slide2.xml")
    arabic = re.findall(r"<a:p>.*?</a:p>", slide, re.S)
    assert arabic and all('rtl="1"' in p and 'lang="ar-SA"' in p and '<a:cs typeface="Arial"/>' in p
                          for p in arabic if "ال" in p)
    title = part(path, "ppt/slides/slide1.xml")
    assert 'lang="zh-CN"' in title and '<a:ea typeface="Microsoft YaHei"/>' in title
    notes = next(name for name in zipfile.ZipFile(path).namelist() if name.startswith("ppt/notesSlides/"))
    assert 'rtl="1"' in part(path, notes)


def test_xlsx_cells_of_right_to_left_text_read_right_to_left(tmp_path: Path) -> None:
    _, path, _ = render_example("spreadsheet", tmp_path)
    sheet = openpyxl.load_workbook(path)["销售"]
    assert sheet["B1"].alignment.readingOrder == 2 and sheet["B2"].alignment.readingOrder == 2
    assert sheet["A2"].alignment.readingOrder in (0, None)  # Chinese reads left to right


@pytest.mark.parametrize("job_type", ["pdf", "document", "presentation", "spreadsheet"])
def test_a_character_no_font_draws_is_a_warning_naming_its_place(job_type: str, tmp_path: Path) -> None:
    missing = "\u1230\u120b\u121d"  # Ethiopic: no face of the renderer draws it
    blocks = {"blocks": [{"type": "paragraph", "text": "ok 😀"}, {"type": "paragraph", "text": f"selam {missing}"}]}
    specs: dict[str, dict[str, Any]] = {
        "pdf": blocks, "document": blocks,
        "presentation": {"slides": [{"layout": "bullets", "title": "t", "bullets": ["ok 😀", f"selam {missing}"]}]},
        "spreadsheet": {"sheets": [{"name": "S", "columns": [{"header": "a"}],
                                    "rows": [["ok 😀"], [f"selam {missing}"]]}]},
    }
    preview = render(job_type, specs[job_type], "t", tmp_path / f"doc.{EXTENSIONS[job_type]}", lambda _p, _m: None)
    where = {"pdf": "blocks[1].text", "document": "blocks[1].text", "presentation": "slides[0].bullets[1]",
             "spreadsheet": "sheets[0].rows[1][0]"}[job_type]
    (warning,) = preview["warnings"]
    assert (warning["code"], warning["where"]) == ("glyph_missing", where)
    assert "U+1230" in preview["warnings"][0]["message"] and "U+1F600" not in preview["warnings"][0]["message"]


async def test_warnings_travel_in_the_result_to_the_api(stub, renderer) -> None:
    job = await submit(stub, "pdf", {"spec": {"blocks": [{"type": "heading", "text": "季度销售报告"},
                                                         {"type": "paragraph", "text": "selam \u1230\u120b\u121d"}]}})
    final, events = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    result = json.loads(final.result_json)
    assert [(w["code"], w["where"]) for w in result["warnings"]] == [("glyph_missing", "blocks[1].text")]
    assert "warnings" not in result["preview"]
    # What GET /api/jobs/{jobId} and the job-complete event make of the stored result.
    assert result_document(result, None)["warnings"] == result["warnings"]
    done = next(e for e in events if e.kind == pb.EVENT_KIND_COMPLETED)
    assert json.loads(done.result_json)["warnings"] == result["warnings"]
    clean = await submit(stub, "pdf", {"spec": {"blocks": [{"type": "paragraph", "text": "Привет, мир"}]}})
    final, _ = await wait_finished(stub, clean.id)
    assert json.loads(final.result_json)["warnings"] == []


CODE_WITH_FONTS = """
from reportlab.pdfgen import canvas

page = canvas.Canvas(output_path)
page.setFont("DroidSansFallback", 16)
page.drawString(72, 720, "季度销售报告")
page.save()
"""


@pytest.fixture
async def code_renderer(jobstore, tmp_path):
    process = RendererProcess(jobstore.address, tmp_path / "code-renderer", DOCJOBS_CODE_EXECUTION="sandbox").start()
    yield process
    await process.shutdown()


async def test_code_jobs_can_draw_with_the_renderers_fonts(stub, code_renderer) -> None:
    """A code job cannot read the checkout, but its process comes from one that has the renderer's fonts
    registered with reportlab already (its warm-up rendered a PDF): model-written code draws Chinese by
    naming one (docs/renderer.md lists them)."""
    job = await submit(stub, "pdf", {"code": CODE_WITH_FONTS})
    final, _ = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_COMPLETED, (final.error, code_renderer.log[-2000:])
    assert json.loads(final.result_json)["preview"]["firstPageText"] == "季度销售报告"
