"""Document specs to docx with python-docx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docx import Document
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_BREAK
from docx.shared import Cm

from ..fonts import office
from . import Progress, docx_parts
from .images import Pictures


def render(spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    document = Document()
    doc_title = spec.get("title") or title
    document.core_properties.title = doc_title
    document.core_properties.author = spec.get("author", "")
    document.core_properties.language = spec.get("language", "")
    theme = spec.get("theme", {})
    pictures = Pictures()
    if theme:
        docx_parts.apply_theme(document, theme)
    logo = pictures.get(theme["logo"], "spec.theme.logo") if "logo" in theme else None
    docx_parts.set_furniture(document.sections[0], spec.get("header"), spec.get("footer"), doc_title, logo,
                             theme.get("logo", {}).get("widthCm", 3))
    from .pdf import _starts_with_heading

    if doc_title and not _starts_with_heading(spec["blocks"], doc_title):
        document.add_heading(doc_title, level=0)
    blocks = spec["blocks"]
    context = _Context(document, spec, pictures)
    step = max(1, len(blocks) // 20)
    for i, block in enumerate(blocks):
        _add_block(document, block, context, i)
        if i % step == 0:
            progress(5 + int(85 * i / len(blocks)), f"block {i + 1} of {len(blocks)}")
    office.docx(document)  # languages, east-Asian and complex-script fonts, right to left
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


class _Context:
    """What blocks need beyond themselves: the theme, the checked images, the headings (for a table of
    contents), the width of the text."""

    def __init__(self, document: Any, spec: dict[str, Any], pictures: Pictures) -> None:
        theme = spec.get("theme", {})
        self.accent: str | None = theme.get("accentColor")
        self.font: str | None = theme.get("fontFamily")
        self.pictures = pictures
        self.headings = [(b.get("level", 1), b["text"]) for b in spec["blocks"] if b["type"] == "heading"]
        section = document.sections[0]
        self.text_width_cm = (section.page_width - section.left_margin - section.right_margin) / 360000
        self.charts = 0


def _add_block(document: Any, block: dict[str, Any], context: _Context, index: int) -> None:
    kind = block["type"]
    where = f"spec.blocks[{index}]"
    if kind == "heading":
        document.add_heading(block["text"], level=block.get("level", 1))
    elif kind == "paragraph":
        paragraph = document.add_paragraph()
        for run in block.get("runs") or [{"text": block["text"]}]:
            if run.get("link"):
                docx_parts.add_hyperlink(paragraph, run["text"], run["link"], bool(run.get("bold")),
                                         bool(run.get("italic")), context.accent or docx_parts.LINK_COLOR)
                continue
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
        if context.accent:
            docx_parts.shade_header_row(table, context.accent)
    elif kind == "image":
        picture = context.pictures.get(block, where)
        width, height = picture.size_cm(block.get("widthCm"), context.text_width_cm, 22.0)
        document.add_picture(docx_parts.picture_stream(picture), width=Cm(width), height=Cm(height))
        document.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER
        if block.get("caption"):
            document.add_paragraph(block["caption"], style="Caption").alignment = WD_ALIGN_PARAGRAPH.CENTER
    elif kind == "chart":
        context.charts += 1
        width = min(block.get("widthCm", context.text_width_cm), context.text_width_cm)
        docx_parts.add_chart(document, block["chart"], width, context.accent, context.font, context.charts)
    elif kind == "toc":
        docx_parts.add_toc(document, block.get("title", "Contents"), block.get("levels", 3), context.headings)
    elif kind == "pageBreak":
        document.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
