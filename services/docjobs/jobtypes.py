"""The job types: the contract the gateway and the renderer share, in one table.

Adding a job type is a row here and its JSON Schema in `schemas/<name>.json` (docjobs.specs validates
against it) in the shared package, then its renderer in `renderer/spec/`. This module imports nothing,
so the render zygote can read the table before it isolates itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobType:
    name: str  # the gRPC job_type and the HTTP documentType
    extension: str  # of the rendered file, without the dot
    content_type: str  # of the rendered file, as downloads send it


TABLE = (
    JobType("spreadsheet", "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    JobType("document", "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    JobType("pdf", "pdf", "application/pdf"),
    JobType("presentation", "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
)

JOB_TYPES: tuple[str, ...] = tuple(t.name for t in TABLE)
EXTENSIONS: dict[str, str] = {t.name: t.extension for t in TABLE}
CONTENT_TYPES: dict[str, str] = {t.name: t.content_type for t in TABLE}
