"""Hostile specs: hypothesis generates documents of each type from the published JSON Schemas (and
arbitrary JSON besides); each either renders into a file its reader opens, or is refused with a clear
SpecError naming the place. Nothing else may escape: no crash of the renderer's code."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import docx
import openpyxl
import pptx
import pypdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docjobs import jobtypes, specs
from renderer.spec import render

from .jsonschema_strategy import from_schema

READERS = {
    "spreadsheet": lambda path: openpyxl.load_workbook(path),
    "document": lambda path: docx.Document(str(path)),
    "pdf": lambda path: pypdf.PdfReader(str(path)).pages[0],
    "presentation": lambda path: pptx.Presentation(str(path)),
}
EXTENSIONS = {"spreadsheet": "xlsx", "document": "docx", "pdf": "pdf", "presentation": "pptx"}
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4), max_leaves=20)


def render_or_refuse(job_type: str, spec: Any) -> str:
    """'rendered' or 'refused'; any other outcome fails the test."""
    try:
        specs.validate(job_type, spec)
    except specs.SpecError as exc:
        assert str(exc) and exc.args, exc
        return "refused"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz.{EXTENSIONS[job_type]}"
        try:
            preview = render(job_type, spec, "Fuzz", path, lambda *_: None)
        except specs.SpecError as exc:  # what a schema cannot say, said by the renderer
            assert str(exc)
            return "refused"
        assert path.stat().st_size > 0 and isinstance(preview, dict)
        READERS[job_type](path)
    return "rendered"


@pytest.mark.parametrize("job_type", jobtypes.JOB_TYPES)
def test_schema_valid_specs_render_or_are_refused_clearly(job_type: str) -> None:
    outcomes: list[str] = []

    @given(spec=from_schema(specs.schema(job_type), specs._raw))
    @FUZZ
    def run(spec: Any) -> None:
        outcomes.append(render_or_refuse(job_type, spec))

    run()
    assert "rendered" in outcomes  # the generator reaches real documents, not only refusals


@pytest.mark.parametrize("job_type", jobtypes.JOB_TYPES)
def test_arbitrary_json_is_refused_clearly(job_type: str) -> None:
    @given(spec=JSON)
    @FUZZ
    def run(spec: Any) -> None:
        assert render_or_refuse(job_type, spec) in ("rendered", "refused")

    run()
