"""Colour emoji for PDFs: which pieces of a text are emoji, and each one's picture.

No font reportlab can embed draws colour emoji (Noto Color Emoji's glyphs are PNG bitmaps), so the PDF writer
draws each emoji as an inline image the size of the text, from the pictures scripts/build_fonts.py took
from Noto Color Emoji: `emoji/index.json` maps every sequence that font draws as one emoji (single code
points, ZWJ sequences, skin tones, flags, keycaps, tag sequences), written as lowercase hexadecimal code
points joined by "-" and without U+FE0F, to a cell of the sheets `emoji/sheet-NN.webp`.

A code point that a text face also draws (a digit, "#", "©", "☺") is an emoji only as part of a longer
sequence or when U+FE0F asks for emoji presentation; U+FE0E keeps anything text.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import FONT_DIR

EMOJI_DIR = FONT_DIR / "emoji"
# A transparent picture that holds an emoji's place in a paragraph's line (fonts/pdftext.py).
BLANK = EMOJI_DIR / "blank.png"
VS15, VS16 = "\ufe0e", "\ufe0f"


@dataclass(frozen=True)
class _Index:
    cells: dict[tuple[int, ...], int]
    longest: int
    cell: tuple[int, int]
    columns: int
    per_sheet: int


@functools.cache
def _index() -> _Index:
    data = json.loads((EMOJI_DIR / "index.json").read_text())
    cells = {tuple(int(c, 16) for c in key.split("-")): n for key, n in data["emoji"].items()}
    return _Index(cells, max(len(k) for k in cells), (data["cell"][0], data["cell"][1]), data["columns"],
                  data["perSheet"])


def aspect() -> float:
    """An emoji's width over its height."""
    width, height = _index().cell
    return width / height


def split(text: str, text_face: Callable[[str], bool]) -> list[tuple[bool, str]]:
    """text as (is emoji, piece) pieces, one piece an emoji (with its selectors), in order. text_face
    tells whether a text face draws a character."""
    if text.isascii():
        return [(False, text)] if text else []
    index = _index()
    out: list[tuple[bool, str]] = []
    plain: list[str] = []
    i = 0
    while i < len(text):
        found = _match(text, i, index, text_face)
        if found == i:
            plain.append(text[i])
            i += 1
            continue
        if plain:
            out.append((False, "".join(plain)))
            plain = []
        out.append((True, text[i:found]))
        i = found
    if plain:
        out.append((False, "".join(plain)))
    return out


def _match(text: str, start: int, index: _Index, text_face: Callable[[str], bool]) -> int:
    """The end of the longest emoji sequence at start (U+FE0F skipped, and taken along after it), or start."""
    codes: list[int] = []
    ends: list[int] = []
    i = start
    while i < len(text) and len(codes) < index.longest:
        if text[i] == VS16 and codes:
            i += 1
            ends[-1] = i
            continue
        codes.append(ord(text[i]))
        i += 1
        ends.append(i)
    for n in range(len(codes), 0, -1):
        if tuple(codes[:n]) not in index.cells:
            continue
        end = ends[n - 1]
        if n == 1:
            char = text[start]
            follower = text[start + 1] if start + 1 < len(text) else ""
            if follower == VS15 or (text_face(char) and follower != VS16):
                return start
        return end
    return start


def key(piece: str) -> str:
    """The index key of an emoji piece (from `split`)."""
    return "-".join(f"{ord(c):x}" for c in piece if c != VS16)


@functools.cache
def _sheet(number: int) -> Any:
    from PIL import Image

    with Image.open(EMOJI_DIR / f"sheet-{number:02d}.webp") as sheet:
        sheet.load()
        return sheet.copy()


@functools.lru_cache(maxsize=1024)
def png(piece_key: str) -> bytes:
    """The emoji's picture, a PNG with an alpha channel."""
    index = _index()
    cell = index.cells[tuple(int(c, 16) for c in piece_key.split("-"))]
    width, height = index.cell
    number, at = divmod(cell, index.per_sheet)
    x, y = (at % index.columns) * width, (at // index.columns) * height
    out = io.BytesIO()
    _sheet(number).crop((x, y, x + width, y + height)).save(out, "PNG")
    return out.getvalue()


def draw(canvas: Any, x: float, baseline: float, piece: str, size: float, width: float, height: float,
         descent: float, font: str) -> None:
    """The emoji's picture on a canvas, in text of size on the baseline from x, marked as standing for the
    piece (a /Span with /ActualText): a reader's copy and pdftotext give the emoji back. Readers take the
    span's text in place of the text drawn inside it, and only when something is drawn there: an invisible
    space of font, on the baseline and as wide as the picture, so that the emoji reads as part of its
    line (a narrower one leaves a gap that pdftotext takes for a column's edge)."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase.pdfmetrics import stringWidth

    utf16 = piece.encode("utf-16-be").hex().upper()
    canvas.saveState()
    canvas._code.append(f"/Span <</ActualText <FEFF{utf16}>>> BDC")
    canvas.drawImage(ImageReader(io.BytesIO(png(key(piece)))), x, baseline - descent, width, height, mask="auto")
    invisible = canvas.beginText(x, baseline)
    invisible.setTextRenderMode(3)
    invisible.setFont(font, size)
    invisible.setHorizScale(100 * width / stringWidth(" ", font, size))
    invisible.textOut(" ")
    canvas.drawText(invisible)
    canvas._code.append("EMC")
    canvas.restoreState()
