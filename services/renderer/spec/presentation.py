"""Presentation specs to pptx with python-pptx: title, bullet, table and chart slides, speaker notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pptx import Presentation
from pptx.chart.data import CategoryChartData
from pptx.enum.chart import XL_CHART_TYPE, XL_LEGEND_POSITION
from pptx.util import Inches, Pt

from . import Progress

TITLE, TITLE_AND_CONTENT, TITLE_ONLY = 0, 1, 5
CHART_TYPES = {
    "bar": XL_CHART_TYPE.BAR_CLUSTERED, "column": XL_CHART_TYPE.COLUMN_CLUSTERED,
    "line": XL_CHART_TYPE.LINE_MARKERS, "pie": XL_CHART_TYPE.PIE,
}


def render(spec: dict[str, Any], title: str, path: Path, progress: Progress) -> dict[str, Any]:
    deck = Presentation()
    deck.slide_width, deck.slide_height = Inches(13.333), Inches(7.5)
    deck.core_properties.title = title
    slides = spec["slides"]
    for i, slide_spec in enumerate(slides):
        _add_slide(deck, slide_spec)
        progress(5 + int(85 * (i + 1) / len(slides)), f"slide {i + 1} of {len(slides)}")
    progress(95, "saving")
    deck.save(str(path))
    titles = [slide["title"][:300] for slide in slides]
    return {"kind": "presentation", "slides": len(titles), "titles": titles[:30]}


def _add_slide(deck: Any, spec: dict[str, Any]) -> None:
    layout = spec["layout"]
    if layout == "title":
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE])
        slide.shapes.title.text = spec["title"]
        slide.placeholders[1].text = spec.get("subtitle", "")
    elif layout == "bullets":
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE_AND_CONTENT])
        slide.shapes.title.text = spec["title"]
        body = slide.placeholders[1]
        body.width = deck.slide_width - Inches(1)
        frame = body.text_frame
        for n, bullet in enumerate(spec["bullets"]):
            text, level = (bullet, 0) if isinstance(bullet, str) else (bullet["text"], bullet.get("level", 0))
            paragraph = frame.paragraphs[0] if n == 0 else frame.add_paragraph()
            paragraph.text = text
            paragraph.level = level
    elif layout == "table":
        slide = deck.slides.add_slide(deck.slide_layouts[TITLE_ONLY])
        slide.shapes.title.text = spec["title"]
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
        slide.shapes.title.text = spec["title"]
        chart_spec = spec["chart"]
        data = CategoryChartData()
        data.categories = chart_spec["categories"]
        for series in chart_spec["series"]:
            data.add_series(series["name"], series["values"])
        graphic = slide.shapes.add_chart(CHART_TYPES[chart_spec["type"]], Inches(0.7), Inches(1.5),
                                         deck.slide_width - Inches(1.4), Inches(5.5), data)
        chart = graphic.chart
        chart.has_legend = len(chart_spec["series"]) > 1 or chart_spec["type"] == "pie"
        if chart.has_legend:
            chart.legend.position = XL_LEGEND_POSITION.BOTTOM
            chart.legend.include_in_layout = False
    if spec.get("notes"):
        slide.notes_slide.notes_text_frame.text = spec["notes"]
