"""Text for reportlab paragraphs in any script: each character in a shipped face that draws it, shaped,
and right-to-left text in visual order.

reportlab shapes each word with HarfBuzz (a paragraph style's `shaping`), which also puts the glyphs of a
right-to-left word in visual order; what it cannot do without its optional rlbidi (not on PyPI) is order
the words of a line. So a paragraph holding right-to-left text is laid out here: words are filled into
lines in logical order, then each line's words are put in visual order by the Unicode bidirectional
algorithm (python-bidi's levels, reordered word by word), and each line is drawn as a one-line paragraph,
right-aligned when the paragraph starts right to left.

A glyph that shaping made of several characters (a Devanagari conjunct, a Thai mark moved for its
consonant, an Arabic ligature) has no character of its own: reportlab gives it a private-use code, which
its ToUnicode map then gives back as the text, so a reader's copy and pdftotext lost those letters. Each
such glyph is noted here with the characters of its cluster as it is shaped, and the PDF's ToUnicode map
gives them back (one code to several characters, as the map allows).

An emoji is a picture (fonts/emoji.py): in a paragraph, a transparent image holds its place in the line
and an onDraw callback, which the PDF's canvas must know (`prepare`), draws it there; on a canvas line,
the picture is drawn directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

import uharfbuzz  # type: ignore[import-untyped]  # no stubs
from bidi import algorithm as bidi_algorithm
from reportlab.lib.enums import TA_CENTER, TA_LEFT, TA_RIGHT
from reportlab.lib.fonts import tt2ps
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase import ttfonts as _ttfonts
from reportlab.pdfbase.pdfmetrics import getFont, stringWidth
from reportlab.pdfbase.ttfonts import ShapedFragWord, ShapedStr, makeShapedFragWord, shapeFragWord, shapeStr
from reportlab.platypus import Flowable, Paragraph
from reportlab.platypus import paragraph as _paragraph_module

from . import BASE, EMOJI, coverage, emoji, runs, scripts

_RTL_TYPES = {"R", "AL", "AN"}  # Arabic digits too: HarfBuzz lays them out right to left


@dataclass(frozen=True)
class Run:
    text: str
    bold: bool = False
    italic: bool = False
    link: str = ""  # a URL the run links to
    link_color: str = "#0563C1"


def base_font(bold: bool = False) -> str:
    coverage()  # registers the faces and their bold and italic variants
    return str(tt2ps(BASE, _flag(bold), 0))


# An emoji's height, and how far it goes below the baseline, for a font size of 1 (Noto Color Emoji's
# bitmaps are 1.17 em high, 0.21 of that below the baseline).
EMOJI_HEIGHT = 1.15
EMOJI_DESCENT = EMOJI_HEIGHT * 27 / 128
_EMOJI_CALLBACK = "docjobsEmoji"


def prepare(canvas: Any) -> None:
    """A canvas that draws the paragraphs made here: it draws their emoji."""
    canvas.setNamedCB(_EMOJI_CALLBACK, _draw_emoji)


def emoji_width(size: float) -> float:
    return size * EMOJI_HEIGHT * emoji.aspect()


def _emoji_markup(piece: str, size: float) -> str:
    """The emoji's placeholder, then the callback that draws it."""
    width, height, descent = emoji_width(size), size * EMOJI_HEIGHT, size * EMOJI_DESCENT
    label = f"{size:.3f}|{piece}"
    return (f'<img src={quoteattr(str(emoji.BLANK))} width="{width:.3f}" height="{height:.3f}" '
            f'valign="{-descent:.3f}"/><onDraw name={quoteattr(_EMOJI_CALLBACK)} label={quoteattr(label)}/>')


def _shape_word(word: Any, *args: Any, **kwargs: Any) -> Any:
    """reportlab's shapeFragWord, shaping each stretch of one font alone. reportlab shapes a word (text
    between spaces) in the font of its first piece and gives each glyph to the piece it came from: a word
    drawn in two faces (Arabic-Indic digits and "%", "15" and the Arabic percent sign, "(15%)" before
    Arabic letters) had glyphs of one face drawn in the other, boxes or wrong letters. And reportlab puts
    an image or a callback (an emoji) back into a shaped word as a list (5.1.0), on which its line breaking
    fails: they stand between the stretches."""
    items = word[1:]
    font = items[0][0].fontName if items else None
    if isinstance(word, ShapedFragWord) or not any(hasattr(f, "cbDefn") or f.fontName != font for f, _ in items):
        return _learn(word, shapeFragWord(word, *args, **kwargs))
    out = makeShapedFragWord(word)([])
    width = float(word[0])
    stretch: list[Any] = []

    def flush() -> None:
        nonlocal width
        if not stretch:
            return
        if any(isinstance(text, ShapedStr) for _, text in stretch):  # shaped already (a word split and joined)
            out.extend(stretch)
            stretch.clear()
            return
        before = sum(stringWidth(text, frag.fontName, frag.fontSize) for frag, text in stretch)
        shaped_word = _learn(stretch, shapeFragWord([before, *stretch], *args, **kwargs))
        width += float(shaped_word[0]) - before
        out.extend(tuple(item) for item in shaped_word[1:])
        stretch.clear()

    for frag, text in items:
        if hasattr(frag, "cbDefn"):
            flush()
            out.append((frag, text))
            continue
        if stretch and stretch[-1][0].fontName != frag.fontName:
            flush()
        stretch.append((frag, text))
    flush()
    out.insert(0, width)
    return out


# face name -> private-use code reportlab gave a glyph -> the characters it stands for
_GLYPH_TEXT: dict[str, dict[int, str]] = {}


def _learn(word: Any, shaped_word: Any) -> Any:
    """Note the characters of each glyph that shaping gave a private-use code (module docstring). A glyph's
    characters are its cluster's (HarfBuzz's clusters are the offsets of their first characters), less
    those that glyphs of their own draw; the first such glyph of a cluster takes them. A glyph keeps the
    characters it was first seen with. A reader gives the characters in the order the glyphs stand, so a
    vowel sign drawn before its consonant (Devanagari's i) comes back before it."""
    if shaped_word is word:  # nothing was shaped
        return shaped_word
    text = "".join(item[1] for item in (word[1:] if not isinstance(word[0], tuple) else word)
                   if not hasattr(item[0], "cbDefn"))
    for frag, glyphs in shaped_word[1:]:
        if isinstance(glyphs, ShapedStr):
            _learn_glyphs(text, glyphs, frag.fontName)
    return shaped_word


def _learn_glyphs(text: str, glyphs: ShapedStr, font_name: str) -> None:
    data = glyphs.__dict__.get("__shapeData__") or []
    if len(data) != len(glyphs) or not any(0xE000 <= ord(g) <= 0xF8FF for g in glyphs):
        return
    face = getFont(font_name).face  # type: ignore[attr-defined]  # a TTFont's, missing from the stubs
    known = _GLYPH_TEXT.setdefault(face.name.decode("latin-1"), {})
    starts = sorted({d.cluster for d in data} | {len(text)})
    told: set[int] = set()  # clusters whose characters a glyph was given: the first of them takes them all
    for glyph, d in zip(glyphs, data, strict=True):
        code = ord(glyph)
        if not 0xE000 <= code <= 0xF8FF or chr(code) in text or d.cluster in told:
            continue
        told.add(d.cluster)
        if code in known:
            continue
        end = next((s for s in starts if s > d.cluster), len(text))
        cluster = text[d.cluster:end]
        own = {g for g, other in zip(glyphs, data, strict=True) if other.cluster == d.cluster and g in cluster}
        chars = "".join(c for c in cluster if c not in own)
        if chars:
            known[code] = chars


_make_to_unicode_cmap = _ttfonts.makeToUnicodeCMap


def _to_unicode_cmap(fontname: str, subset: Any) -> str:
    """reportlab's ToUnicode map of a font subset, with the characters each shaped glyph stands for."""
    known = _GLYPH_TEXT.get(fontname.split("+", 1)[-1], {})
    cmap = str(_make_to_unicode_cmap(fontname, subset))
    if not any(code in known for code in subset):
        return cmap
    entries = []
    for i, code in enumerate(subset):
        text = known.get(code, chr(code))
        entries.append(f"<{i:02X}> <{text.encode('utf-16-be').hex().upper()}>")
    head, _, rest = cmap.partition(f"{len(subset)} beginbfchar")
    _, _, tail = rest.partition("endbfchar")
    return "\n".join([head + f"{len(subset)} beginbfchar", *entries, "endbfchar" + tail])


# The paragraph module shapes through this name, and fonts write their ToUnicode maps through this one.
_paragraph_module.shapeFragWord = _shape_word  # type: ignore[attr-defined]
_ttfonts.makeToUnicodeCMap = _to_unicode_cmap


def _draw_emoji(canvas: Any, _kind: str, label: str) -> None:
    """The onDraw callback: the emoji just before the point the line has reached, over its placeholder."""
    info = canvas._curr_tx_info
    size, piece = label.split("|", 1)
    _draw_emoji_at(canvas, info["cur_x"] - emoji_width(float(size)), info["cur_y"], piece, float(size))


def _draw_emoji_at(canvas: Any, x: float, baseline: float, piece: str, size: float) -> None:
    emoji.draw(canvas, x, baseline, piece, size, emoji_width(size), size * EMOJI_HEIGHT, size * EMOJI_DESCENT, BASE)


def markup(pieces: list[Run], shaped: bool = False, size: float = 10) -> str:
    """reportlab paragraph markup for the runs: each piece of text in a face that draws it. Text of the
    base face is left in the style's font when that font can encode it (a theme's font draws Latin text),
    and put in the base face otherwise (Greek or Cyrillic under a standard font would be boxes).

    reportlab shapes a word (text between spaces) with the HarfBuzz font of its first piece, and gives
    every glyph of it to the piece's own font: a word drawn in two faces would get the wrong glyphs. So in
    a paragraph that is shaped, a zero-width space (a word break to reportlab) parts two faces that meet
    inside a word. An emoji is drawn the height of text of size."""
    coverage()  # registers the faces
    out = []
    last_face, last_char = "", " "
    for run in pieces:
        parts = []
        for face, part in runs(run.text):
            if face == EMOJI:
                if shaped and last_face and not last_char.isspace():
                    parts.append("\u200b")
                parts.append(_emoji_markup(part, size))
                last_face, last_char = face, part[-1]
                continue
            text = escape(part).replace("\n", "<br/>")
            # Bold and italic inside the font: reportlab picks the face's variant from the font around them.
            if run.bold:
                text = f"<b>{text}</b>"
            if run.italic:
                text = f"<i>{text}</i>"
            if shaped and last_face and face != last_face and not last_char.isspace() and not part[0].isspace():
                parts.append("\u200b")
            parts.append(text if face == BASE and _standard(part) else f'<font name="{face}">{text}</font>')
            last_face, last_char = face, part[-1]
        text = "".join(parts)
        if run.link:
            text = f'<a href={quoteattr(run.link)} color="{run.link_color}"><u>{text}</u></a>'
        out.append(text)
    return "".join(out)


# Scripts whose glyphs HarfBuzz must choose (joining, conjuncts, marks): a paragraph without any is not
# shaped (Latin, Greek, Cyrillic and CJK need no shaping, and shaping costs time).
_SHAPED = re.compile("[\u0590-\u08ff\u0900-\u0dff\u0e00-\u0eff\u0f00-\u109f\u1780-\u18af\ufb1d-\ufdff"
                     "\ufe70-\ufeff]")
# Chinese and Japanese are written without spaces: their lines break between any two characters.
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _style_for(style: ParagraphStyle, text: str) -> tuple[ParagraphStyle, bool]:
    """The style for a paragraph of this text (shaped or not, CJK line breaking or not), and whether it
    is shaped."""
    shaped = bool(_SHAPED.search(text))
    cjk = bool(_CJK.search(text))
    variants: dict[tuple[bool, bool], ParagraphStyle] = style.__dict__.setdefault("_docjobs_variants", {})
    if (shaped, cjk) not in variants:
        variant = ParagraphStyle(f"{style.name}-{int(shaped)}{int(cjk)}", parent=style, shaping=int(shaped))
        if cjk:
            variant.wordWrap = "CJK"
        variants[(shaped, cjk)] = variant
    return variants[(shaped, cjk)], shaped


def _flag(value: bool) -> Literal[0, 1]:
    return 1 if value else 0


def _standard(text: str) -> bool:
    """Whether reportlab's standard fonts (WinAnsi) can draw text."""
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def has_rtl(text: str) -> bool:
    import unicodedata

    return any(unicodedata.bidirectional(c) in _RTL_TYPES for c in text)


def paragraph(pieces: list[Run], style: ParagraphStyle) -> Flowable:
    """A flowable for the runs: a plain (shaped) Paragraph, or one laid out here when any text is right
    to left."""
    text = "".join(r.text for r in pieces)
    if not has_rtl(text):
        chosen, shaped = _style_for(style, text)
        return _Paragraph(markup(pieces, shaped, style.fontSize), chosen, plain=text)
    return BidiParagraph(pieces, style)


class _Paragraph(Paragraph):
    """A paragraph whose plain text (the preview's) is the text asked for: reportlab's is taken from its
    fragments, where shaping left private-use characters for ligatures and an emoji is an image."""

    def __init__(self, text: Any, style: Any = None, *args: Any, plain: str | None = None, **kwargs: Any) -> None:
        super().__init__(text, style, *args, **kwargs)
        self._plain = plain

    def getPlainText(self, identify: Any = None) -> str:
        if self._plain is not None:  # not a part split off
            return self._plain
        return str(super().getPlainText(identify))


class _LineStack(Flowable):
    """Laid-out lines of a BidiParagraph, drawn one under the other: what its split hands on."""

    def __init__(self, lines: list[Paragraph], heights: list[float], space_before: float, space_after: float) -> None:
        super().__init__()
        self._lines = lines
        self._heights = heights
        self._space = (space_before, space_after)
        self.height = sum(heights)

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        self.width = available_width
        return available_width, self.height

    def split(self, available_width: float, available_height: float) -> list[Any]:
        fits, used = 0, 0.0
        for height in self._heights:
            if used + height > available_height:
                break
            used += height
            fits += 1
        if fits == 0 or fits == len(self._lines):
            return [] if fits == 0 else [self]
        return [_LineStack(self._lines[:fits], self._heights[:fits], self._space[0], 0.0),
                _LineStack(self._lines[fits:], self._heights[fits:], 0.0, self._space[1])]

    def draw(self) -> None:
        y = self.height
        for line, height in zip(self._lines, self._heights, strict=True):
            y -= height
            line.drawOn(self.canv, 0, y)

    def getPlainText(self, identify: Any = None) -> str:
        return " ".join(line.getPlainText() for line in self._lines)

    def getSpaceBefore(self) -> float:
        return float(self._space[0])

    def getSpaceAfter(self) -> float:
        return float(self._space[1])


def shaped(style: ParagraphStyle) -> ParagraphStyle:
    """The style in the base face, with HarfBuzz shaping on (Arabic joining, Indic conjuncts, Thai marks)."""
    copy = ParagraphStyle(style.name, parent=style)
    _shape(copy)
    return copy


def shape_sheet(sheet: Any) -> Any:
    """A reportlab style sheet with every style in the base face and shaped (bold and italic kept)."""
    for style in sheet.byName.values():
        if isinstance(style, ParagraphStyle):
            _shape(style)
    return sheet


def _shape(style: ParagraphStyle) -> None:
    coverage()  # registers the faces and their bold and italic variants
    name = style.fontName
    bold = "Bold" in name
    italic = "Oblique" in name or "Italic" in name
    style.fontName = tt2ps(BASE, _flag(bold), _flag(italic))
    style.shaping = 1
    if getattr(style, "bulletFontName", None):
        style.bulletFontName = tt2ps(BASE, 0, 0)


class BidiParagraph(Flowable):
    """A paragraph with right-to-left text, laid out line by line (module docstring)."""

    def __init__(self, pieces: list[Run], style: ParagraphStyle) -> None:
        super().__init__()
        self.pieces = pieces
        self.style = style
        self.rtl = scripts("".join(r.text for r in pieces)).rtl
        alignment = style.alignment
        if alignment not in (TA_CENTER,):
            alignment = TA_RIGHT if self.rtl else TA_LEFT
        self._line_style = ParagraphStyle(style.name + "-line", parent=style, alignment=alignment)
        self._lines: list[Paragraph] = []
        self._heights: list[float] = []

    def _words(self) -> list[list[Run]]:
        """The text cut at spaces and line ends into words, each a list of styled runs; a line end is
        an empty word."""
        words: list[list[Run]] = [[]]
        for run in self.pieces:
            parts = run.text.replace("\n", " \n ").split(" ")
            for n, part in enumerate(parts):
                if n:
                    words.append([])
                if part == "\n":
                    words[-1] = []
                    words.append([Run("\n")])
                    words.append([])
                elif part:  # its link too (a paragraph with right-to-left text lost its links)
                    words[-1].append(Run(part, run.bold, run.italic, run.link, run.link_color))
        return [w for w in words if w]

    def _cut(self, word: list[Run], width: float) -> list[list[Run]]:
        """A word wider than a line in pieces that fit, cut between characters: Chinese and Japanese are
        written without spaces, so a long paragraph of them quoting one Arabic name was one word, one line
        taller than a page, which could not be laid out."""
        pieces: list[list[Run]] = [[]]
        used = 0.0
        for run in word:
            for char in run.text:
                w = self._width([Run(char, run.bold, run.italic)])
                if pieces[-1] and used + w > width:
                    pieces.append([])
                    used = 0.0
                last = pieces[-1][-1] if pieces[-1] else None
                if last is not None and (last.bold, last.italic, last.link) == (run.bold, run.italic, run.link):
                    pieces[-1][-1] = Run(last.text + char, run.bold, run.italic, run.link, run.link_color)
                else:
                    pieces[-1].append(Run(char, run.bold, run.italic, run.link, run.link_color))
                used += w
        return [piece for piece in pieces if piece]

    def _width(self, word: list[Run]) -> float:
        size = self.style.fontSize
        total = 0.0
        for run in word:
            for face, part in runs(run.text):
                if face == EMOJI:
                    total += emoji_width(size)
                else:
                    total += stringWidth(part, tt2ps(face, _flag(run.bold), _flag(run.italic)), size)
        return total

    def _fill(self, width: float) -> list[list[list[Run]]]:
        space = stringWidth(" ", BASE, self.style.fontSize)
        lines: list[list[list[Run]]] = [[]]
        used = 0.0
        for word in self._words():
            if word[0].text == "\n":
                lines.append([])
                used = 0.0
                continue
            w = self._width(word)
            for part in self._cut(word, width * 0.97) if w > width * 0.97 else [word]:
                if part is not word:
                    w = self._width(part)
                if lines[-1] and used + space + w > width * 0.97:  # shaped words can be a little wider
                    lines.append([])
                    used = 0.0
                used += (space if lines[-1] else 0.0) + w
                lines[-1].append(part)
        return lines

    def _visual(self, line: list[list[Run]]) -> list[list[Run]]:
        """The line's words in visual order (rule L2 of the bidirectional algorithm, word by word)."""
        if not line:
            return line
        texts = ["".join(r.text for r in word) for word in line]
        levels = _levels(" ".join(texts), self.rtl)
        word_levels = []
        words = []
        at = 0
        for word, text in zip(line, texts, strict=True):
            chars = levels[at: at + len(text)]
            odd = [lv for lv in chars if lv % 2]
            word_levels.append(min(odd) if odd else max(chars, default=int(self.rtl)))
            words.append(_visual_word(word, chars))
            at += len(text) + 1
        return [words[k] for k in _visual_order(word_levels)]

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        self._lines = []
        for line in self._fill(available_width):
            pieces: list[Run] = []
            for n, word in enumerate(self._visual(line)):
                if n:
                    pieces.append(Run(" "))
                pieces.extend(word)
            self._lines.append(Paragraph(markup(pieces, True, self.style.fontSize) or "&nbsp;", self._line_style))
        self._heights = [p.wrap(available_width, available_height)[1] for p in self._lines]
        self.width = available_width
        self.height = sum(self._heights)
        return available_width, self.height

    def split(self, available_width: float, available_height: float) -> list[Any]:
        """The lines that fit in available_height, then the rest: two parts, as reportlab's frames and a
        table's cells (a row split over a page break) take them; none when not even one line fits."""
        self.wrap(available_width, available_height)
        return _LineStack(self._lines, self._heights, self.style.spaceBefore, self.style.spaceAfter).split(
            available_width, available_height)

    def draw(self) -> None:
        y = self.height
        for line, height in zip(self._lines, self._heights, strict=True):
            y -= height
            line.drawOn(self.canv, 0, y)

    def getPlainText(self, identify: Any = None) -> str:  # reportlab names a flowable that did not fit by it
        return "".join(r.text for r in self.pieces)

    def getSpaceBefore(self) -> float:
        return float(self.style.spaceBefore)

    def getSpaceAfter(self) -> float:
        return float(self.style.spaceAfter)


def _visual_word(word: list[Run], levels: list[int]) -> list[Run]:
    """A word of a right-to-left paragraph as runs in visual order, each in one face and at one level,
    its text as HarfBuzz must be given it to draw it in visual order ("15%" in Arabic stands as "%15",
    "ב-12%" as "12%-ב")."""
    pieces = [(n, run.text) for n, run in enumerate(word)]
    return [Run(text, word[n].bold, word[n].italic, word[n].link, word[n].link_color)
            for n, _, text in _visual_pieces(pieces, levels)]


_MIRRORED = str.maketrans("()[]{}<>\u00ab\u00bb", ")(][}{><\u00bb\u00ab")


def _visual_pieces(pieces: list[tuple[int, str]], levels: list[int]) -> list[tuple[int, str, str]]:
    """(piece number, face, text to shape) in visual order for the pieces' text, whose characters are at
    these embedding levels (rule L2, by stretches of one piece, face and level; an emoji is one stretch
    and is never turned round). HarfBuzz lays out a stretch in a right-to-left script (Arabic letters and
    digits, Hebrew) right to left and any other left to right: a stretch is given to it reversed when that
    is not the way it must stand, and a bracket that then stands right to left is mirrored."""
    stretches: list[tuple[int, int, str, str]] = []  # (level, piece number, face, logical text)
    at = 0
    for n, text in pieces:
        for face, part in runs(text):
            part_levels = levels[at: at + len(part)]
            at += len(part)
            if face == EMOJI:
                stretches.append((part_levels[0], n, face, part))
                continue
            i = 0
            while i < len(part):
                j = i
                while j < len(part) and part_levels[j] == part_levels[i]:
                    j += 1
                stretches.append((part_levels[i], n, face, part[i:j]))
                i = j
    out = []
    for k in _visual_order([level for level, *_ in stretches]):
        level, n, face, text = stretches[k]
        if face != EMOJI and level % 2 != _shaped_right_to_left(text):
            text = text[::-1]
            if level % 2:
                text = text.translate(_MIRRORED)
        out.append((n, face, text))
    return out


def _shaped_right_to_left(text: str) -> bool:
    """Whether HarfBuzz lays text out right to left (the direction it guesses from the first character of
    a script: Arabic-Indic digits are Arabic, "15" and "%" no script's)."""
    buffer = uharfbuzz.Buffer()
    buffer.add_str(text)
    buffer.guess_segment_properties()
    return bool(buffer.direction == "rtl")


def _visual_order(levels: list[int]) -> list[int]:
    """The indices of items at these embedding levels in visual order (rule L2: from the highest level
    down to the lowest odd one, reverse every run of items at that level or above)."""
    order = list(range(len(levels)))
    lowest_odd = min((lv for lv in levels if lv % 2), default=None)
    if lowest_odd is None:
        return order
    for level in range(max(levels), lowest_odd - 1, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] < level:
                i += 1
                continue
            j = i
            while j < len(order) and levels[order[j]] >= level:
                j += 1
            order[i:j] = reversed(order[i:j])
            i = j
    return order


def draw_line(canvas: Any, x: float, y: float, text: str, font: str, size: float, anchor: str = "left") -> None:
    """One line of text on a canvas (a page header or footer) at x, anchored left, center or right: each
    piece in a face that draws it, shaped, right-to-left pieces in visual order."""
    coverage()
    if has_rtl(text):
        pieces = [(face, part) for _, face, part in _visual_pieces([(0, text)], _levels(text, scripts(text).rtl))]
    else:
        pieces = runs(text)
    pieces = [(font if face == BASE and _standard(part) else face, part) for face, part in pieces]
    # reportlab's canvas shapes only with its rlbidi: each piece is shaped here (a ShapedStr carries its
    # glyphs' advances), in a TrueType face.
    shaped = [part if face == EMOJI or not getFont(face).shapable else shapeStr(part, face, size)
              for face, part in pieces]
    for (face, part), glyphs in zip(pieces, shaped, strict=True):
        if isinstance(glyphs, ShapedStr):
            _learn_glyphs(part, glyphs, face)
    widths = [emoji_width(size) if face == EMOJI else _advance(text, size) if isinstance(text, ShapedStr)
              else stringWidth(text, face, size) for (face, _), text in zip(pieces, shaped, strict=True)]
    x -= {"left": 0.0, "center": sum(widths) / 2, "right": sum(widths)}[anchor]
    for (face, _), text, width in zip(pieces, shaped, widths, strict=True):
        if face == EMOJI:
            _draw_emoji_at(canvas, x, y, text, size)
            x += width
            continue
        canvas.setFont(face, size)
        canvas.drawString(x, y, text)
        x += width


def _advance(text: ShapedStr, size: float) -> float:
    data: list[Any] = text.__dict__["__shapeData__"]  # the glyphs' advances, in 1/1000 of the size
    return float(sum(d.x_advance for d in data)) * size / 1000


def _levels(text: str, rtl: bool) -> list[int]:
    """The resolved embedding level of each character of text (python-bidi's own algorithm, whose steps
    keep one record per character)."""
    storage = bidi_algorithm.get_empty_storage()
    storage["base_level"] = int(rtl)
    storage["base_dir"] = "R" if rtl else "L"
    bidi_algorithm.get_embedding_levels(text, storage, False, False)
    records = list(storage["chars"])
    bidi_algorithm.explicit_embed_and_overrides(storage, False)
    bidi_algorithm.resolve_weak_types(storage, False)
    bidi_algorithm.resolve_neutral_types(storage, False)
    bidi_algorithm.resolve_implicit_levels(storage, False)
    return [int(record["level"]) for record in records]
