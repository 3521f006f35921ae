"""Renderers for the declarative specs, one module per document type.

Each exposes `render(spec, title, path, progress) -> preview`: it writes the document to path, calls
progress(percent, message) as it goes, and returns the document's preview, made from what it wrote
(cheaper than reading the file back; code-mode documents are previewed from the file, preview.py).
Specs are validated against the schema first; what a schema
cannot say (a chart column that does not exist) raises SpecError here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[int, str], None]

# What XML 1.0 (every office format, and the PDF's metadata) cannot carry: C0 controls other than tab,
# newline and carriage return, lone surrogates, U+FFFE and U+FFFF. A model's text sometimes holds them;
# they are dropped rather than failing the whole document.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(value: Any) -> Any:
    """The spec with every string cleaned of characters no document format can hold."""
    if isinstance(value, str):
        return _NOT_XML.sub("", value)
    if isinstance(value, list):
        return [xml_safe(v) for v in value]
    if isinstance(value, dict):
        return {xml_safe(k): xml_safe(v) for k, v in value.items()}
    return value


Render = Callable[[dict[str, Any], str, Path, Progress], dict[str, Any]]


def _renderer(job_type: str) -> Render:
    if job_type == "spreadsheet":
        from . import spreadsheet
        return spreadsheet.render
    if job_type == "document":
        from . import document
        return document.render
    if job_type == "pdf":
        from . import pdf
        return pdf.render
    if job_type == "presentation":
        from . import presentation
        return presentation.render
    raise ValueError(f"no renderer for {job_type!r}")


def render(job_type: str, spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    """The document's preview; with a `warnings` list when the document is not all that was asked (a
    character no font draws, a formula that computes to an error), which the worker moves to the result."""
    from ..fonts import glyph_warnings
    from ..sandbox.messages import MAX_WARNINGS

    spec, title = xml_safe(spec), xml_safe(title)
    preview = _renderer(job_type)(spec, title, path, progress)
    warnings = [*glyph_warnings(spec, title), *preview.pop("warnings", [])]
    if warnings:
        preview["warnings"] = warnings[:MAX_WARNINGS]
    return preview
