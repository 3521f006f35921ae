"""Computed formulas: a spec workbook's formula cells carry their values (openpyxl's data_only reads
numbers), errors and formulas the engine cannot compute are warnings naming the cell, and the preview
shows values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from docjobs.v1 import jobstore_pb2 as pb
from renderer.preview import preview as read_preview
from renderer.spec import render

from .renderers import RendererProcess, example, submit, wait_finished


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
    assert any(code == "formula_unsupported" and where.startswith("sheets[0].rows[2]") for code, where in found)
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


@pytest.fixture
async def renderer(jobstore, tmp_path):
    process = RendererProcess(jobstore.address, tmp_path / "renderer").start()
    yield process
    await process.shutdown()


async def test_formula_warnings_reach_the_result(stub, renderer) -> None:
    job = await submit(stub, "spreadsheet", {"spec": workbook([[1, 0, {"formula": "A2/B2"}]], columns=3)})
    final, _ = await wait_finished(stub, job.id)
    assert final.status == pb.JOB_STATUS_COMPLETED, final.error
    result = json.loads(final.result_json)
    assert [(w["code"], w["where"]) for w in result["warnings"]] == [("formula_error", "sheets[0].rows[0][2]")]
    assert result["preview"]["sheets"][0]["rows"][1] == ["1", "0", "#DIV/0!"]
