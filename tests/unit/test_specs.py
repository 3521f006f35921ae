"""The published JSON Schemas and the examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from docjobs import jobtypes, specs


def test_published_schemas_match_the_package(repo_root: Path) -> None:
    for name in specs.schema_names():
        published = json.loads((repo_root / "docs" / "schemas" / f"{name}.json").read_text())
        assert published == specs._raw(name), f"copy services/docjobs/schemas/{name}.json to docs/schemas/"


@pytest.mark.parametrize("job_type", jobtypes.JOB_TYPES)
def test_every_example_is_a_complete_valid_request(repo_root: Path, job_type: str) -> None:
    body = json.loads((repo_root / "examples" / f"{job_type}.json").read_text())
    assert body["documentType"] == job_type and body["title"] and body["spec"]
    specs.validate(job_type, body["spec"])


@pytest.mark.parametrize(("job_type", "spec", "path"), [
    ("spreadsheet", {"sheets": []}, "spec.sheets"),
    ("spreadsheet", {"sheets": [{"name": "a/b", "columns": [{"header": "x"}]}]}, "spec.sheets[0].name"),
    ("spreadsheet", {"sheets": [{"name": "a", "columns": [{"header": "x", "format": "money"}]}]},
     "spec.sheets[0].columns[0].format"),
    ("document", {"blocks": [{"type": "heading", "text": "x", "level": 4}]}, "spec.blocks[0].level"),
    ("document", {"blocks": [{"type": "video", "url": "x"}]}, "spec.blocks[0].type"),
    ("pdf", {"pageSize": "B9", "blocks": [{"type": "pageBreak"}]}, "spec.pageSize"),
    ("presentation", {"slides": [{"layout": "chart", "title": "t", "chart": {
        "type": "radar", "categories": ["a"], "series": [{"name": "s", "values": [1]}]}}]},
     "spec.slides[0].chart.type"),
    ("presentation", {"slides": [{"layout": "bullets", "title": "t"}]}, "spec.slides[0]"),
])
def test_invalid_specs_name_the_field(job_type: str, spec: dict[str, Any], path: str) -> None:
    with pytest.raises(specs.SpecError) as err:
        specs.validate(job_type, spec)
    assert err.value.path == path, str(err.value)


def test_an_unknown_document_type_is_named() -> None:
    with pytest.raises(specs.SpecError) as err:
        specs.validate("spreadsheets", {})
    assert err.value.path == "documentType"
