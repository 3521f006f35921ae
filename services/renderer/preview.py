"""Small previews of a finished document, read back from the file itself (so they describe what the
user will download, whichever way it was made): first rows of each sheet, headings and first
paragraphs, page count and first page text, slide titles.

A code job's document is previewed by the output check (sandbox/checker.py), in a process of its own:
the file may have been written to attack its reader. Every text is cleaned and cut (no control
characters or lone surrogates, which the jobstore refuses in a result), and every list is bounded, to
the shapes sandbox/messages.py reads."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from .sandbox.messages import (
    MAX_PREVIEW_CHARS,
    PREVIEW_CELLS,
    PREVIEW_HEADINGS,
    PREVIEW_PARAGRAPHS,
    PREVIEW_ROWS,
    PREVIEW_SHEETS,
    PREVIEW_TITLES,
    clean_text,
)

MAX_ROWS = PREVIEW_ROWS
MAX_COLS = PREVIEW_CELLS
MAX_TEXT = MAX_PREVIEW_CHARS
MAX_ITEMS = PREVIEW_SHEETS
MAX_HEADINGS = min(10, PREVIEW_HEADINGS)

Source = Path | IO[bytes]  # a path, or a binary file open for reading (seekable)


def _short(value: Any) -> str:
    return clean_text("" if value is None else str(value), MAX_TEXT)


def preview(job_type: str, path: Source) -> dict[str, Any]:
    if job_type == "spreadsheet":
        return _spreadsheet(path)
    if job_type == "document":
        return _document(path)
    if job_type == "pdf":
        return _pdf(path)
    if job_type == "presentation":
        return _presentation(path)
    return {}


def _spreadsheet(path: Source) -> dict[str, Any]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=False, keep_links=False)
    sheets = []
    try:
        for sheet in workbook.worksheets[:MAX_ITEMS]:
            rows = []
            for row in sheet.iter_rows(max_row=MAX_ROWS, max_col=MAX_COLS, values_only=True):
                cells = [_short(v) for v in row]
                while cells and cells[-1] == "":
                    cells.pop()
                rows.append(cells)
            sheets.append({"name": _short(sheet.title), "rows": rows})
    finally:
        workbook.close()
    return {"kind": "spreadsheet", "sheets": sheets}


def _document(path: Source) -> dict[str, Any]:
    from docx import Document

    document = Document(str(path) if isinstance(path, Path) else path)
    headings: list[str] = []
    paragraphs: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = paragraph.style.name if paragraph.style is not None else ""
        if style.startswith("Heading") or style == "Title":
            if len(headings) < MAX_HEADINGS:
                headings.append(_short(text))
        elif len(paragraphs) < PREVIEW_PARAGRAPHS:
            paragraphs.append(_short(text))
    return {"kind": "document", "headings": headings, "paragraphs": paragraphs}


def _pdf(path: Source) -> dict[str, Any]:
    from pypdf import PdfReader

    reader = PdfReader(str(path) if isinstance(path, Path) else path)
    first = reader.pages[0].extract_text() if reader.pages else ""
    return {"kind": "pdf", "pages": len(reader.pages), "firstPageText": _short(" ".join(first.split()))}


def _presentation(path: Source) -> dict[str, Any]:
    from pptx import Presentation

    deck = Presentation(str(path) if isinstance(path, Path) else path)
    titles: list[str] = []
    slides = 0
    for slide in deck.slides:
        slides += 1
        if len(titles) < PREVIEW_TITLES:
            title = slide.shapes.title
            titles.append(_short(title.text if title is not None else ""))
    return {"kind": "presentation", "slides": slides, "titles": titles}
