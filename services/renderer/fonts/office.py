"""Script, language and direction in the office formats, set from the text itself.

Word, PowerPoint and LibreOffice pick a run's font by the kind of character: Latin text takes the run's
ascii/hAnsi font, Chinese, Japanese and Korean its east-Asian font, Arabic, Hebrew, Devanagari and Thai its
complex-script font, each with a language of its own; and a right-to-left paragraph needs its direction
said, or its words and punctuation come out in the wrong order. python-docx and python-pptx set none of
this, so once a document is built its runs and paragraphs are given them here, from what their text holds
(`fonts.scripts`): the languages (w:lang / a:rPr lang), the east-Asian and complex-script fonts (w:rFonts
eastAsia and cs / a:ea and a:cs), right to left (w:bidi on the paragraph and w:rtl on its runs / a:pPr
rtl="1"). A workbook's cell that starts right to left reads right to left (readingOrder 2).
"""

from __future__ import annotations

from typing import Any

from docx.oxml.ns import qn

from . import COMPLEX_FONTS, EAST_ASIAN_FONTS, LANGUAGE_TAGS, Scripts, scripts

_A = "http://schemas.openxmlformats.org/drawingml/2006/main"


def _sub(parent: Any, tag: str) -> Any:
    """A new last child of parent (an lxml element, as python-docx and python-pptx build them)."""
    element = parent.makeelement(tag, {})
    parent.append(element)
    return element


def _local(element: Any) -> str:
    return str(element.tag).rpartition("}")[2]


def _docx_text(element: Any) -> str:
    return "".join(t.text or "" for t in element.iter(qn("w:t")))


def docx(document: Any) -> None:
    """Every paragraph of a python-docx document (body, tables, headers and footers) and its runs."""
    roots = [document.element.body]
    for section in document.sections:
        for part in (section.header, section.footer):
            if part is not None and not part.is_linked_to_previous:
                roots.append(part._element)
    for root in roots:
        for paragraph in root.iter(qn("w:p")):
            text = _docx_text(paragraph)
            if text.isascii():
                continue
            found = scripts(text)
            if found.rtl:
                ppr = paragraph.get_or_add_pPr()
                if ppr.find(qn("w:bidi")) is None:
                    _insert_in_order(ppr, _sub(ppr, qn("w:bidi")), _PPR_ORDER)
            for run in paragraph.iter(qn("w:r")):
                run_text = _docx_text(run)
                if run_text and not run_text.isascii():
                    _docx_run(run, scripts(run_text))


# The order CT_PPr and CT_RPr give their children (Word refuses a part whose elements are out of order).
_PPR_ORDER = ["pStyle", "keepNext", "keepLines", "pageBreakBefore", "framePr", "widowControl", "numPr",
              "suppressLineNumbers", "pBdr", "shd", "tabs", "suppressAutoHyphens", "kinsoku", "wordWrap",
              "overflowPunct", "topLinePunct", "autoSpaceDE", "autoSpaceDN", "bidi", "adjustRightInd",
              "snapToGrid", "spacing", "ind", "contextualSpacing", "mirrorIndents", "suppressOverlap", "jc",
              "textDirection", "textAlignment", "textboxTightWrap", "outlineLvl", "divId", "cnfStyle", "rPr",
              "sectPr", "pPrChange"]
_RPR_ORDER = ["rStyle", "rFonts", "b", "bCs", "i", "iCs", "caps", "smallCaps", "strike", "dstrike", "outline",
              "shadow", "emboss", "imprint", "noProof", "snapToGrid", "vanish", "webHidden", "color", "spacing",
              "w", "kern", "position", "sz", "szCs", "highlight", "u", "effect", "bdr", "shd", "fitText",
              "vertAlign", "rtl", "cs", "em", "lang", "eastAsianLayout", "specVanish", "oMath"]


def _insert_in_order(parent: Any, child: Any, order: list[str]) -> None:
    """Move child (already appended to parent) before the first sibling that comes after it in order."""
    name = _local(child)
    rank = order.index(name)
    for sibling in list(parent):
        if sibling is child:
            continue
        local = _local(sibling)
        if local in order and order.index(local) > rank:
            sibling.addprevious(child)
            return


def _child(parent: Any, name: str, order: list[str]) -> Any:
    element = parent.find(qn(f"w:{name}"))
    if element is None:
        element = _sub(parent, qn(f"w:{name}"))
        _insert_in_order(parent, element, order)
    return element


def _docx_run(run: Any, found: Scripts) -> None:
    rpr = run.get_or_add_rPr()
    fonts = _child(rpr, "rFonts", _RPR_ORDER)
    lang = _child(rpr, "lang", _RPR_ORDER)
    if (east := found.east_asian) is not None:
        fonts.set(qn("w:eastAsia"), EAST_ASIAN_FONTS[east])
        fonts.set(qn("w:hint"), "eastAsia")
        lang.set(qn("w:eastAsia"), LANGUAGE_TAGS[east])
    if (complex_ := found.complex) is not None:
        fonts.set(qn("w:cs"), COMPLEX_FONTS[complex_])
        lang.set(qn("w:bidi"), LANGUAGE_TAGS[complex_])
        if complex_ in ("ar", "he"):
            _child(rpr, "rtl", _RPR_ORDER)
        else:
            _child(rpr, "cs", _RPR_ORDER)  # Devanagari and Thai: complex script, left to right
    if (other := found.other) is not None:
        lang.set(qn("w:val"), LANGUAGE_TAGS[other])
    if not lang.attrib:
        rpr.remove(lang)
    if not fonts.attrib:
        rpr.remove(fonts)


def pptx(deck: Any) -> None:
    """Every paragraph of a python-pptx deck's slides and notes (shapes, tables) and its runs."""
    roots = []
    for slide in deck.slides:
        roots.append(slide._element)
        if slide.has_notes_slide:
            roots.append(slide.notes_slide._element)
    for root in roots:
        for paragraph in root.iter(f"{{{_A}}}p"):
            text = "".join(t.text or "" for t in paragraph.iter(f"{{{_A}}}t"))
            if text.isascii():
                continue
            if scripts(text).rtl:
                ppr = paragraph.find(f"{{{_A}}}pPr")
                if ppr is None:
                    ppr = paragraph.makeelement(f"{{{_A}}}pPr", {})
                    paragraph.insert(0, ppr)
                ppr.set("rtl", "1")
                ppr.set("algn", "r")
            for run in paragraph.iter(f"{{{_A}}}r"):
                t = run.find(f"{{{_A}}}t")
                if t is not None and t.text and not t.text.isascii():
                    _pptx_run(run, scripts(t.text))


# CT_TextCharacterProperties' children, in order.
_A_RPR_ORDER = ["ln", "noFill", "solidFill", "gradFill", "blipFill", "pattFill", "grpFill", "effectLst",
                "effectDag", "highlight", "uLnTx", "uLn", "uFillTx", "uFill", "latin", "ea", "cs", "sym",
                "hlinkClick", "hlinkMouseOver", "rtl", "extLst"]


def _pptx_run(run: Any, found: Scripts) -> None:
    rpr = run.find(f"{{{_A}}}rPr")
    if rpr is None:
        rpr = run.makeelement(f"{{{_A}}}rPr", {})
        run.insert(0, rpr)
    language = found.east_asian or found.complex or found.other
    if language is not None:
        rpr.set("lang", LANGUAGE_TAGS[language])
    if (east := found.east_asian) is not None:
        _a_font(rpr, "ea", EAST_ASIAN_FONTS[east])
    if (complex_ := found.complex) is not None:
        _a_font(rpr, "cs", COMPLEX_FONTS[complex_])


def _a_font(rpr: Any, name: str, typeface: str) -> None:
    element = rpr.find(f"{{{_A}}}{name}")
    if element is None:
        element = _sub(rpr, f"{{{_A}}}{name}")
        rank = _A_RPR_ORDER.index(name)
        for sibling in list(rpr):
            local = _local(sibling)
            if sibling is not element and local in _A_RPR_ORDER and _A_RPR_ORDER.index(local) > rank:
                sibling.addprevious(element)
                break
    element.set("typeface", typeface)


def xlsx_cell(cell: Any, text: str) -> None:
    """A workbook cell holding text that starts right to left reads right to left."""
    if not scripts(text).rtl:
        return
    from copy import copy

    alignment = copy(cell.alignment)
    alignment.readingOrder = 2
    cell.alignment = alignment
