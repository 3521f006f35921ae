"""Small previews of a finished document, read back from the file itself (so they describe what the
user will download, whichever way it was made): first rows of each sheet, headings and first
paragraphs, page count and first page text, slide titles.

A code job's document is previewed by the output check (sandbox/checker.py), in a process of its own:
the file may have been written to attack its reader. Every text is cleaned and cut (no control
characters or lone surrogates, which the jobstore refuses in a result), and every list is bounded, to
the shapes sandbox/messages.py reads."""

from __future__ import annotations

import io
from collections.abc import Iterator
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
    """The first rows of the first sheets, as openpyxl's read-only mode reads them (a formula as its
    cached value, or as its text when the file holds no value; numbers styled as dates as dates), through
    its own reader's parts: the package, the workbook's part, its strings, which of its cell styles are
    dates, then each sheet's XML only up to the rows shown. (`load_workbook` parses every sheet to its
    end before the first row is read: most of a check's time on a workbook of a few hundred rows. And
    its reader builds a whole Workbook and Stylesheet, fonts, fills and borders, of which a preview
    needs only the number formats: 4 of a small workbook's 8 ms.)"""
    from openpyxl.packaging.relationship import get_dependents, get_rels_path
    from openpyxl.packaging.workbook import WorkbookPackage
    from openpyxl.reader import excel
    from openpyxl.reader.excel import ExcelReader
    from openpyxl.utils.datetime import CALENDAR_MAC_1904, CALENDAR_WINDOWS_1900
    from openpyxl.xml.functions import fromstring

    _Values = _values_parser()
    reader = ExcelReader(path, read_only=True, keep_links=False)
    sheets: list[dict[str, Any]] = []
    try:
        reader.read_manifest()
        reader.read_strings()
        part: str = excel._find_workbook_part(reader.package).PartName[1:]  # type: ignore[attr-defined]
        tree: Any = fromstring(reader.archive.read(part))
        workbook: Any = WorkbookPackage.from_tree(tree)
        epoch = (CALENDAR_MAC_1904 if workbook.properties is not None and workbook.properties.date1904
                 else CALENDAR_WINDOWS_1900)
        rels = get_dependents(reader.archive, get_rels_path(part)).to_dict()  # type: ignore[no-untyped-call]
        dates, durations = _number_styles(reader.archive)
        for sheet in workbook.sheets:
            if not sheet.id:
                continue  # as openpyxl: a sheet element without its relationship is left out
            rel = rels[sheet.id]
            if rel.target not in reader.valid_files or "chartsheet" in rel.Type:
                continue  # as load_workbook: worksheets only
            if len(sheets) == MAX_ITEMS:
                break
            with reader.archive.open(rel.target) as xml:
                parser = _Values(_Trickle(xml), reader.shared_strings, data_only=False, epoch=epoch,
                                 date_formats=dates, timedelta_formats=durations)
                rows = _first_rows(parser.parse())
            sheets.append({"name": _short(sheet.name), "rows": rows})
    finally:
        reader.archive.close()
    return {"kind": "spreadsheet", "sheets": sheets}


def _number_styles(archive: Any) -> tuple[set[int], set[int]]:
    """The cell styles (their indexes) whose number format shows a date, and those that show a duration,
    as openpyxl's Stylesheet finds them: its own readers of the number formats and the cell styles (the
    last of each, by local name, as it takes them; their values checked as it checks them), a style's
    numFmtId naming one of the file's formats, else a built-in one. Fonts, fills and borders are not
    read, so a styles part wrong only there still opens here (Excel may repair it; the preview does not
    need it). (No styles part, or no cell styles: none, as openpyxl's defaults.)"""
    from openpyxl.styles.cell_style import CellStyleList
    from openpyxl.styles.numbers import NumberFormatList, builtin_format_code, is_date_format, is_timedelta_format
    from openpyxl.xml.constants import ARC_STYLE
    from openpyxl.xml.functions import fromstring, localname

    try:
        styles: Any = fromstring(archive.read(ARC_STYLE))
    except KeyError:
        return set(), set()
    parts: dict[str, Any] = {localname(child): child for child in styles}  # the last of each name
    formats: Any = NumberFormatList.from_tree(parts["numFmts"]) if "numFmts" in parts else None
    custom = {item.numFmtId: item.formatCode for item in formats.numFmt} if formats is not None else {}
    dates: set[int] = set()
    durations: set[int] = set()
    listed: Any = CellStyleList.from_tree(parts["cellXfs"]) if "cellXfs" in parts else None
    cell_styles = listed.xf if listed is not None else []
    for index, style in enumerate(cell_styles):
        number = style.numFmtId or 0
        code = custom[number] if number in custom else builtin_format_code(number)
        if is_date_format(code):
            dates.add(index)
        if is_timedelta_format(code):
            durations.add(index)
    return dates, durations


def _values_parser() -> type[Any]:
    from openpyxl.worksheet._reader import FORMULA_TAG, VALUE_TAG, WorkSheetParser

    class Values(WorkSheetParser):
        """A formula cell as the value the file holds for it (a spec workbook's, or one saved by Excel or
        LibreOffice), and as the formula's text only when it holds none (openpyxl writes none)."""

        def parse_cell(self, element: Any) -> dict[str, Any]:
            self.data_only = element.find(FORMULA_TAG) is None or bool(element.findtext(VALUE_TAG))
            cell: dict[str, Any] = super().parse_cell(element)
            return cell

    return Values


class _Trickle(io.RawIOBase):
    """A sheet's XML in small reads: the parser yields rows after each read, so it stops soon after the
    last row a preview shows instead of after 16 KiB."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(4096 if size < 0 else min(size, 4096))


def _first_rows(parsed: Iterator[tuple[int, list[dict[str, Any]]]]) -> list[list[str]]:
    """Rows 1..MAX_ROWS, cells 1..MAX_COLS, as `iter_rows(max_row=, max_col=, values_only=True)` gives
    them (a row missing before the last row read is empty), trailing empty cells dropped."""
    rows: list[list[str]] = []
    last = 0
    for index, cells in parsed:
        last = index
        if index > MAX_ROWS:
            break
        if index <= len(rows):
            continue  # a row that does not come after the last (openpyxl skips it too)
        rows.extend([] for _ in range(index - 1 - len(rows)))
        values: list[Any] = [None] * MAX_COLS
        for cell in cells:
            if 1 <= cell["column"] <= MAX_COLS:
                values[cell["column"] - 1] = cell["value"]
        texts = [_short(v) for v in values]
        while texts and texts[-1] == "":
            texts.pop()
        rows.append(texts)
    if last > MAX_ROWS:
        rows.extend([] for _ in range(MAX_ROWS - len(rows)))
    return rows


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
