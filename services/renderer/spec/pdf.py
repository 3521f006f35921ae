"""PDF specs with reportlab's platypus: the document blocks, a page size, page numbers in the footer."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors, pagesizes
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from . import Progress

PAGE_SIZES = {"A4": pagesizes.A4, "Letter": pagesizes.LETTER, "Legal": pagesizes.LEGAL, "A3": pagesizes.A3,
              "A5": pagesizes.A5}


class _Document(SimpleDocTemplate):
    """Notes the text of what lands on the first page, for the preview."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_page_text: list[str] = []

    def afterFlowable(self, flowable: Any) -> None:
        if self.page == 1 and sum(len(t) for t in self.first_page_text) <= 600:
            self.first_page_text.extend(_plain_text(flowable))


def _plain_text(item: Any) -> list[str]:
    """The text of a flowable: paragraphs, table cells (tuples of flowables), list items."""
    if isinstance(item, Paragraph):
        return [item.getPlainText()]
    if isinstance(item, Table):
        # The stubs leave out the table's private cell list, which reportlab has had for decades.
        cells = item._cellvalues  # type: ignore[attr-defined]
        return [t for row in cells for cell in row for t in _plain_text(cell)]
    if isinstance(item, list | tuple):
        return [t for sub in item for t in _plain_text(sub)]
    inner = getattr(item, "_flowables", None)  # ListFlowable, ListItem
    return _plain_text(inner) if inner is not None else []


def render(spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    size = PAGE_SIZES[spec.get("pageSize", "A4")]
    if spec.get("orientation") == "landscape":
        size = pagesizes.landscape(size)
    doc_title = spec.get("title") or title
    doc = _Document(str(path), pagesize=size, title=doc_title, author=spec.get("author", ""),
                            leftMargin=2 * cm, rightMargin=2 * cm, topMargin=2 * cm, bottomMargin=2 * cm)
    styles = getSampleStyleSheet()
    cell_style = ParagraphStyle("cell", parent=styles["BodyText"], fontSize=9, leading=11)
    story: list[Any] = []
    if doc_title and not _starts_with_heading(spec["blocks"], doc_title):
        story.append(Paragraph(escape(doc_title), styles["Title"]))
    blocks = spec["blocks"]
    step = max(1, len(blocks) // 20)
    for i, block in enumerate(blocks):
        story.extend(_flowables(block, styles, cell_style, doc.width))
        if i % step == 0:
            progress(5 + int(60 * i / len(blocks)), f"block {i + 1} of {len(blocks)}")
    progress(70, "laying out pages")
    doc.build(story, onFirstPage=_footer, onLaterPages=_footer)
    text = " ".join(" ".join(doc.first_page_text).split())
    return {"kind": "pdf", "pages": doc.page, "firstPageText": text[:299] + "…" if len(text) > 300 else text}


def _starts_with_heading(blocks: list[dict[str, Any]], text: str) -> bool:
    """A spec that opens with a heading saying the title already has its title line."""
    first = next((b for b in blocks if b["type"] != "pageBreak"), None)
    return first is not None and first["type"] == "heading" and first["text"].strip() == text.strip()


def _footer(canvas: Any, doc: Any) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 9)
    canvas.setFillColor(colors.grey)
    canvas.drawCentredString(doc.pagesize[0] / 2, 1 * cm, f"Page {doc.page}")
    canvas.restoreState()


def _runs(block: dict[str, Any]) -> str:
    parts = []
    for run in block.get("runs") or [{"text": block["text"]}]:
        text = escape(run["text"]).replace("\n", " <br/>")
        if run.get("bold"):
            text = f"<b>{text}</b>"
        if run.get("italic"):
            text = f"<i>{text}</i>"
        parts.append(text)
    return "".join(parts)


def _flowables(block: dict[str, Any], styles: Any, cell_style: Any, width: float) -> list[Any]:
    kind = block["type"]
    if kind == "heading":
        return [Paragraph(escape(block["text"]), styles[f"Heading{block.get('level', 1)}"])]
    if kind == "paragraph":
        return [Paragraph(_runs(block), styles["BodyText"])]
    if kind in ("bullets", "numbered"):
        items = [ListItem(Paragraph(escape(t), styles["BodyText"])) for t in block["items"]]
        bullet, start = ("bullet", "•") if kind == "bullets" else ("1", None)
        # reportlab takes ListItems; its stubs take flowables only, and a ListItem is none.
        return [ListFlowable(items, bulletType=bullet, start=start, leftIndent=14)]  # type: ignore[arg-type]
    if kind == "table":
        header_style = ParagraphStyle("header", parent=cell_style, textColor=colors.white)
        header = [Paragraph(f"<b>{escape(h)}</b>", header_style) for h in block["header"]]
        rows: list[list[Paragraph | str]] = [
            [Paragraph(escape("" if v is None else str(v)), cell_style) for v in row] for row in block["rows"]]
        n = len(block["header"])
        rows = [r + [""] * (n - len(r)) for r in rows]
        table = Table([header, *rows], colWidths=[width / n] * n, repeatRows=1)
        table.setStyle(TableStyle([
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#1F4E78")),
            ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
            ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#9BB7D4")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#EEF3F8")]),
        ]))
        return [table, Spacer(1, 8)]
    if kind == "pageBreak":
        return [PageBreak()]
    raise ValueError(kind)
