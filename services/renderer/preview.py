"""Small previews of a finished document, read back from the file itself (so they describe what the
user will download, whichever way it was made): first rows of each sheet, headings and first
paragraphs, page count and first page text, slide titles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_ROWS = 5
MAX_COLS = 8
MAX_TEXT = 300
MAX_ITEMS = 10


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def preview(job_type: str, path: Path) -> dict[str, Any]:
    if job_type == "spreadsheet":
        return _spreadsheet(path)
    if job_type == "document":
        return _document(path)
    if job_type == "pdf":
        return _pdf(path)
    if job_type == "presentation":
        return _presentation(path)
    return {}


def _spreadsheet(path: Path) -> dict[str, Any]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=False)
    sheets = []
    try:
        for sheet in workbook.worksheets[:MAX_ITEMS]:
            rows = []
            for row in sheet.iter_rows(max_row=MAX_ROWS, max_col=MAX_COLS, values_only=True):
                cells = [_short(v) for v in row]
                while cells and cells[-1] == "":
                    cells.pop()
                rows.append(cells)
            sheets.append({"name": sheet.title, "rows": rows})
    finally:
        workbook.close()
    return {"kind": "spreadsheet", "sheets": sheets}


def _document(path: Path) -> dict[str, Any]:
    from docx import Document

    document = Document(str(path))
    headings: list[str] = []
    paragraphs: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = paragraph.style.name if paragraph.style is not None else ""
        if style.startswith("Heading") or style == "Title":
            if len(headings) < MAX_ITEMS:
                headings.append(_short(text))
        elif len(paragraphs) < 3:
            paragraphs.append(_short(text))
    return {"kind": "document", "headings": headings, "paragraphs": paragraphs}


def _pdf(path: Path) -> dict[str, Any]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    first = reader.pages[0].extract_text() if reader.pages else ""
    return {"kind": "pdf", "pages": len(reader.pages), "firstPageText": _short(" ".join(first.split()))}


def _presentation(path: Path) -> dict[str, Any]:
    from pptx import Presentation

    deck = Presentation(str(path))
    titles = []
    for slide in deck.slides:
        title = slide.shapes.title
        titles.append(_short(title.text if title is not None else ""))
    return {"kind": "presentation", "slides": len(titles), "titles": titles[:MAX_ITEMS * 3]}
