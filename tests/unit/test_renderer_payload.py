"""How a renderer reads a claimed job (renderer/worker.py): its payload, strictly, and its file name."""

from __future__ import annotations

import json

import pytest

from docjobs.v1 import jobstore_pb2 as pb
from renderer.worker import JobFailure, filename_for, parse_payload


def job(payload: object) -> pb.Job:
    return pb.Job(id="j", job_type="pdf", payload_json=payload if isinstance(payload, str) else json.dumps(payload))


def test_a_spec_or_code_is_read_as_it_is() -> None:
    assert parse_payload(job({"spec": {"blocks": []}}), "off") == ("spec", {"blocks": []})
    assert parse_payload(job({"code": "doc.save(path)"}), "sandbox") == ("code", "doc.save(path)")


@pytest.mark.parametrize(("payload", "execution", "code"), [
    ("{", "sandbox", "invalid_payload"),
    ([1], "sandbox", "invalid_payload"),
    ({"spec": {}, "code": "x"}, "sandbox", "invalid_payload"),
    ({}, "sandbox", "invalid_payload"),
    ({"code": "x"}, "off", "code_execution_disabled"),
    ({"code": " "}, "sandbox", "invalid_payload"),
    ({"code": 3}, "sandbox", "invalid_payload"),
])
def test_a_bad_payload_fails_its_job_for_good(payload: object, execution: str, code: str) -> None:
    with pytest.raises(JobFailure) as err:
        parse_payload(job(payload), execution)
    assert err.value.code == code and not err.value.retryable


@pytest.mark.parametrize(("title", "job_type", "name"), [
    ("Q3 report", "spreadsheet", "Q3-report.xlsx"),
    ("../../etc/passwd", "pdf", "etcpasswd.pdf"),
    ("   ", "presentation", "presentation.pptx"),
    ("تقرير الربع", "document", "تقرير-الربع.docx"),
    ("年度报告", "pdf", "年度报告.pdf"),
    ("x" * 200, "pdf", "x" * 80 + ".pdf"),
])
def test_a_file_is_named_after_its_title_without_a_path(title: str, job_type: str, name: str) -> None:
    assert filename_for(title, job_type) == name
