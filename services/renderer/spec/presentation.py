"""Presentation specs to pptx with python-pptx: title, bullet, table and chart slides, speaker notes,
slide images, and a theme (its font and accent colour written into the deck's own theme, so tables and
charts follow; its heading colour on every title; its logo on title slides)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pptx import Presentation
from pptx.enum.text import PP_ALIGN
from pptx.opc.constants import RELATIONSHIP_TYPE as RT
from pptx.util import Cm, Inches, Pt

from ..fonts import office
from . import Progress, charts
from .images import Pictures

TITLE, TITLE_AND_CONTENT, TITLE_ONLY = 0, 1, 5
MARGIN = Inches(0.5)


def render(spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    deck = Presentation()
    deck.slide_width, deck.slide_height = Inches(13.333), Inches(7.5)
    deck.core_properties.title = spec.get("title") or title
    deck.core_properties.author = spec.get("author", "")
    deck.core_properties.language = spec.get("language", "")
    theme = spec.get("theme", {})
    if theme:
        _apply_theme(deck, theme)
    pictures = Pictures()
    slides = spec["slides"]
    for i, slide_spec in enumerate(slides):
        _add_slide(deck, slide_spec, theme, pictures, i)
        progress(5 + int(85 * (i + 1) / len(slides)), f"slide {i + 1} of {len(slides)}")
    office.pptx(deck)  # languages, east-Asian and complex-script fonts, right to left
    progress(95, "saving")
    deck.save(str(path))
    titles = [slide["title"][:300] for slide in slides]
    return {"kind": "presentation", "slides": len(titles), "titles": titles[:30]}


def _apply_theme(deck: Any, theme: dict[str, Any]) -> None:
    """The font and accent colour in the deck's theme part, where every placeholder, table and chart
    takes them from."""
    part = deck.slide_master.part.part_related_by(RT.THEME)
    xml = part.blob.decode("utf-8")
    if theme.get("fontFamily"):
        xml = re.sub(r'(<a:(?:major|minor)Font><a:latin typeface=")[^"]*(")',
                     lambda m: m.group(1) + theme["fontFamily"] + m.group(2), xml)
    if theme.get("accentColor"):
        xml = re.sub(r"<a:accent1>.*?</a:accent1>",
                     f'<a:accent1><a:srgbClr val="{theme["accentColor"][1:].upper()}"/></a:accent1>', xml)
    part._blob = xml.encode("utf-8")


def _title(slide: Any, text: str, theme: dict[str, Any]) -> None:
    slide.shapes.title.text = text
    if theme.get("headingColor"):
        for paragraph in slide.shapes.title.text_frame.paragraphs:
            paragraph.font.color.rgb = charts.pptx_rgb(theme["headingColor"])


def _add_slide(deck: Any, spec: dict[str, Any], theme: dict[str, Any], pictures: Pictures, index: int) -> None:
    layout = spec["layout"]
    where = f"spec.slides[{index}]"
    if layout == "title":
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE])
        _title(slide, spec["title"], theme)
        slide.placeholders[1].text = spec.get("subtitle", "")
        if "logo" in theme:
            logo = pictures.get(theme["logo"], "spec.theme.logo")
            width, height = logo.size_cm(theme["logo"].get("widthCm", 3), 10, 4)
            slide.shapes.add_picture(logo.stream(), MARGIN, MARGIN, Cm(width), Cm(height))
    elif layout == "bullets":
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE_AND_CONTENT])
        _title(slide, spec["title"], theme)
        body = slide.placeholders[1]
        # All four at once: a placeholder given only its width gets a height of 0.
        top, height = body.top, body.height
        body.left, body.top, body.width, body.height = MARGIN, top, deck.slide_width - Inches(1), height
        if "image" in spec:
            body.width = (deck.slide_width - 3 * MARGIN) // 2
            _add_image(deck, slide, pictures.get(spec["image"], f"{where}.image"), spec["image"],
                       MARGIN * 2 + body.width, body.top, body.width, body.height)
        frame = body.text_frame
        for n, bullet in enumerate(spec["bullets"]):
            text, level = (bullet, 0) if isinstance(bullet, str) else (bullet["text"], bullet.get("level", 0))
            paragraph = frame.paragraphs[0] if n == 0 else frame.add_paragraph()
            paragraph.text = text
            paragraph.level = level
    elif layout == "table":
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE_ONLY])
        _title(slide, spec["title"], theme)
        header, rows = spec["header"], spec["rows"]
        shape = slide.shapes.add_table(len(rows) + 1, len(header), Inches(0.5), Inches(1.6),
                                       deck.slide_width - Inches(1), Inches(0.4) * (len(rows) + 1))
        table = shape.table
        for c, text in enumerate(header):
            table.cell(0, c).text = text
        for r, row in enumerate(rows, start=1):
            for c in range(len(header)):
                value = row[c] if c < len(row) else None
                table.cell(r, c).text = "" if value is None else str(value)
                table.cell(r, c).text_frame.paragraphs[0].font.size = Pt(14)
    else:
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE_ONLY])
        _title(slide, spec["title"], theme)
        charts.add_pptx_chart(slide.shapes, spec["chart"], Inches(0.7), Inches(1.5), deck.slide_width - Inches(1.4),
                              Inches(5.5), theme.get("accentColor"))
    if spec.get("notes"):
        slide.notes_slide.notes_text_frame.text = spec["notes"]


def _add_image(deck: Any, slide: Any, picture: Any, spec: dict[str, Any], left: int, top: int, width: int,
               height: int) -> None:
    """The image fitted into the box (its caption under it), centred."""
    caption_height = Inches(0.5) if spec.get("caption") else 0
    w_cm, h_cm = picture.size_cm(spec.get("widthCm"), width / 360000, (height - caption_height) / 360000)
    w, h = Cm(w_cm), Cm(h_cm)
    x = left + (width - w) // 2
    slide.shapes.add_picture(picture.stream(), x, top, w, h)
    if spec.get("caption"):
        box = slide.shapes.add_textbox(left, top + h, width, caption_height)
        box.text_frame.word_wrap = True
        paragraph = box.text_frame.paragraphs[0]
        paragraph.text = spec["caption"]
        paragraph.font.size = Pt(14)
        paragraph.font.italic = True
        paragraph.alignment = PP_ALIGN.CENTER
