"""PDF specs with reportlab's platypus: the document blocks, a page size, a header and a footer with page
numbers (Page 3 of 12), a table of contents and outline, images, vector charts, links and a theme."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportlab.lib import colors, pagesizes
from reportlab.lib.enums import TA_CENTER, TA_RIGHT
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Image,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.tableofcontents import TableOfContents

from ..fonts import BASE, pdftext
from ..fonts.pdftext import Run
from . import Progress, charts
from .images import Picture, Pictures

PAGE_SIZES = {"A4": pagesizes.A4, "Letter": pagesizes.LETTER, "Legal": pagesizes.LEGAL, "A3": pagesizes.A3,
              "A5": pagesizes.A5}


DEFAULT_ACCENT = "#1F4E78"
LINK_COLOR = "#0563C1"
DEFAULT_FOOTER = {"center": "Page {page} of {pages}"}
# reportlab's standard fonts under the names office applications give them and their look-alikes.
STANDARD_FAMILIES = {
    "helvetica": ("Helvetica", "Helvetica-Bold"), "arial": ("Helvetica", "Helvetica-Bold"),
    "sans-serif": ("Helvetica", "Helvetica-Bold"), "times": ("Times-Roman", "Times-Bold"),
    "times new roman": ("Times-Roman", "Times-Bold"), "serif": ("Times-Roman", "Times-Bold"),
    "courier": ("Courier", "Courier-Bold"), "courier new": ("Courier", "Courier-Bold"),
    "monospace": ("Courier", "Courier-Bold"),
}


class _Document(SimpleDocTemplate):
    """Notes the text of what lands on the first page, for the preview; the headings, for the table of
    contents and the PDF's outline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_page_text: list[str] = []
        self._outline_level = -1
        self._headings = 0
        self.toc_levels = 3

    def beforeDocument(self) -> None:
        # A table of contents builds the document more than once: each pass starts afresh.
        self.first_page_text = []
        self._outline_level = -1
        self._headings = 0

    def afterFlowable(self, flowable: Any) -> None:
        if self.page == 1 and sum(len(t) for t in self.first_page_text) <= 600:
            self.first_page_text.extend(_plain_text(flowable))
        level = getattr(flowable, "toc_level", None)
        if level is not None:
            self._headings += 1
            key = f"h{self._headings}"
            text = flowable.getPlainText()
            self.canv.bookmarkPage(key)
            # The outline may go down one level at a time only (reportlab refuses a jump).
            self._outline_level = min(level - 1, self._outline_level + 1)
            self.canv.addOutlineEntry(text, key, self._outline_level, closed=False)
            if level <= self.toc_levels:
                self.notify("TOCEntry", (level - 1, text, self.page, key))


def _plain_text(item: Any) -> list[str]:
    """The text of a flowable: paragraphs, table cells (tuples of flowables), list items."""
    if isinstance(item, Paragraph | pdftext.BidiParagraph):
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
    theme = spec.get("theme", {})
    pictures = Pictures()
    logo = pictures.get(theme["logo"], "spec.theme.logo") if "logo" in theme else None
    doc = _Document(str(path), pagesize=size, title=doc_title, author=spec.get("author", ""),
                    lang=spec.get("language") or None,
                    leftMargin=2 * cm, rightMargin=2 * cm, topMargin=2 * cm, bottomMargin=2 * cm,
                    initialFontName=BASE)
    styles = pdftext.shape_sheet(getSampleStyleSheet())  # every script in the shipped fonts, shaped
    look = _Look(theme, styles, pictures)
    cell_style = ParagraphStyle("cell", parent=styles["BodyText"], fontSize=9, leading=11)
    story: list[Any] = []
    if doc_title and not _starts_with_heading(spec["blocks"], doc_title):
        story.append(pdftext.paragraph([Run(doc_title)], styles["Title"]))
    blocks = spec["blocks"]
    step = max(1, len(blocks) // 20)
    for i, block in enumerate(blocks):
        story.extend(_flowables(block, styles, cell_style, doc.width, look, f"spec.blocks[{i}]", doc.height))
        if i % step == 0:
            progress(5 + int(60 * i / len(blocks)), f"block {i + 1} of {len(blocks)}")
    progress(70, "laying out pages")
    furniture = _Furniture(spec.get("header") or {}, DEFAULT_FOOTER if spec.get("footer") is None else spec["footer"],
                           doc_title, logo, theme.get("logo", {}).get("widthCm", 3), look.font)
    if (toc := next((b for b in blocks if b["type"] == "toc"), None)) is not None:
        doc.toc_levels = toc.get("levels", 3)
        doc.multiBuild(story, canvasmaker=furniture.canvas_maker())
    else:
        doc.build(story, canvasmaker=furniture.canvas_maker())
    text = " ".join(" ".join(doc.first_page_text).split())
    preview: dict[str, Any] = {"kind": "pdf", "pages": doc.page,
                               "firstPageText": text[:299] + "…" if len(text) > 300 else text}
    family = theme.get("fontFamily")
    if family and _font_names(family) is None:
        preview["warnings"] = [{"code": "font_unavailable", "where": "theme.fontFamily",
                                "message": f"the renderer has no font {family!r} for PDFs: the text is in "
                                           f"{look.font.split('-')[0]}"}]
    return preview


def _starts_with_heading(blocks: list[dict[str, Any]], text: str) -> bool:
    """A spec that opens with a heading saying the title already has its title line."""
    first = next((b for b in blocks if b["type"] != "pageBreak"), None)
    return first is not None and first["type"] == "heading" and first["text"].strip() == text.strip()


class _Look:
    """The theme as reportlab takes it: fonts and colours set on the sample styles, the accent colour,
    the checked images."""

    def __init__(self, theme: dict[str, Any], styles: Any, pictures: Pictures) -> None:
        self.pictures = pictures
        self.accent = theme.get("accentColor")
        self.font, self.bold = pdftext.base_font(), pdftext.base_font(bold=True)
        family = theme.get("fontFamily")
        if family and (fonts := _font_names(family)) is not None:
            self.font, self.bold = fonts
            for style in styles.byName.values():
                if isinstance(style, ParagraphStyle):  # a sheet also holds list styles, which have no font
                    bold = "Bold" in style.fontName or style.name.startswith(("Heading", "Title"))
                    style.fontName = self.bold if bold else self.font
        if theme.get("headingColor"):
            for name in ("Title", "Heading1", "Heading2", "Heading3"):
                styles[name].textColor = colors.HexColor(theme["headingColor"])
        self.heading_color = colors.HexColor(theme["headingColor"]) if theme.get("headingColor") else None


def _font_names(family: str) -> tuple[str, str] | None:
    """The regular and bold font names reportlab knows for a family, or None (the default is kept)."""
    if family.lower() in STANDARD_FAMILIES:
        return STANDARD_FAMILIES[family.lower()]
    known = set(pdfmetrics.getRegisteredFontNames())
    for name in (family, family.replace(" ", "")):
        if name in known:
            bold = next((b for b in (f"{name}-Bold", f"{name}Bold", f"{name} Bold") if b in known), name)
            return name, bold
    return None


class _Furniture:
    """The header and footer of every page. Drawn when the document is saved, when the number of pages
    is known ({pages}); the pages are held until then (reportlab's own recipe for "Page x of y")."""

    def __init__(self, header: dict[str, Any], footer: dict[str, Any], title: str, logo: Picture | None,
                 logo_width_cm: float, font: str) -> None:
        self.header, self.footer, self.title, self.logo, self.font = header, footer, title, logo, font
        self.logo_size = logo.size_cm(logo_width_cm, 10, 1.3) if logo is not None else (0.0, 0.0)

    def _text(self, template: str, page: int, pages: int) -> str:
        return template.replace("{page}", str(page)).replace("{pages}", str(pages)).replace("{title}", self.title)

    def draw(self, canvas: Any, page: int, pages: int) -> None:
        width, height = canvas._pagesize
        canvas.saveState()
        canvas.setFont(self.font, 9)
        canvas.setFillColor(colors.grey)
        left = 2 * cm
        if self.logo is not None:
            w, h = self.logo_size
            canvas.drawImage(_reader(self.logo), left, height - 0.6 * cm - h * cm, w * cm, h * cm, mask="auto")
            left += w * cm + 0.3 * cm
        for slots, y in ((self.header, height - 1.3 * cm), (self.footer, 1 * cm)):
            # Any script: each piece in a shipped face that draws it (fonts/pdftext.py).
            if slots.get("left"):
                pdftext.draw_line(canvas, left if slots is self.header else 2 * cm, y,
                                  self._text(slots["left"], page, pages), self.font, 9)
            if slots.get("center"):
                pdftext.draw_line(canvas, width / 2, y, self._text(slots["center"], page, pages), self.font, 9,
                                  "center")
            if slots.get("right"):
                pdftext.draw_line(canvas, width - 2 * cm, y, self._text(slots["right"], page, pages), self.font, 9,
                                  "right")
        canvas.restoreState()

    def canvas_maker(self) -> type[Canvas]:
        furniture = self

        class FurnitureCanvas(Canvas):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._held: list[dict[str, Any]] = []
                pdftext.prepare(self)  # draws the emoji of the paragraphs

            def showPage(self) -> None:
                self._held.append(dict(self.__dict__))
                self._startPage()  # type: ignore[attr-defined]  # Canvas's own, missing from its stubs

            def save(self) -> None:
                pages = len(self._held)
                for state in self._held:
                    self.__dict__.update(state)
                    furniture.draw(self, self.getPageNumber(), pages)
                    super().showPage()
                super().save()

        return FurnitureCanvas


class _Contents(TableOfContents):
    """A table of contents whose entries are drawn like the headings they list (any script, shaped, right
    to left where it is), the page number beside each, linked to the heading. reportlab's own puts the
    dots and number in an onDraw callback inside the entry, which its shaping cannot lay out."""

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:
        entries = self._lastEntries or [(0, "", 0, None)]  # type: ignore[attr-defined]  # reportlab's own
        number_width = 1.2 * cm
        rows = []
        for level, text, page, key in entries:
            style = self.getLevelStyle(level)
            number_style = ParagraphStyle("tocPage", parent=style, alignment=TA_RIGHT, leftIndent=0)
            number = f'<a href="#{key}">{page}</a>' if key else str(page)
            rows.append([pdftext.paragraph([Run(text)], style), Paragraph(number if page else "", number_style)])
        self._table = Table(rows, colWidths=(availWidth - number_width, number_width),
                            style=[("VALIGN", (0, 0), (-1, -1), "BOTTOM"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                   ("RIGHTPADDING", (0, 0), (-1, -1), 0)])
        self.width, self.height = self._table.wrapOn(self.canv, availWidth, availHeight)
        return self.width, self.height


def _reader(picture: Picture) -> Any:
    from reportlab.lib.utils import ImageReader
    return ImageReader(picture.stream())


def _runs(block: dict[str, Any], look: _Look | None = None) -> list[Run]:
    color = (look.accent if look else None) or LINK_COLOR
    return [Run(run["text"], bool(run.get("bold")), bool(run.get("italic")), run.get("link", ""), color)
            for run in block.get("runs") or [{"text": block["text"]}]]


def _flowables(block: dict[str, Any], styles: Any, cell_style: Any, width: float, look: _Look,
               where: str, height: float) -> list[Any]:
    kind = block["type"]
    if kind == "heading":
        heading = pdftext.paragraph([Run(block["text"])], styles[f"Heading{block.get('level', 1)}"])
        heading.toc_level = block.get("level", 1)  # type: ignore[attr-defined]  # read by _Document
        return [heading]
    if kind == "paragraph":
        return [pdftext.paragraph(_runs(block, look), styles["BodyText"])]
    if kind in ("bullets", "numbered"):
        items = [ListItem(pdftext.paragraph([Run(t)], styles["BodyText"])) for t in block["items"]]
        bullet, start = ("bullet", "•") if kind == "bullets" else ("1", None)
        # reportlab takes ListItems; its stubs take flowables only, and a ListItem is none.
        return [ListFlowable(items, bulletType=bullet, start=start, leftIndent=14,  # type: ignore[arg-type]
                             bulletFontName=look.font)]
    if kind == "table":
        header_style = ParagraphStyle("header", parent=cell_style, textColor=colors.white)
        header = [pdftext.paragraph([Run(h, bold=True)], header_style) for h in block["header"]]
        rows: list[list[Any]] = [
            [pdftext.paragraph([Run("" if v is None else str(v))], cell_style) for v in row] for row in block["rows"]]
        n = len(block["header"])
        rows = [r + [""] * (n - len(r)) for r in rows]
        # splitInRow: a row taller than a page (2,000 characters in a narrow column) goes on over the page
        # break; without it such a row failed the whole document (LayoutError).
        table = Table([header, *rows], colWidths=[width / n] * n, repeatRows=1, splitInRow=1)
        table.setStyle(TableStyle([
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor(look.accent or DEFAULT_ACCENT)),
            ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
            ("FONTNAME", (0, 0), (-1, -1), look.font),  # reportlab's default, Helvetica, would be named unused
            ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#9BB7D4")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#EEF3F8")]),
        ]))
        return [table, Spacer(1, 8)]
    if kind == "pageBreak":
        return [PageBreak()]
    if kind == "image":
        picture = look.pictures.get(block, where)
        w, h = picture.size_cm(block.get("widthCm"), width / cm, height / cm * 0.85)
        image = Image(picture.stream(), width=w * cm, height=h * cm, hAlign="CENTER")
        if not block.get("caption"):
            return [image, Spacer(1, 6)]
        caption_style = ParagraphStyle("caption", parent=styles["Italic"], fontSize=9, alignment=TA_CENTER)
        return [KeepTogether([image, pdftext.paragraph([Run(block["caption"])], caption_style)]), Spacer(1, 6)]
    if kind == "chart":
        w = min(block.get("widthCm", width / cm) * cm, width)
        drawing = charts.pdf_drawing(block["chart"], w, min(w * 0.6, height * 0.8), look.accent, look.font,
                                     look.heading_color)
        drawing.hAlign = "CENTER"
        return [drawing, Spacer(1, 8)]
    if kind == "toc":
        toc = _Contents()
        toc.levelStyles = [
            pdftext.shaped(ParagraphStyle(f"toc{n}", parent=styles["BodyText"], leftIndent=14 * n, firstLineIndent=0,
                                          fontName=look.bold if n == 0 else look.font)) for n in range(3)]
        out: list[Any] = []
        if block.get("title", "Contents"):
            out.append(pdftext.paragraph([Run(block.get("title", "Contents"))], styles["Heading2"]))
        return [*out, toc, Spacer(1, 8)]
    raise ValueError(kind)
