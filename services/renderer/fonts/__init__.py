"""The fonts shipped with the renderer, and what the writers need to know about a text's scripts.

The .ttf files beside this module (scripts/build_fonts.py makes them; licences in the LICENSE files) are
embedded in spec-mode PDFs: Noto Sans for Latin, Greek and Cyrillic, then one font per script (Droid
Sans Fallback for Chinese and Japanese, a Hangul subset of Nanum Gothic for Korean), tried in order for
each character that the first cannot draw, and colour emoji drawn as pictures (`fonts/emoji.py`). They live
inside the package, so the code-mode box,
which sees the installed packages read-only, can register them too (`FONT_DIR`). What none of them can
draw is reported as a `glyph_missing` warning instead of leaving a box in the document.

The office formats do not embed fonts: their viewers draw the text. There the writers name a font for each
script slot (Latin, east Asian, complex script), the language and the direction, from `scripts`.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FONT_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Face:
    name: str  # the name reportlab knows it by
    regular: str
    bold: str | None = None
    italic: str | None = None
    bold_italic: str | None = None


# The order is the fallback order: the first face that draws a character draws it.
FACES = (
    Face("NotoSans", "NotoSans-Regular.ttf", "NotoSans-Bold.ttf", "NotoSans-Italic.ttf", "NotoSans-BoldItalic.ttf"),
    Face("NotoSansArabic", "NotoSansArabic-Regular.ttf"),
    Face("NotoSansHebrew", "NotoSansHebrew-Regular.ttf"),
    Face("NotoSansDevanagari", "NotoSansDevanagari-Regular.ttf"),
    Face("NotoSansThai", "NotoSansThai-Regular.ttf"),
    Face("DocjobsHangul", "DocjobsHangul-Regular.ttf"),
    Face("DroidSansFallback", "DroidSansFallbackFull.ttf"),
    Face("NotoSansSymbols2", "NotoSansSymbols2-Regular.ttf"),
)
BASE = FACES[0].name
# Not a font: a run of one emoji, which the PDF writer draws as a picture (fonts/emoji.py).
EMOJI = "emoji"

# Characters that draw nothing and need no glyph: spaces and line ends are laid out, joiners and
# variation selectors only steer the shaping of their neighbours.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Mn"}


@functools.cache
def coverage() -> dict[str, frozenset[int]]:
    """Each face's code points (its cmap); the faces are registered with reportlab on the way, once per
    process (the zygote does it while warming up, so renders find them ready)."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    covered = {}
    for face in FACES:
        regular = _shapable(TTFont(face.name, str(FONT_DIR / face.regular)))
        pdfmetrics.registerFont(regular)
        covered[face.name] = frozenset(regular.face.charToGlyph)
        variants: dict[tuple[Literal[0, 1], Literal[0, 1]], str | None] = {
            (1, 0): face.bold, (0, 1): face.italic, (1, 1): face.bold_italic}
        addMapping(face.name, 0, 0, face.name)
        for (bold, italic), file in variants.items():
            name = face.name
            if file is not None:
                name = f"{face.name}-{bold}{italic}"
                pdfmetrics.registerFont(_shapable(TTFont(name, str(FONT_DIR / file))))
            addMapping(face.name, bold, italic, name)  # a face without the variant draws it plain
    return covered


def _shapable(font: Any) -> Any:
    """The font, ready to be shaped from any paragraph. reportlab shapes a word with HarfBuzz in the font of
    its first piece and gives a glyph without a character (a ligature, a conjunct) a private code point in
    whichever font draws it, through a method the font has only once it has shaped something itself: a
    word whose pieces are in two faces (Chinese followed by "12%") would fail in the second."""
    font.hbFont()
    return font


def face_for(char: str) -> str | None:
    """The first face that draws char, or None."""
    code = ord(char)
    for name, codes in coverage().items():
        if code in codes:
            return name
    return None


def needs_glyph(char: str) -> bool:
    return not char.isspace() and unicodedata.category(char) not in _INVISIBLE_CATEGORIES


def drawn_as_text(char: str) -> bool:
    return face_for(char) is not None


def missing(text: str) -> list[str]:
    """The characters of text that no shipped face or emoji picture draws, each once, in order."""
    from . import emoji

    seen: dict[str, None] = {}
    for is_emoji, piece in emoji.split(text, drawn_as_text):
        if is_emoji:
            continue
        for char in piece:
            if char not in seen and needs_glyph(char) and face_for(char) is None:
                seen[char] = None
    return list(seen)


MAX_GLYPH_WARNINGS = 20


def glyph_warnings(spec: Any, title: str = "") -> list[dict[str, str]]:
    """A `glyph_missing` warning for each text of the spec (at most MAX_GLYPH_WARNINGS) holding characters
    that no shipped face draws, with its place in the spec ("blocks[3].text")."""
    out: list[dict[str, str]] = []

    def visit(value: Any, where: str) -> None:
        if len(out) >= MAX_GLYPH_WARNINGS:
            return
        if isinstance(value, str):
            if value.isascii():
                return
            if chars := missing(value):
                shown = ", ".join(f"{c} (U+{ord(c):04X})" for c in chars[:5])
                more = f" and {len(chars) - 5} more" if len(chars) > 5 else ""
                out.append({"code": "glyph_missing", "where": where,
                            "message": f"no font the renderer has can draw {shown}{more}: a PDF shows a box "
                                       "in its place, an office viewer draws it only if its own fonts can"})
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "data":  # an image's base64
                    visit(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, f"{where}[{i}]")

    visit(spec, "")
    if isinstance(spec, dict) and not spec.get("title") and title:
        visit(title, "title")
    return out


def runs(text: str) -> list[tuple[str, str]]:
    """text cut into (face, text) runs, each drawn by one face, and each emoji a run of its own (face
    EMOJI). A character that any face draws the same (a space, a digit, punctuation, a combining mark)
    stays in the run it is in, so a word is not cut for its comma; a character no face draws goes to the
    base face (and is reported by `missing`)."""
    if text.isascii():
        return _text_runs(text)
    from . import emoji

    out: list[tuple[str, str]] = []
    for is_emoji, piece in emoji.split(text, drawn_as_text):
        out.extend([(EMOJI, piece)] if is_emoji else _text_runs(piece))
    return out


def _text_runs(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    current: str | None = None
    buffer: list[str] = []
    for char in text:
        face = face_for(char) if needs_glyph(char) else None
        if face is not None and current is not None and face != current and char in _SHARED and \
                ord(char) in coverage()[current]:
            face = current
        if face is None or face == current:
            buffer.append(char)
            continue
        if buffer and current is not None:
            out.append((current, "".join(buffer)))
            buffer = []
        current = face
        buffer.append(char)
    if buffer:
        out.append((current or BASE, "".join(buffer)))
    return out


# Punctuation and digits that several faces draw: kept with the script around them.
_SHARED = frozenset(" .,;:!?'\"()[]{}-/%+*=<>0123456789\u00a0\u2013\u2014\u060c\u061b\u061f")


# Scripts as the office formats' font slots see them.
LATIN, EAST_ASIAN, COMPLEX = "latin", "east_asian", "complex"
_RTL_BIDI = {"R", "AL"}


def _block(code: int) -> str | None:
    if 0x0590 <= code <= 0x05FF or 0xFB1D <= code <= 0xFB4F:
        return "he"
    if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F or 0x08A0 <= code <= 0x08FF \
            or 0xFB50 <= code <= 0xFDFF or 0xFE70 <= code <= 0xFEFF:
        return "ar"
    if 0x0900 <= code <= 0x097F:
        return "hi"
    if 0x0E00 <= code <= 0x0E7F:
        return "th"
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
        return "ja"
    if 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F or 0xAC00 <= code <= 0xD7AF:
        return "ko"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or 0x3000 <= code <= 0x303F \
            or 0xFF00 <= code <= 0xFFEF or 0x20000 <= code <= 0x2FA1F:
        return "zh"
    if 0x0400 <= code <= 0x052F:
        return "ru"
    if 0x0370 <= code <= 0x03FF or 0x1F00 <= code <= 0x1FFF:
        return "el"
    return None


# BCP 47 tags as Word, PowerPoint and LibreOffice expect them.
LANGUAGE_TAGS = {"he": "he-IL", "ar": "ar-SA", "hi": "hi-IN", "th": "th-TH", "ja": "ja-JP", "ko": "ko-KR",
                 "zh": "zh-CN", "ru": "ru-RU", "el": "el-GR"}
# The font each office slot names for a language: what Windows, macOS and LibreOffice's own fonts have.
EAST_ASIAN_FONTS = {"zh": "Microsoft YaHei", "ja": "Yu Gothic", "ko": "Malgun Gothic"}
COMPLEX_FONTS = {"ar": "Arial", "he": "Arial", "hi": "Nirmala UI", "th": "Leelawadee UI"}


@dataclass(frozen=True)
class Scripts:
    """What a text holds, as the office formats' run and paragraph properties need it."""

    languages: tuple[str, ...]  # the languages found, most characters first ("zh", "ar", ...)
    rtl: bool  # the text starts (its first strong character) right to left

    @property
    def east_asian(self) -> str | None:
        return next((lang for lang in self.languages if lang in EAST_ASIAN_FONTS), None)

    @property
    def complex(self) -> str | None:
        return next((lang for lang in self.languages if lang in COMPLEX_FONTS), None)

    @property
    def other(self) -> str | None:
        return next((lang for lang in self.languages if lang in ("ru", "el")), None)


@functools.lru_cache(maxsize=4096)
def scripts(text: str) -> Scripts:
    counts: dict[str, int] = {}
    rtl: bool | None = None
    kana = False
    for char in text:
        code = ord(char)
        lang = _block(code)
        if lang is not None:
            counts[lang] = counts.get(lang, 0) + 1
            kana = kana or lang == "ja"
        if rtl is None:
            kind = unicodedata.bidirectional(char)
            if kind in _RTL_BIDI:
                rtl = True
            elif kind == "L":
                rtl = False
    if kana and "zh" in counts:  # kanji among kana are Japanese
        counts["ja"] += counts.pop("zh")
    ordered = tuple(sorted(counts, key=lambda k: -counts[k]))
    return Scripts(ordered, bool(rtl))
