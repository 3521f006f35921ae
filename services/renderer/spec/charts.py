"""Charts of the four kinds (bar, column, line, pie) in the formats that draw them from a spec's data:
native chart parts in pptx and docx, vector graphics in pdf. Spreadsheets chart their own cells
(spreadsheet.py).

python-docx has no chart API, and a docx chart part is the same DrawingML chart a pptx holds: the docx
chart is made by python-pptx in a scratch deck and its part (chart XML and embedded workbook, so Word's
"Edit Data" works) moved into the document.
"""

from __future__ import annotations

import re
from typing import Any

from pptx import Presentation
from pptx.chart.data import CategoryChartData
from pptx.dml.color import RGBColor
from pptx.enum.chart import XL_CHART_TYPE, XL_LEGEND_POSITION
from pptx.util import Emu, Pt

PPTX_TYPES = {
    "bar": XL_CHART_TYPE.BAR_CLUSTERED, "column": XL_CHART_TYPE.COLUMN_CLUSTERED,
    "line": XL_CHART_TYPE.LINE_MARKERS, "pie": XL_CHART_TYPE.PIE,
}
# Series after the first (which takes the theme's accent colour) in pdf, where no office theme picks them.
PALETTE = ["#4472C4", "#ED7D31", "#A5A5A5", "#FFC000", "#5B9BD5", "#70AD47", "#264478", "#9E480E", "#636363",
           "#997300"]
C_NS = "http://schemas.openxmlformats.org/drawingml/2006/chart"
EXTERNAL_DATA = re.compile(rb'(<c:externalData r:id=")[^"]*(")')


def _data(spec: dict[str, Any]) -> CategoryChartData:
    data = CategoryChartData()
    data.categories = [str(c) if isinstance(c, str) else c for c in spec["categories"]]
    n = len(spec["categories"])
    for series in spec["series"]:
        values = list(series["values"][:n]) + [None] * (n - len(series["values"]))
        data.add_series(series["name"], values)
    return data


def pptx_rgb(color: str) -> RGBColor:
    """#RRGGBB as python-pptx takes a colour."""
    make: Any = RGBColor  # its constructor is untyped in python-pptx
    return make(*bytes.fromhex(color[1:]))  # type: ignore[no-any-return]


def add_pptx_chart(shapes: Any, spec: dict[str, Any], x: int, y: int, cx: int, cy: int, accent: str | None,
                   font_family: str | None = None, font_pt: float | None = None) -> Any:
    """A native chart on a slide (or the scratch slide a docx chart is made on); its graphic frame."""
    graphic = shapes.add_chart(PPTX_TYPES[spec["type"]], x, y, cx, cy, _data(spec))
    chart = graphic.chart
    chart.has_legend = len(spec["series"]) > 1 or spec["type"] == "pie"
    if chart.has_legend:
        chart.legend.position = XL_LEGEND_POSITION.BOTTOM
        chart.legend.include_in_layout = False
    if spec.get("title"):
        chart.has_title = True
        chart.chart_title.text_frame.text = spec["title"]
    else:
        chart.has_title = False
    if font_pt is not None:
        chart.font.size = Pt(font_pt)
    if font_family:
        chart.font.name = font_family
    # A pie's slices are told apart by colour: one accent for all of them would hide the data.
    if accent and spec["type"] != "pie":
        series = chart.plots[0].series[0]
        if spec["type"] == "line":
            series.format.line.color.rgb = pptx_rgb(accent)
            series.marker.format.fill.solid()
            series.marker.format.fill.fore_color.rgb = pptx_rgb(accent)
        else:
            series.format.fill.solid()
            series.format.fill.fore_color.rgb = pptx_rgb(accent)
    return graphic


def docx_chart_parts(spec: dict[str, Any], width_emu: int, height_emu: int, accent: str | None,
                     font_family: str | None) -> tuple[bytes, bytes]:
    """The chart part's XML (its externalData still naming the scratch deck's relationship) and its
    embedded workbook, for a document to take."""
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    graphic = add_pptx_chart(slide.shapes, spec, 0, 0, Emu(width_emu), Emu(height_emu), accent, font_family, 10)
    part = graphic.chart_part
    return part.blob, part.chart_workbook.xlsx_part.blob


def set_external_data(chart_xml: bytes, rel_id: str) -> bytes:
    """The chart part's XML with its embedded workbook under the document's own relationship id (the
    XML is python-pptx's own serialization, one externalData element)."""
    return EXTERNAL_DATA.sub(lambda m: m.group(1) + rel_id.encode() + m.group(2), chart_xml, count=1)


def pdf_drawing(spec: dict[str, Any], width: float, height: float, accent: str | None, font: str,
                text_color: Any = None) -> Any:
    """The chart as reportlab vector graphics, a flowable whose text is drawn in any script."""
    from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
    from reportlab.graphics.charts.legends import Legend
    from reportlab.graphics.charts.linecharts import HorizontalLineChart
    from reportlab.graphics.charts.piecharts import Pie
    from reportlab.graphics.shapes import Drawing, String
    from reportlab.graphics.widgets.markers import Marker
    from reportlab.lib import colors

    kind = spec["type"]
    n = len(spec["categories"])
    names = [str(c) for c in spec["categories"]]
    rows = [[v if v is not None else 0 for v in (list(s["values"][:n]) + [None] * (n - len(s["values"])))]
            for s in spec["series"]]
    fills = [colors.HexColor(c) for c in ([accent] if accent else []) + PALETTE]
    drawing = Drawing(width, height)
    top = height
    if spec.get("title"):
        top -= 18
        drawing.add(String(width / 2, top + 4, spec["title"], fontName=font, fontSize=11, textAnchor="middle",
                           fillColor=text_color or colors.black))
    legend_items = ([(fills[i % len(fills)], names[i]) for i in range(n)] if kind == "pie" else
                    [(fills[i % len(fills)], s["name"]) for i, s in enumerate(spec["series"])])
    show_legend = kind == "pie" or len(spec["series"]) > 1
    legend_rows = min(3, (len(legend_items) + 5) // 6)  # up to six items a row, twelve shown
    bottom = 4.0 + (14 * legend_rows + 6 if show_legend else 0)
    if kind == "pie":
        pie: Any = Pie()  # the stubs say int for what reportlab takes as any number
        size = min(width - 40, top - bottom - 10)
        pie.x, pie.y, pie.width, pie.height = (width - size) / 2, bottom + 5, size, size
        pie.data = [max(0.0, float(v)) for v in rows[0]] if any(v for v in rows[0]) else [1.0] * n
        pie.labels = None
        for i in range(n):
            pie.slices[i].fillColor = fills[i % len(fills)]
            pie.slices[i].strokeColor = colors.white
        drawing.add(pie)
    else:
        chart: Any
        if kind == "column":
            chart = VerticalBarChart()
        elif kind == "bar":
            chart = HorizontalBarChart()
        else:
            chart = HorizontalLineChart()
        left = 50.0 if kind != "bar" else min(120.0, 10 + 5 * max(len(x) for x in names))
        chart.x, chart.y = left, bottom + 20
        chart.width, chart.height = width - left - 15, top - bottom - 30
        chart.data = [tuple(float(v) for v in row) for row in rows]
        chart.categoryAxis.categoryNames = names
        for axis in (chart.categoryAxis, chart.valueAxis):
            axis.labels.fontName = font
            axis.labels.fontSize = 8
        lowest = min(min(row) for row in chart.data)
        if lowest >= 0:
            chart.valueAxis.valueMin = 0
        if kind == "line":
            for i in range(len(rows)):
                chart.lines[i].strokeColor = fills[i % len(fills)]
                chart.lines[i].strokeWidth = 2
                chart.lines[i].symbol = Marker(kind="FilledCircle", size=5)
                chart.lines[i].symbol.fillColor = fills[i % len(fills)]
        else:
            if kind == "column" and n > 6:
                chart.categoryAxis.labels.angle = 30
                chart.categoryAxis.labels.boxAnchor = "ne"
            for i in range(len(rows)):
                chart.bars[i].fillColor = fills[i % len(fills)]
                chart.bars[i].strokeColor = None
        drawing.add(chart)
    if show_legend:
        legend: Any = Legend()
        legend.x, legend.y = 10, 4
        legend.alignment = "right"
        legend.fontName, legend.fontSize = font, 8
        legend.deltax = max(50, min((width - 20) / 6, 14 + 4.5 * max(len(name) for _, name in legend_items)))
        legend.colorNamePairs = legend_items[:12]
        legend.dxTextSpace = 4
        legend.boxAnchor = "sw"
        legend.columnMaximum = legend_rows
        drawing.add(legend)
    return _chart_flowable(drawing)


def _chart_flowable(drawing: Any) -> Any:
    """The drawing as a flowable whose every string (title, axis labels, legend) is drawn like a page
    header's: each piece in a shipped face that has its characters, shaped, right to left in visual
    order. reportlab's own renderer draws a string in one font, where Cyrillic or Chinese labels in a
    standard font would come out as boxes."""
    from reportlab.graphics.renderPDF import _PDFRenderer
    from reportlab.platypus import Flowable

    from ..fonts import pdftext

    class ScriptRenderer(_PDFRenderer):
        def drawString(self, stringObj: Any) -> None:
            this: Any = self  # the renderer's state, which its stubs leave out
            state = this._tracker.getState()
            anchor = {"middle": "center", "end": "right"}.get(state["textAnchor"], "left")
            pdftext.draw_line(this._canvas, stringObj.x, stringObj.y, stringObj.text, state["fontName"],
                              state["fontSize"], anchor)

    class Chart(Flowable):
        def __init__(self) -> None:
            super().__init__()
            self.width, self.height = drawing.width, drawing.height

        def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
            return self.width, self.height

        def draw(self) -> None:
            ScriptRenderer().draw(drawing, self.canv, 0, 0)

    return Chart()
