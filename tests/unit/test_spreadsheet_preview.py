"""The spreadsheet preview reads only the rows it shows, through openpyxl's own reader's parts: what it
shows must be what openpyxl's read-only `load_workbook` gives for those rows, whatever the workbook."""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook

from renderer import preview
from renderer.spec import render

ROOT = Path(__file__).resolve().parents[2]


def as_load_workbook_reads_it(data: bytes) -> dict[str, Any]:
    """The preview as it was made with load_workbook(read_only=True) and iter_rows: the reference. A
    formula shows its cached value (data_only=True) where the file holds one, its text where not."""
    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=False, keep_links=False)
    cached = load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
    sheets = []
    for sheet, values in zip(workbook.worksheets[:preview.MAX_ITEMS], cached.worksheets, strict=False):
        rows = []
        for row, row_values in zip(
                sheet.iter_rows(max_row=preview.MAX_ROWS, max_col=preview.MAX_COLS, values_only=True),
                values.iter_rows(max_row=preview.MAX_ROWS, max_col=preview.MAX_COLS, values_only=True),
                strict=True):
            cells = [preview._short(value if isinstance(v, str) and v.startswith("=") and value is not None else v)
                     for v, value in zip(row, row_values, strict=True)]
            while cells and cells[-1] == "":
                cells.pop()
            rows.append(cells)
        sheets.append({"name": preview._short(sheet.title), "rows": rows})
    workbook.close()
    cached.close()
    return {"kind": "spreadsheet", "sheets": sheets}


def saved(workbook: Workbook) -> bytes:
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def mixed() -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Mixed"
    sheet["A1"], sheet["C1"], sheet["D1"], sheet["E1"] = "text", datetime.datetime(2026, 1, 2, 3, 4), True, 1.5
    sheet["F1"] = '=A1&"x"'
    sheet["A3"], sheet["B5"], sheet["B2"], sheet["C2"] = datetime.date(2020, 5, 6), datetime.time(3, 4), 10**20, -0.0
    sheet["A30"], sheet["Z2"] = "after the rows shown", "beyond the columns shown"
    sheet["G4"].value, sheet["G4"].number_format = 45000, "yyyy-mm-dd"  # a number styled as a date
    workbook.create_sheet("Empty")
    workbook.create_sheet("Sparse")["A25"] = "below the rows shown only"
    for i in range(8):
        workbook.create_sheet(f"S{i}")["A1"] = i
    return saved(workbook)


def gaps() -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in (2, 3, 7, 19, 20, 21, 400):
        sheet.cell(row=row, column=row % 5 + 1, value=f"r{row}")
    return saved(workbook)


def shared_formulas() -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    for row in range(1, 200):
        sheet.append([row, row * 2, f"=A{row}+B{row}", f"row {row}"])
    return saved(workbook)


def number_formats() -> bytes:
    """Numbers the file's own formats show as dates and durations, in a workbook on the 1904 calendar."""
    workbook = Workbook()
    workbook.epoch = datetime.datetime(1904, 1, 1)  # openpyxl's CALENDAR_MAC_1904
    sheet = workbook.active
    assert sheet is not None
    formats = ["dd/mm/yyyy hh:mm", "[h]:mm:ss", "mm:ss.0", '#,##0.00 "kg"', "yyyy", "0.00%", "General", "d-mmm"]
    for column, number_format in enumerate(formats, start=1):
        for row in (1, 2):
            cell = sheet.cell(row=row, column=column, value=40000.25 + row + column)
            cell.number_format = number_format
    sheet["A3"] = datetime.datetime(2026, 3, 4, 5, 6)
    return saved(workbook)


def without_styles() -> bytes:
    """A workbook whose package has no styles part (a writer may leave it out): numbers stay numbers."""
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(saved(mixed_small())))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/styles.xml":
                continue
            if item.filename in ("[Content_Types].xml", "xl/_rels/workbook.xml.rels"):
                data = _without_styles_entries(data)
            target.writestr(item, data)
    return buffer.getvalue()


def two_cell_style_lists() -> bytes:
    """A styles part with a second list of cell styles, all plain numbers: openpyxl takes the last."""
    import re
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(number_formats()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/styles.xml":
                found = re.search(rb"<cellXfs.*?</cellXfs>", data, re.S)
                assert found is not None
                plain = re.sub(rb'numFmtId="\d+"', b'numFmtId="0"', found.group(0))
                data = data.replace(found.group(0), found.group(0) + plain)
            target.writestr(item, data)
    return buffer.getvalue()


def _without_styles_entries(xml: bytes) -> bytes:
    import re

    return re.sub(rb"<(Override|Relationship)[^>]*styles[^>]*/>", b"", xml)


def mixed_small() -> Workbook:
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["a", 45000, 1.5])
    sheet["B1"].number_format = "yyyy-mm-dd"
    return workbook


def the_example(directory: Path) -> bytes:
    import json

    spec = json.loads((ROOT / "examples" / "spreadsheet.json").read_text())
    render("spreadsheet", spec.get("spec", spec), "t", directory / "example.xlsx", lambda _p, _m: None)
    return (directory / "example.xlsx").read_bytes()


@pytest.mark.parametrize("make", [mixed, gaps, shared_formulas, number_formats, without_styles,
                                  two_cell_style_lists, the_example],
                         ids=["mixed types and sheets", "missing rows", "many rows", "date and duration formats",
                              "no styles part", "two lists of cell styles", "the example"])
def test_the_preview_shows_what_openpyxl_reads(make: Any, tmp_path: Path) -> None:
    data = make(tmp_path) if make is the_example else make()
    shown = preview.preview("spreadsheet", io.BytesIO(data))
    assert shown == as_load_workbook_reads_it(data)
    assert shown["sheets"]  # and it is not empty
