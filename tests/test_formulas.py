"""Computed formulas: a spec workbook's formula cells carry their values (openpyxl's data_only reads
numbers), errors and formulas the engine cannot compute are warnings naming the cell, and the preview
shows values. What the renderer computes is compared with what LibreOffice computes from the same
formulas; hostile formulas (deep nesting, ranges as large as a sheet, 8,000 characters) fail or warn within
the workbook's CPU budget."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from renderer.preview import preview as read_preview
from renderer.spec import calc, render

from .renderers import example, submit, wait_finished


def workbook(rows: list[list[Any]], columns: int = 4, **sheet: Any) -> dict[str, Any]:
    return {"sheets": [{"name": "S", "columns": [{"header": f"c{i}"} for i in range(columns)], "rows": rows,
                        **sheet}]}


def rendered(spec: dict[str, Any], path: Path) -> tuple[dict[str, Any], Any]:
    shown = render("spreadsheet", spec, "t", path, lambda _p, _m: None)
    return shown, openpyxl.load_workbook(path, data_only=True)


def test_every_formula_cell_carries_its_value(tmp_path: Path) -> None:
    spec = workbook([
        [2, 3, {"formula": "A2*B2"}, {"formula": "=SUM(A2:C2)/2"}],
        [4, 5.5, {"formula": "A3*B3"}, {"formula": "AVERAGE(C2:C3)"}],
        [-1, 0, {"formula": "ROUND(A3/3, 2)"}, {"formula": "ABS(A4)*COUNT(A2:A4)"}],
        ["x", True, {"formula": "ROUND(2.5, 0)"}, {"formula": "MAX(A2:B4) + MIN(A2:A4)^2"}],
    ])
    shown, book = rendered(spec, tmp_path / "f.xlsx")
    sheet = book["S"]
    assert [c.value for c in sheet[2]] == [2, 3, 6, 5.5]
    assert [c.value for c in sheet[3]] == [4, 5.5, 22, 14]
    assert [c.value for c in sheet[4]] == [-1, 0, 1.33, 3]
    assert [c.value for c in sheet[5]] == ["x", True, 3, 6.5]  # Excel rounds halves away from zero
    assert "warnings" not in shown
    # The formulas are still there for Excel and LibreOffice (which recalculate on opening).
    assert openpyxl.load_workbook(tmp_path / "f.xlsx")["S"]["C2"].value == "=A2*B2"
    # The preview shows what a reader of cached values sees, as the renderer's own reader makes it.
    assert shown["sheets"][0]["rows"][1] == ["2", "3", "6", "5.5"]
    assert read_preview("spreadsheet", tmp_path / "f.xlsx")["sheets"][0]["rows"][1] == ["2", "3", "6", "5.5"]


def test_dates_references_across_sheets_and_long_chains(tmp_path: Path) -> None:
    rows = [[1, {"formula": "A2"}]] + [[1, {"formula": f"B{r}+A{r + 1}"}] for r in range(2, 5001)]
    spec = {"sheets": [
        {"name": "Data", "columns": [{"header": "n"}, {"header": "running total"}], "rows": rows},
        {"name": "My summary", "columns": [{"header": "day", "format": "date"}, {"header": "v"}],
         "rows": [["2026-03-01", {"formula": "Data!B5001*2"}], [None, {"formula": "A2+1"}]]},
        {"name": "Other", "columns": [{"header": "x"}], "rows": [[{"formula": "'My summary'!B2/4"}]]},
    ]}
    shown, book = rendered(spec, tmp_path / "f.xlsx")
    assert book["Data"]["B5001"].value == 5000  # a chain 5,000 cells deep
    assert book["My summary"]["B2"].value == 10000
    assert book["My summary"]["B3"].value == 46083  # 2026-03-01 is day 46082 to Excel; plus one
    assert book["Other"]["A2"].value == 2500
    assert "warnings" not in shown


def test_errors_and_formulas_the_engine_lacks_are_warnings_naming_the_cell(tmp_path: Path) -> None:
    spec = workbook([
        [1, 0, {"formula": "A2/B2"}, {"formula": "C2+1"}],
        [1, 2, {"formula": "NOSUCHFUNCTION(A3)"}, {"formula": "A3/(B3-2)"}],
        [1, 2, {"formula": "D4"}, {"formula": "C4"}],
    ])
    shown, book = rendered(spec, tmp_path / "f.xlsx")
    sheet = book["S"]
    assert sheet["C2"].value == "#DIV/0!" and sheet["D2"].value == "#DIV/0!" and sheet["D3"].value == "#DIV/0!"
    assert sheet["C3"].value is None  # not computed: no value rather than a wrong one
    found = {(w["code"], w["where"]) for w in shown["warnings"]}
    assert {("formula_error", "sheets[0].rows[0][2]"), ("formula_error", "sheets[0].rows[0][3]"),
            ("formula_error", "sheets[0].rows[1][3]"), ("formula_unsupported", "sheets[0].rows[1][2]")} <= found
    # A circular reference is an error of the workbook (LibreOffice shows Err:522), not a lack of the engine.
    assert {("formula_error", "sheets[0].rows[2][2]"), ("formula_error", "sheets[0].rows[2][3]")} <= found
    assert sheet["C4"].value is None and sheet["D4"].value is None
    (lacking,) = [w for w in shown["warnings"] if w["where"] == "sheets[0].rows[1][2]"]
    assert "NOSUCHFUNCTION" in lacking["message"] and "C3" in lacking["message"]
    (division,) = [w for w in shown["warnings"] if w["where"] == "sheets[0].rows[0][2]"]
    assert "#DIV/0!" in division["message"] and "C2" in division["message"]
    assert shown["sheets"][0]["rows"][1] == ["1", "0", "#DIV/0!", "#DIV/0!"]


def test_the_example_workbook_reads_as_numbers(tmp_path: Path) -> None:
    body = example("spreadsheet")
    _, book = rendered(body["spec"], tmp_path / "f.xlsx")
    for sheet_spec in body["spec"]["sheets"]:
        sheet = book[sheet_spec["name"]]
        for r, row in enumerate(sheet_spec.get("rows", []), start=2):
            for c, value in enumerate(row, start=1):
                if isinstance(value, dict):
                    assert isinstance(sheet.cell(row=r, column=c).value, int | float), (sheet_spec["name"], r, c)


# What a model writes in a workbook: lookups, conditions, text, dates, across sheets, and its mistakes.
# Each formula cell of the "Report" sheet (column C) with the value Excel gives it (None: not computed).
SALES = [["North", 120, "2026-03-01"], ["South", 80, "2026-04-15"], ["North", 200, "2025-12-31"],
         ["East", 50, "2026-01-10"]]
REPORT: list[tuple[str, str, Any]] = [
    ("if", 'IF(Sales!B2>100,"high","low")', "high"),
    ("sumif", 'SUMIF(Sales!A2:A5,"North",Sales!B2:B5)', 320),
    ("countif", 'COUNTIF(Sales!B2:B5,">=80")', 3),
    ("vlookup", 'VLOOKUP("South",Sales!A2:C5,2,FALSE)', 80),
    ("index/match", 'INDEX(Sales!B2:B5,MATCH("East",Sales!A2:A5,0))', 50),
    ("concat", 'CONCAT(Sales!A2,"-",Sales!B2)', "North-120"),
    ("&", 'Sales!A3&" sold "&Sales!B3', "South sold 80"),
    ("text", 'TEXT(Sales!B4/3,"0.00")', "66.67"),
    ("and/or", "AND(Sales!B2>100,OR(Sales!B3>100,Sales!B4>100))", True),
    ("date", "DATE(2026,3,1)", 46082),
    ("year", "YEAR(Sales!C4)", 2025),
    ("iferror", 'IFERROR(Sales!B2/0,"none")', "none"),
    ("whole column", "SUM(Sales!B:B)", 450),
    ("as large as a sheet", 'COUNTIF(Sales!A1:XFD1048576,"North")', 2),
    ("range, in the engine", "SUMPRODUCT(Sales!B2:B5,Sales!B2:B5)/1000", 63.3),
    ("on the same sheet", "C14*2", 900),
    ("#DIV/0!", "SUM(Sales!B2:B5)/(Sales!B2-120)", "#DIV/0!"),
    ("#REF!", "INDEX(Sales!B2:B5,9)", "#REF!"),
    ("#N/A", 'VLOOKUP("West",Sales!A2:B5,2,FALSE)', "#N/A"),
    ("circular", "C21+1", None),
    ("unknown function", "NOSUCHFUNCTION(1)", None),
    ("takes a cell with no value", "C22*2", None),
]
# What the warnings say of each bad cell: (code, its place in the spec).
REPORT_WARNINGS = {("formula_error", "sheets[1].rows[16][2]"), ("formula_error", "sheets[1].rows[17][2]"),
                   ("formula_error", "sheets[1].rows[18][2]"), ("formula_error", "sheets[1].rows[19][2]"),
                   ("formula_unsupported", "sheets[1].rows[20][2]"), ("formula_unsupported", "sheets[1].rows[21][2]")}


def report_workbook() -> dict[str, Any]:
    return {"sheets": [
        {"name": "Sales", "columns": [{"header": "region"}, {"header": "amount"}, {"header": "day", "format": "date"}],
         "rows": SALES},
        {"name": "Report", "columns": [{"header": "what"}, {"header": "formula"}, {"header": "value"}],
         "rows": [[name, "=" + formula, {"formula": formula}] for name, formula, _ in REPORT]},
    ]}


def test_the_functions_a_model_writes_are_computed_and_its_mistakes_reported(tmp_path: Path) -> None:
    shown, book = rendered(report_workbook(), tmp_path / "f.xlsx")
    sheet = book["Report"]
    for r, (name, formula, expected) in enumerate(REPORT, start=2):
        value = sheet.cell(row=r, column=3).value
        if isinstance(expected, float):
            assert value == pytest.approx(expected), name
        else:
            assert value == expected and type(value) is type(expected), (name, formula, value)
    found = {(w["code"], w["where"]) for w in shown["warnings"]}
    assert found == REPORT_WARNINGS
    messages = {w["where"]: w["message"] for w in shown["warnings"]}
    assert "C18" in messages["sheets[1].rows[16][2]"] and "#DIV/0!" in messages["sheets[1].rows[16][2]"]
    assert "C20" in messages["sheets[1].rows[18][2]"] and "#N/A" in messages["sheets[1].rows[18][2]"]
    assert "circular" in messages["sheets[1].rows[19][2]"] and "C21" in messages["sheets[1].rows[19][2]"]
    assert "NOSUCHFUNCTION" in messages["sheets[1].rows[20][2]"] and "C22" in messages["sheets[1].rows[20][2]"]
    assert "cell C22" in messages["sheets[1].rows[21][2]"]  # the cell it takes, which has no value
    # The preview shows what a reader of cached values sees.
    assert [row[2] for row in shown["sheets"][1]["rows"][1:5]] == ["high", "320", "3", "80"]
    assert read_preview("spreadsheet", tmp_path / "f.xlsx")["sheets"][1]["rows"][1][2] == "high"
    # Functions newer than the file format are stored with their prefix, else Excel shows #NAME? for them.
    assert openpyxl.load_workbook(tmp_path / "f.xlsx")["Report"]["C7"].value == '=_xlfn.CONCAT(Sales!A2,"-",Sales!B2)'


def without_values(path: Path, target: Path) -> None:
    """The workbook with every formula's cached value taken out: what LibreOffice shows of it, it computed."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.startswith("xl/worksheets/sheet"):
                text = re.sub(r'(<c r="[A-Z]+\d+"[^>]*?)(?: t="[^"]*")?([^>]*><f>.*?</f>)<v>.*?</v>', r"\1\2<v></v>",
                              data.decode())
                assert not re.search(r"</f><v>[^<]", text)
                data = text.encode()
            out.writestr(info, data)


def libreoffice_sheet(path: Path, sheet: str, directory: Path) -> list[list[str]]:
    """One sheet of the workbook as LibreOffice computes and shows it (its CSV export, every sheet)."""
    env = {**os.environ, "HOME": str(directory)}
    subprocess.run(["soffice", f"-env:UserInstallation=file://{directory / 'profile'}", "--headless", "--convert-to",
                    'csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1',
                    "--outdir", str(directory / "out"), str(path)], check=True, capture_output=True, env=env,
                   timeout=180)
    with (directory / "out" / f"{path.stem}-{sheet}.csv").open(newline="") as f:
        return list(csv.reader(f))


@pytest.mark.skipif(shutil.which("soffice") is None, reason="LibreOffice is not installed")
def test_libreoffice_computes_the_same_values(tmp_path: Path) -> None:
    render("spreadsheet", report_workbook(), "t", tmp_path / "ours.xlsx", lambda _p, _m: None)
    without_values(tmp_path / "ours.xlsx", tmp_path / "bare.xlsx")
    theirs = libreoffice_sheet(tmp_path / "bare.xlsx", "Report", tmp_path)
    ours = openpyxl.load_workbook(tmp_path / "ours.xlsx", data_only=True)["Report"]
    compared = 0
    for r, (name, _, _) in enumerate(REPORT, start=2):
        value, shown = ours.cell(row=r, column=3).value, theirs[r - 1][2]
        if value is None:  # not computed here: LibreOffice has no number for it either
            assert shown.startswith(("Err:", "#")), (name, shown)
            continue
        if isinstance(value, bool):
            assert shown == str(value).upper(), name
        elif name == "#REF!":  # INDEX past its range: Excel's #REF!, LibreOffice's own code for it
            assert (value, shown) == ("#REF!", "Err:502")
        elif isinstance(value, int | float):
            if "/" in shown:  # LibreOffice formats DATE()'s number as a date; the file gives it no format
                shown = str((datetime.strptime(shown, "%m/%d/%Y") - calc.EXCEL_EPOCH).days)
            assert float(shown) == pytest.approx(value), (name, shown)
        else:
            assert shown == value, (name, shown)
        compared += 1
    assert compared == len(REPORT) - 3


def test_ranges_past_the_sheets_cells_and_formulas_that_need_their_size(tmp_path: Path) -> None:
    spec = workbook([
        [1, 2, {"formula": "SUM(A:A)+SUM(1:1)"}, {"formula": "SUM($A$2:$B$1048576)"}],
        [3, 4, {"formula": "ROWS(A:A)"}, {"formula": "COUNTBLANK(A2:A1048576)"}],
        [5, 6, {"formula": "COUNTA(A2:A9)"}, {"formula": "A1048577"}],
    ])
    shown, book = rendered(spec, tmp_path / "f.xlsx")
    sheet = book["S"]
    assert sheet["C2"].value == 9 and sheet["D2"].value == 21 and sheet["C4"].value == 3
    # Their size counts (1,048,576 rows), and the renderer reads only the cells the sheet has: no value.
    assert sheet["C3"].value is None and sheet["D3"].value is None
    found = {(w["code"], w["where"]) for w in shown["warnings"]}
    assert found == {("formula_unsupported", "sheets[0].rows[1][2]"), ("formula_unsupported", "sheets[0].rows[1][3]"),
                     ("formula_error", "sheets[0].rows[2][3]")}


def test_twenty_thousand_formulas_are_computed_within_the_budget(tmp_path: Path) -> None:
    rows = [[r % 10, r, {"formula": f"A{r + 2}*B{r + 2}+1"}, {"formula": f'IF(A{r + 2}>4,"hi","lo")'}]
            if r < 2000 else [r % 10, r, {"formula": f"A{r + 2}*B{r + 2}+1"}, {"formula": f"C{r + 2}/2"}]
            for r in range(10_000)]
    calc.warm()  # as the zygote does
    started = time.process_time()
    shown = render("spreadsheet", workbook(rows), "t", tmp_path / "f.xlsx", lambda _p, _m: None)
    assert time.process_time() - started < calc.BUDGET_S
    assert "warnings" not in shown
    book = openpyxl.load_workbook(tmp_path / "f.xlsx", data_only=True, read_only=True)
    try:
        sheet = book["S"]
        assert sheet["C11"].value == 9 * 9 + 1 and sheet["D11"].value == "hi" and sheet["D12"].value == "lo"
        assert sheet["D10001"].value == (9 * 9999 + 1) / 2
    finally:
        book.close()  # a read-only workbook holds its file open until closed


def test_past_the_budget_the_rest_is_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calc, "BUDGET_S", 0.3)
    calc.warm()
    rows = [[r, {"formula": f'IF(A{r + 2}>4,"hi","lo")'}] for r in range(5000)]
    started = time.process_time()
    shown, book = rendered(workbook(rows, columns=2), tmp_path / "f.xlsx")
    assert time.process_time() - started < 5
    (warning,) = shown["warnings"]
    assert warning["code"] == "formula_unsupported" and "were not computed" in warning["message"]
    assert book["S"]["B2"].value == "lo" and book["S"]["B5001"].value is None


HOSTILE = {
    "65 nested functions": "IF(A2>0," * 65 + "1" + ",0)" * 65,
    "200 nested parentheses": "(" * 200 + "A2" + ")" * 200,
    "8,000 characters of terms": "+".join(["A2"] * 2666),
    "8,000 characters of text": "CONCAT(" + ",".join(['"ab"'] * 1500) + ")",
    "8,000 characters of arguments": "SUM(" + ",".join(f"A{r}" for r in range(2, 1500)) + ")",
    "a range as large as a sheet": "SUM(Big!A1:XFD1048576)",
    "more than a million cells": "SUM(" + ",".join(f"Big!A1:T{60_000 + i}" for i in range(300)) + ")",
    "a cell past the sheet's last row": "B1048577",
}


def test_hostile_formulas_fail_or_warn_and_never_hang(tmp_path: Path) -> None:
    spec = {"sheets": [
        {"name": "S", "columns": [{"header": "n"}, {"header": "f"}],
         "rows": [[1, {"formula": formula}] for formula in HOSTILE.values()]},
        {"name": "Big", "columns": [{"header": f"c{c}"} for c in range(20)],
         "rows": [[r + c for c in range(20)] for r in range(1000)]},
    ]}
    calc.warm()
    started = time.process_time()
    shown, book = rendered(spec, tmp_path / "f.xlsx")
    assert time.process_time() - started < calc.BUDGET_S
    values = {name: book["S"].cell(row=r, column=2).value for r, name in enumerate(HOSTILE, start=2)}
    assert values["8,000 characters of terms"] == 2666
    assert values["8,000 characters of text"] == "ab" * 1500
    assert values["8,000 characters of arguments"] == len(HOSTILE)  # column A holds a 1 in each row
    assert values["a range as large as a sheet"] == sum(r + c for r in range(1000) for c in range(20))
    warned = {w["where"]: (w["code"], w["message"]) for w in shown["warnings"]}
    for r, name in enumerate(HOSTILE):
        if values[name] is None:
            _, message = warned[f"sheets[0].rows[{r}][1]"]
            assert f"B{r + 2}" in message and len(message) <= 300, name
    assert "Excel takes at most 64" in warned["sheets[0].rows[0][1]"][1]
    assert "Excel takes at most 64" in warned["sheets[0].rows[1][1]"][1]
    assert "more than 1,000,000 cells" in warned["sheets[0].rows[6][1]"][1]
    assert warned["sheets[0].rows[7][1]"][0] == "formula_error"


async def test_formula_warnings_reach_the_result(stub, renderer) -> None:
    spec = workbook([[1, 0, {"formula": "A2/B2"}, {"formula": 'IF(A2>0,"yes","no")&TEXT(A2,"0.0")'}]])
    job = await submit(stub, "spreadsheet", {"spec": spec})
    final, _ = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    result = json.loads(final.result_json)
    assert [(w["code"], w["where"]) for w in result["warnings"]] == [("formula_error", "sheets[0].rows[0][2]")]
    # The engine's function computed in the spec worker, under its limits.
    assert result["preview"]["sheets"][0]["rows"][1] == ["1", "0", "#DIV/0!", "yes1.0"]
