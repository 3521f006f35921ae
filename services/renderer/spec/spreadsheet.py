"""Spreadsheet specs to xlsx with openpyxl."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, PieChart, Reference
from openpyxl.drawing.image import Image
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.worksheet.worksheet import Worksheet

from docjobs.specs import SpecError

from ..fonts import office
from . import Progress, calc
from .images import Pictures

CURRENCY_FORMATS = {
    "USD": '"$"#,##0.00', "EUR": '#,##0.00 "€"', "GBP": '"£"#,##0.00', "JPY": '"¥"#,##0',
    "CHF": '"CHF" #,##0.00', "CAD": '"CA$"#,##0.00', "AUD": '"A$"#,##0.00',
}
NUMBER_FORMATS = {
    "text": "@", "integer": "#,##0", "decimal": "#,##0.00", "percent": "0.0%", "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
}
DEFAULT_HEADER_FILL = "1F4E78"
MAX_PREVIEW_SHEETS, MAX_PREVIEW_ROWS, MAX_PREVIEW_COLS = 10, 5, 8
DEFAULT_HEADER_FONT = "FFFFFF"
MAX_ROW, MAX_COLUMN = 1048576, 16384  # Excel's sheet: XFD1048576


def render(spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    workbook = Workbook()
    default_sheet = workbook.active  # a new workbook starts with one empty sheet
    if default_sheet is not None:
        workbook.remove(default_sheet)
    workbook.properties.title = spec.get("title") or title
    workbook.properties.creator = spec.get("author") or None
    workbook.properties.language = spec.get("language") or None
    theme = spec.get("theme", {})
    if theme.get("fontFamily"):
        _default_font(workbook, theme["fontFamily"])
    pictures = Pictures()
    sheets = spec["sheets"]
    seen: set[str] = set()
    total_rows = sum(len(s.get("rows", [])) for s in sheets) or 1
    done_rows = 0
    for index, sheet_spec in enumerate(sheets):
        name = sheet_spec["name"]
        if name.lower() in seen:
            raise SpecError(f"spec.sheets[{index}].name", f"duplicate sheet name {name!r}")
        seen.add(name.lower())
        sheet = workbook.create_sheet(name)
        done_rows = _fill_sheet(sheet, sheet_spec, index, progress, done_rows, total_rows, theme)
        for n, image_spec in enumerate(sheet_spec.get("images", [])):
            _add_image(sheet, pictures, image_spec, f"spec.sheets[{index}].images[{n}]")
    progress(95, "saving")
    workbook.save(path)
    computed = _compute(spec, path, progress)
    return {**preview(spec, computed.values), "warnings": computed.warnings}


def _compute(spec: dict[str, Any], path: Path, progress: Progress) -> calc.Result:
    """Every formula's value, written into the saved file beside its formula (calc.py)."""
    book = calc.Workbook()
    for index, sheet in enumerate(spec["sheets"]):
        book.add_sheet(sheet["name"], [c["header"] for c in sheet["columns"]], sheet.get("rows", []),
                       [c.get("format") for c in sheet["columns"]], index)
    if book.formulas:
        progress(96, f"computing {len(book.formulas)} formulas")
    computed = calc.compute(book)
    calc.write_values(path, computed, len(spec["sheets"]))
    return computed


def preview(spec: dict[str, Any], computed: dict[calc.Key, Any] | None = None) -> dict[str, Any]:
    """The first rows of each sheet, as the file shows them: a formula as its computed value (its text
    when it has none)."""
    sheets = []
    for s, sheet in enumerate(spec["sheets"][:MAX_PREVIEW_SHEETS]):
        header = [c["header"] for c in sheet["columns"]][:MAX_PREVIEW_COLS]
        rows = [header]
        for r, row in enumerate(sheet.get("rows", [])[: MAX_PREVIEW_ROWS - 1]):
            cells = [calc.preview_value(computed[(s, r + 2, c + 1)])
                     if isinstance(v, dict) and computed is not None and (s, r + 2, c + 1) in computed
                     else _preview_cell(v) for c, v in enumerate(row[:MAX_PREVIEW_COLS])]
            while cells and cells[-1] == "":
                cells.pop()
            rows.append(cells)
        sheets.append({"name": sheet["name"], "rows": rows})
    return {"kind": "spreadsheet", "sheets": sheets}


def _preview_cell(value: Any) -> str:
    if isinstance(value, dict):
        formula = str(value["formula"])
        return formula if formula.startswith("=") else "=" + formula
    return "" if value is None else str(value)[:300]


def _default_font(workbook: Workbook, family: str) -> None:
    """Every cell without a font of its own (font 0 of the workbook, and the Normal style) in the theme's."""
    font = Font(name=family, sz=11, family=2)
    workbook._fonts[0] = font  # type: ignore[attr-defined]  # openpyxl has no API for the default font
    workbook._named_styles["Normal"].font = font  # type: ignore[attr-defined]


def _check_anchor(anchor: str, where: str) -> None:
    """The schema's pattern admits cells past a sheet's last (XFD1048576), which Excel calls a damaged file."""
    row, column = coordinate_to_tuple(anchor)
    if row > MAX_ROW or column > MAX_COLUMN:
        raise SpecError(where, f"{anchor} is outside a sheet (the last cell is XFD{MAX_ROW})")


def _add_image(sheet: Worksheet, pictures: Pictures, spec: dict[str, Any], where: str) -> None:
    _check_anchor(spec["anchor"], f"{where}.anchor")
    picture = pictures.get(spec, where)
    width_cm, height_cm = picture.size_cm(spec.get("widthCm"), 50)
    image = Image(picture.stream())
    image.width, image.height = round(width_cm / 2.54 * 96), round(height_cm / 2.54 * 96)  # pixels at 96 dpi
    sheet.add_image(image, spec["anchor"])


def _fill_sheet(sheet: Worksheet, spec: dict[str, Any], index: int, progress: Progress, done_rows: int,
                total_rows: int, theme: dict[str, Any]) -> int:
    columns = spec["columns"]
    style = spec.get("headerStyle", {})
    header_font = Font(name=theme.get("fontFamily", "Calibri"), bold=style.get("bold", True),
                       color=style.get("fontColor", "#" + DEFAULT_HEADER_FONT)[1:])
    fill = style.get("fill", theme.get("accentColor", "#" + DEFAULT_HEADER_FILL))
    header_fill = PatternFill("solid", fgColor=fill[1:])
    if theme.get("headingColor"):
        sheet.sheet_properties.tabColor = theme["headingColor"][1:]
    formats = [_number_format(c) for c in columns]
    kinds = [c.get("format") for c in columns]
    for col, column in enumerate(columns, start=1):
        cell = sheet.cell(row=1, column=col, value=column["header"])
        cell.font = header_font
        cell.fill = header_fill
        if not column["header"].isascii():
            office.xlsx_cell(cell, column["header"])
        width = column.get("width", max(10, min(60, len(column["header"]) + 4)))
        sheet.column_dimensions[get_column_letter(col)].width = width
    rows = spec.get("rows", [])
    step = max(1, len(rows) // 20)
    for r, row in enumerate(rows):
        if len(row) > len(columns):
            raise SpecError(f"spec.sheets[{index}].rows[{r}]", f"has {len(row)} cells but the sheet has "
                                                                f"{len(columns)} columns")
        for c, value in enumerate(row):
            cell = sheet.cell(row=r + 2, column=c + 1)
            _set_value(cell, value, kinds[c], f"spec.sheets[{index}].rows[{r}][{c}]")
            if (number_format := formats[c]) is not None:
                cell.number_format = number_format
        if r % step == 0:
            progress(5 + int(85 * (done_rows + r) / total_rows), f"sheet {spec['name']}: row {r + 1} of {len(rows)}")
    last_row = len(rows) + 1
    last_col = get_column_letter(len(columns))
    if spec.get("freezeHeader", True):
        sheet.freeze_panes = "A2"
    if spec.get("autoFilter", True):
        sheet.auto_filter.ref = f"A1:{last_col}{last_row}"
    for n, chart_spec in enumerate(spec.get("charts", [])):
        _add_chart(sheet, chart_spec, len(columns), last_row, f"spec.sheets[{index}].charts[{n}]",
                   theme.get("accentColor"))
    return done_rows + len(rows)


def _number_format(column: dict[str, Any]) -> str | None:
    if "numberFormat" in column:
        return str(column["numberFormat"])
    kind = column.get("format")
    if kind == "currency":
        return CURRENCY_FORMATS[column.get("currency", "USD")]
    return NUMBER_FORMATS.get(kind) if kind else None


def _set_value(cell: Any, value: Any, kind: str | None, where: str) -> None:
    if isinstance(value, dict):
        cell.value = calc.excel_formula(value["formula"])
        return
    if isinstance(value, str) and kind in ("date", "datetime") and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise SpecError(where, f"{value!r} is not an ISO 8601 date") from None
        cell.value = parsed.date() if kind == "date" and len(value) <= 10 else parsed
        return
    if isinstance(value, str | date) or value is None or isinstance(value, bool | int | float):
        cell.value = value
        if isinstance(value, str) and value.startswith("="):
            cell.data_type = "s"  # text that looks like a formula stays text (no formula injection)
        if isinstance(value, str) and not value.isascii():
            office.xlsx_cell(cell, value)
        return
    raise SpecError(where, f"unsupported value {value!r}")


def _add_chart(sheet: Worksheet, spec: dict[str, Any], n_columns: int, last_row: int, where: str,
               accent: str | None = None) -> None:
    for key, col in [("categoryColumn", spec["categoryColumn"])] + [
            (f"valueColumns[{i}]", c) for i, c in enumerate(spec["valueColumns"])]:
        if col >= n_columns:
            raise SpecError(f"{where}.{key}", f"column {col} does not exist (the sheet has {n_columns})")
    if last_row < 2:
        raise SpecError(where, "a chart needs at least one data row")
    kind = spec["type"]
    chart: Any
    if kind in ("bar", "column"):
        chart = BarChart()
        chart.type = "bar" if kind == "bar" else "col"
    elif kind == "line":
        chart = LineChart()
    else:
        chart = PieChart()
    if spec.get("title"):
        chart.title = spec["title"]
    if kind != "pie":
        if spec.get("yAxisTitle"):
            chart.y_axis.title = spec["yAxisTitle"]
        if spec.get("xAxisTitle"):
            chart.x_axis.title = spec["xAxisTitle"]
    for col in spec["valueColumns"]:
        data = Reference(sheet, min_col=col + 1, min_row=1, max_row=last_row)
        chart.add_data(data, titles_from_data=True)
    categories = Reference(sheet, min_col=spec["categoryColumn"] + 1, min_row=2, max_row=last_row)
    chart.set_categories(categories)
    if accent and kind != "pie":  # a pie's slices need their own colours
        series = chart.series[0].graphicalProperties
        if kind == "line":
            series.line.solidFill = accent[1:]
        else:
            series.solidFill = accent[1:]
    chart.width, chart.height = 18, 9
    anchor = spec.get("anchor") or f"{get_column_letter(n_columns + 2)}2"
    _check_anchor(anchor, f"{where}.anchor")
    sheet.add_chart(chart, anchor)
