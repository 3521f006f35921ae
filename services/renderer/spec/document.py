"""Document specs to docx with python-docx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docx import Document
from docx.enum.text import WD_BREAK

from . import Progress


def render(spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    document = Document()
    doc_title = spec.get("title") or title
    document.core_properties.title = doc_title
    from .pdf import _starts_with_heading

    if doc_title and not _starts_with_heading(spec["blocks"], doc_title):
        document.add_heading(doc_title, level=0)
    blocks = spec["blocks"]
    step = max(1, len(blocks) // 20)
    for i, block in enumerate(blocks):
        _add_block(document, block)
        if i % step == 0:
            progress(5 + int(85 * i / len(blocks)), f"block {i + 1} of {len(blocks)}")
    progress(95, "saving")
    document.save(str(path))
    return preview(spec, doc_title)


def preview(spec: dict[str, Any], doc_title: str) -> dict[str, Any]:
    """The title and headings, and the first paragraphs, as in the file."""
    headings = [doc_title] if doc_title else []
    paragraphs: list[str] = []
    for block in spec["blocks"]:
        if block["type"] == "heading" and len(headings) < 10:
            headings.append(block["text"][:300])
        elif block["type"] == "paragraph" and len(paragraphs) < 3:
            text = "".join(r["text"] for r in block.get("runs") or [{"text": block.get("text", "")}]).strip()
            if text:
                paragraphs.append(text[:300])
        elif block["type"] in ("bullets", "numbered") and len(paragraphs) < 3:
            paragraphs.extend(item[:300] for item in block["items"][: 3 - len(paragraphs)])
    return {"kind": "document", "headings": headings, "paragraphs": paragraphs}


def _add_block(document: Any, block: dict[str, Any]) -> None:
    kind = block["type"]
    if kind == "heading":
        document.add_heading(block["text"], level=block.get("level", 1))
    elif kind == "paragraph":
        paragraph = document.add_paragraph()
        for run in block.get("runs") or [{"text": block["text"]}]:
            r = paragraph.add_run(run["text"])
            r.bold = run.get("bold") or None
            r.italic = run.get("italic") or None
    elif kind in ("bullets", "numbered"):
        style = "List Bullet" if kind == "bullets" else "List Number"
        for item in block["items"]:
            document.add_paragraph(item, style=style)
    elif kind == "table":
        header = block["header"]
        table = document.add_table(rows=1, cols=len(header))
        table.style = "Light Grid Accent 1"
        for cell, text in zip(table.rows[0].cells, header, strict=True):
            cell.text = text
            for run in cell.paragraphs[0].runs:
                run.bold = True
        for row in block["rows"]:
            cells = table.add_row().cells
            for cell, value in zip(cells, row, strict=False):
                cell.text = "" if value is None else str(value)
    elif kind == "pageBreak":
        document.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
