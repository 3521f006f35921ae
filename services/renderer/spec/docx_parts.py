"""What python-docx has no API for, written as WordprocessingML: page fields (PAGE, NUMPAGES) in headers
and footers, a table of contents field, external hyperlinks, native chart parts; and a spec's theme
applied to the document's styles. Used by document.py."""

from __future__ import annotations

import re
from typing import Any

from docx.enum.style import WD_STYLE_TYPE
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_TAB_ALIGNMENT
from docx.image.exceptions import UnrecognizedImageError
from docx.image.image import Image as DocxImage
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.opc.packuri import PackURI
from docx.opc.part import Part
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm, Emu, Pt, RGBColor

from . import charts
from .images import Picture

PLACEHOLDER = re.compile(r"\{(page|pages|title)\}")
FIELDS = {"page": "PAGE", "pages": "NUMPAGES"}
LINK_COLOR = "#0563C1"  # Word's own colour for a hyperlink
CHART_CT = "application/vnd.openxmlformats-officedocument.drawingml.chart+xml"
XLSX_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DEFAULT_FOOTER = {"center": "Page {page} of {pages}"}
SETTINGS_AFTER_UPDATE_FIELDS = frozenset({
    "hdrShapeDefaults", "footnotePr", "endnotePr", "compat", "docVars", "rsids", "mathPr", "attachedSchema",
    "themeFontLang", "clrSchemeMapping", "doNotIncludeSubdocsInStats", "doNotAutoCompressPictures", "forceUpgrade",
    "captions", "readModeInkLockDown", "smartTagType", "schemaLibrary", "shapeDefaults", "doNotEmbedSmartTags",
    "decimalSymbol", "listSeparator"})


def etree_local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def picture_stream(picture: Picture) -> Any:
    """The image's bytes for python-docx, which parses the file itself and knows only JPEGs with a JFIF
    or Exif header (a CMYK JPEG from Photoshop has neither): any other goes in as PNG."""
    try:
        DocxImage.from_blob(picture.data)
    except UnrecognizedImageError:
        return picture.as_png().stream()
    return picture.stream()


def _run(text: str) -> Any:
    run = OxmlElement("w:r")
    t = OxmlElement("w:t")
    t.set(qn("xml:space"), "preserve")
    t.text = text
    run.append(t)
    return run


def _field_char(kind: str) -> Any:
    """A run marking where a complex field begins, its instruction ends (separate) or it ends. A field
    begun dirty is recomputed by Word when the document opens."""
    run = OxmlElement("w:r")
    char = OxmlElement("w:fldChar")
    char.set(qn("w:fldCharType"), kind)
    if kind == "begin":
        char.set(qn("w:dirty"), "true")
    run.append(char)
    return run


def _instruction(text: str) -> Any:
    run = OxmlElement("w:r")
    instr = OxmlElement("w:instrText")
    instr.set(qn("xml:space"), "preserve")
    instr.text = f" {text} "
    run.append(instr)
    return run


def _field(paragraph: Any, instruction: str, shown: str) -> None:
    """A complex field whose cached result is `shown`: Word and LibreOffice compute the real one."""
    for run in (_field_char("begin"), _instruction(instruction), _field_char("separate"), _run(shown),
                _field_char("end")):
        paragraph._p.append(run)


def _fill_slot(paragraph: Any, template: str, title: str) -> None:
    pos = 0
    for match in PLACEHOLDER.finditer(template):
        if match.start() > pos:
            paragraph._p.append(_run(template[pos:match.start()]))
        name = match.group(1)
        if name == "title":
            paragraph._p.append(_run(title))
        else:
            _field(paragraph, FIELDS[name], "1")
        pos = match.end()
    if pos < len(template):
        paragraph._p.append(_run(template[pos:]))


def _tab(paragraph: Any) -> None:
    run = OxmlElement("w:r")
    run.append(OxmlElement("w:tab"))
    paragraph._p.append(run)


def set_furniture(section: Any, header: dict[str, Any] | None, footer: dict[str, Any] | None, title: str,
                  logo: Picture | None, logo_width_cm: float) -> None:
    """The section's header and footer: left, centre and right text on tab stops, the logo first in
    the header."""
    text_width = section.page_width - section.left_margin - section.right_margin
    for part, slots in ((section.header, header or {}), (section.footer, DEFAULT_FOOTER if footer is None else footer)):
        with_logo = part is section.header and logo is not None
        if not any(slots.values()) and not with_logo:
            continue
        part.is_linked_to_previous = False
        paragraph = part.paragraphs[0]
        paragraph.style.paragraph_format.tab_stops.clear_all()  # the template's are for another page width
        # Only the stops in use: a long left text past an unused centre stop would send the right text
        # to a second line.
        stops = paragraph.paragraph_format.tab_stops
        if slots.get("center"):
            stops.add_tab_stop(Emu(text_width // 2), WD_TAB_ALIGNMENT.CENTER)
        if slots.get("right"):
            stops.add_tab_stop(Emu(text_width), WD_TAB_ALIGNMENT.RIGHT)
        if with_logo:
            assert logo is not None
            width, height = logo.size_cm(logo_width_cm, text_width / 360000, 3.0)
            paragraph.add_run().add_picture(picture_stream(logo), width=Cm(width), height=Cm(height))
            if slots.get("left"):
                paragraph.add_run("  ")
        for key in ("left", "center", "right"):
            if slots.get(key):
                if key != "left":
                    _tab(paragraph)
                _fill_slot(paragraph, slots[key], title)


def add_hyperlink(paragraph: Any, text: str, url: str, bold: bool, italic: bool, color: str) -> Any:
    """An external hyperlink around one run; the run, to style further."""
    rel_id = paragraph.part.relate_to(url, RT.HYPERLINK, is_external=True)
    link = OxmlElement("w:hyperlink")
    link.set(qn("r:id"), rel_id)
    paragraph._p.append(link)
    run = paragraph.add_run(text)
    link.append(run._r)  # moved from the paragraph into the link
    run.bold = bold or None
    run.italic = italic or None
    run.underline = True
    run.font.color.rgb = RGBColor.from_string(color[1:])
    return run


def _toc_style(document: Any, level: int) -> str:
    name = f"TOC {level}"
    if name not in [s.name for s in document.styles]:
        style = document.styles.add_style(name, WD_STYLE_TYPE.PARAGRAPH)
        style.base_style = document.styles["Normal"]
        style.paragraph_format.left_indent = Cm(0.6 * (level - 1))
        style.paragraph_format.space_after = Pt(2)
    return name


def add_toc(document: Any, title: str, levels: int, headings: list[tuple[int, str]]) -> None:
    """A table of contents field (Word fills in the page numbers when the file opens: updateFields).
    Its cached entries are the headings, so a reader that does not compute fields still lists them."""
    if title:
        heading = document.add_paragraph(title, style="TOC Heading")
        heading.paragraph_format.keep_with_next = True
    entries = [(level, text) for level, text in headings if level <= levels] or [(1, "")]
    for n, (level, text) in enumerate(entries):
        paragraph = document.add_paragraph(style=_toc_style(document, level))
        if n == 0:
            paragraph._p.extend([_field_char("begin"), _instruction(f'TOC \\o "1-{levels}" \\h \\z \\u'),
                                 _field_char("separate")])
        paragraph._p.append(_run(text))
        if n == len(entries) - 1:
            paragraph._p.append(_field_char("end"))
    settings = document.settings.element
    if settings.find(qn("w:updateFields")) is None:
        update = OxmlElement("w:updateFields")
        update.set(qn("w:val"), "true")
        # Word holds settings.xml to the schema's order: updateFields comes before these.
        later = next((child for child in settings if etree_local(child.tag) in SETTINGS_AFTER_UPDATE_FIELDS), None)
        if later is None:
            settings.append(update)
        else:
            later.addprevious(update)


def add_chart(document: Any, spec: dict[str, Any], width_cm: float, accent: str | None,
              font_family: str | None, index: int) -> None:
    """A native chart part (with its embedded workbook) shown inline in its own paragraph."""
    width, height = Cm(width_cm), Cm(width_cm * 0.6)
    chart_xml, workbook = charts.docx_chart_parts(spec, width, height, accent, font_family)
    package = document.part.package
    chart_part = Part(PackURI(f"/word/charts/chart{index}.xml"), CHART_CT, b"", package)
    workbook_part = Part(PackURI(f"/word/embeddings/Microsoft_Excel_Sheet{index}.xlsx"), XLSX_CT, workbook, package)
    workbook_rel = chart_part.relate_to(workbook_part, RT.PACKAGE)
    chart_part._blob = charts.set_external_data(chart_xml, workbook_rel)
    chart_rel = document.part.relate_to(chart_part, RT.CHART)
    paragraph = document.add_paragraph()
    paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
    run = paragraph.add_run()
    inline = OxmlElement("wp:inline")
    for key in ("distT", "distB", "distL", "distR"):
        inline.set(key, "0")
    extent = OxmlElement("wp:extent")
    extent.set("cx", str(int(width)))
    extent.set("cy", str(int(height)))
    doc_pr = OxmlElement("wp:docPr")
    doc_pr.set("id", str(document.part.next_id))  # unique among the drawings, as Word requires
    doc_pr.set("name", f"Chart {index}")
    graphic = OxmlElement("a:graphic")
    data = OxmlElement("a:graphicData")
    data.set("uri", charts.C_NS)
    chart_ref = OxmlElement("c:chart")
    chart_ref.set(qn("r:id"), chart_rel)
    data.append(chart_ref)
    graphic.append(data)
    inline.extend([extent, doc_pr, graphic])
    drawing = OxmlElement("w:drawing")
    drawing.append(inline)
    run._r.append(drawing)


def apply_theme(document: Any, theme: dict[str, Any]) -> None:
    """The theme's font on every style (the theme-font references removed: Word prefers them to a
    named font) and its heading colour on the title and heading styles."""
    family = theme.get("fontFamily")
    if family:
        for fonts in document.styles.element.iter(qn("w:rFonts")):
            for slot in ("ascii", "hAnsi"):
                fonts.attrib.pop(qn(f"w:{slot}Theme"), None)
                fonts.set(qn(f"w:{slot}"), family)
        defaults = document.styles.element.find(qn("w:docDefaults"))
        if defaults is not None and not list(defaults.iter(qn("w:rFonts"))):
            document.styles["Normal"].font.name = family
        document.styles["Normal"].font.name = family
    color = theme.get("headingColor")
    if color:
        for name in ("Title", "Heading 1", "Heading 2", "Heading 3", "TOC Heading"):
            font = document.styles[name].font
            font.color.rgb = RGBColor.from_string(color[1:])
            element = font.element.rPr.find(qn("w:color")) if font.element.rPr is not None else None
            if element is not None:
                for attr in ("themeColor", "themeShade", "themeTint"):
                    element.attrib.pop(qn(f"w:{attr}"), None)


def shade_header_row(table: Any, accent: str) -> None:
    """The table's header row in the theme's accent colour, its text white."""
    for cell in table.rows[0].cells:
        properties = cell._tc.get_or_add_tcPr()
        shading = OxmlElement("w:shd")
        shading.set(qn("w:val"), "clear")
        shading.set(qn("w:color"), "auto")
        shading.set(qn("w:fill"), accent[1:])
        properties.append(shading)
        for paragraph in cell.paragraphs:
            for run in paragraph.runs:
                run.font.color.rgb = RGBColor(0xFF, 0xFF, 0xFF)
