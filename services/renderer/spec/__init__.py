"""Renderers for the declarative specs, one module per document type.

Each exposes `render(spec, title, path, progress) -> preview`: it writes the document to path, calls
progress(percent, message) as it goes, and returns the document's preview, made from what it wrote
(cheaper than reading the file back; code-mode documents are previewed from the file, preview.py).
Specs are validated against the schema first; what a schema
cannot say (a chart column that does not exist) raises SpecError here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[int, str], None]


def render(job_type: str, spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    if job_type == "spreadsheet":
        from . import spreadsheet as module
    elif job_type == "document":
        from . import document as module  # type: ignore[no-redef]
    elif job_type == "pdf":
        from . import pdf as module  # type: ignore[no-redef]
    elif job_type == "presentation":
        from . import presentation as module  # type: ignore[no-redef]
    else:
        raise ValueError(f"no renderer for {job_type!r}")
    return module.render(spec, title, path, progress)  # type: ignore[no-any-return]
