"""Rebuild the fonts shipped in services/renderer/fonts/ from Debian's font packages.

The renderer embeds these in every spec-mode PDF, and measures what they can draw for every format's
warnings. They are committed (a renderer never fetches a font, and `make run` needs no apt-get), so this
script runs only when the set changes, on a Debian machine with the packages below installed:

    apt-get install fonts-noto-core fonts-droid-fallback fonts-nanum fonts-noto-color-emoji
    .venv/bin/pip install fonttools==4.68.0
    .venv/bin/python scripts/build_fonts.py

Each font is TrueType (reportlab embeds TrueType outlines only: Debian's Noto CJK is CFF, hence Droid Sans
Fallback for Chinese, Japanese and Korean) and is written without its hinting (PDF viewers do not use it)
and with every OpenType layout feature (Arabic joining and Indic conjuncts need them).

Emoji come from Noto Color Emoji, whose glyphs are PNG bitmaps (CBDT), which reportlab cannot embed as a
font: each emoji the font draws (single code points and the sequences its ligatures join: ZWJ sequences,
skin tones, flags, keycaps) is scaled down to EMOJI_CELL and packed into sheets of lossy WebP
(`emoji/sheet-NN.webp`), with `emoji/index.json` giving each sequence its cell; the PDF writer draws them as
inline images (renderer/fonts/emoji.py).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from fontTools import subset
from fontTools.merge import Merger
from fontTools.ttLib import TTFont

NOTO = Path("/usr/share/fonts/truetype/noto")
DROID = Path("/usr/share/fonts/truetype/droid")
NANUM = Path("/usr/share/fonts/truetype/nanum")
COLOR_EMOJI = NOTO / "NotoColorEmoji.ttf"
RENAMED = {"DocjobsHangul-Regular.ttf": "Docjobs Hangul"}
# reportlab shapes a word (text between spaces) in one font: a Hebrew or Thai word followed by a colon or
# digits must find them in its own face. These get Noto Sans' ASCII, Latin-1 punctuation and general
# punctuation merged in (Arabic and Devanagari have their own).
WITH_PUNCTUATION = {"NotoSansHebrew-Regular.ttf", "NotoSansThai-Regular.ttf"}
PUNCTUATION = "U+0020-007E,U+00A0-00BF,U+2010-2027,U+2030-205E"
OUT = Path(__file__).resolve().parent.parent / "services" / "renderer" / "fonts"

# (source, shipped name, unicode ranges to keep or "*" for all)
LATIN = "U+0000-024F,U+0250-02FF,U+0300-036F,U+0370-03FF,U+0400-052F,U+1C80-1C8F,U+1E00-1FFF,U+2000-206F," \
        "U+20A0-20CF,U+2100-218F,U+2190-21FF,U+2200-22FF,U+2C60-2C7F,U+A640-A69F,U+A720-A7FF,U+FB00-FB06,U+FEFF," \
        "U+FFFD"
FONTS = [
    (NOTO / "NotoSans-Regular.ttf", "NotoSans-Regular.ttf", LATIN),
    (NOTO / "NotoSans-Bold.ttf", "NotoSans-Bold.ttf", LATIN),
    (NOTO / "NotoSans-Italic.ttf", "NotoSans-Italic.ttf", LATIN),
    (NOTO / "NotoSans-BoldItalic.ttf", "NotoSans-BoldItalic.ttf", LATIN),
    (NOTO / "NotoSansArabic-Regular.ttf", "NotoSansArabic-Regular.ttf", "*"),
    (NOTO / "NotoSansHebrew-Regular.ttf", "NotoSansHebrew-Regular.ttf", "*"),
    (NOTO / "NotoSansDevanagari-Regular.ttf", "NotoSansDevanagari-Regular.ttf", "*"),
    (NOTO / "NotoSansThai-Regular.ttf", "NotoSansThai-Regular.ttf", "*"),
    (NOTO / "NotoSansSymbols2-Regular.ttf", "NotoSansSymbols2-Regular.ttf", "*"),
    (DROID / "DroidSansFallbackFull.ttf", "DroidSansFallbackFull.ttf", "*"),
    # reportlab draws Droid's Hangul syllables (composite glyphs) as empty boxes: Korean from Nanum Gothic.
    # Its OFL reserves the name "NanumGothic" for the original, so the subset is renamed.
    (NANUM / "NanumGothic.ttf", "DocjobsHangul-Regular.ttf",
     "U+0020-007E,U+00A0,U+1100-11FF,U+3000-303F,U+3130-318F,U+AC00-D7AF,U+FF01-FF5E"),
]


def build(source: Path, target: Path, unicodes: str) -> None:
    options = subset.Options()
    options.layout_features = ["*"]
    options.hinting = False
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.glyph_names = False
    options.drop_tables += ["DSIG"]
    font = TTFont(str(source), recalcTimestamp=False)  # the same bytes from the same sources
    subsetter = subset.Subsetter(options)
    if unicodes == "*":
        subsetter.populate(unicodes=font.getBestCmap().keys())
    else:
        subsetter.populate(unicodes=subset.parse_unicodes(unicodes))
    subsetter.subset(font)
    if (family := RENAMED.get(target.name)) is not None:
        name = font["name"]
        for record in list(name.names):
            if record.nameID in (1, 4, 16, 21):
                name.setName(family, record.nameID, record.platformID, record.platEncID, record.langID)
            elif record.nameID in (3, 6, 20):
                name.setName(family.replace(" ", "") + "-Regular", record.nameID, record.platformID,
                             record.platEncID, record.langID)
    font.save(str(target))
    if target.name in WITH_PUNCTUATION:
        punctuation = target.with_suffix(".punctuation")
        build(NOTO / "NotoSans-Regular.ttf", punctuation, PUNCTUATION)
        merged = Merger().merge([str(target), str(punctuation)])
        merged["head"].created = merged["head"].modified = font["head"].modified
        merged.recalcTimestamp = False
        merged.save(str(target))
        punctuation.unlink()


# 32 pixels high: about 200 dpi at 11 pt, the body text's size (a heading's emoji is softer); the whole set
# is about 2 MB as lossy WebP at EMOJI_QUALITY, against 5.9 MB lossless.
EMOJI_CELL = (34, 32)  # the font's bitmaps are 136 x 128
EMOJI_COLUMNS = 16
EMOJI_PER_SHEET = EMOJI_COLUMNS * 16
EMOJI_QUALITY = 80
# Code points of the font that are not emoji of their own: a keycap's parts, joiners, selectors, tags.
NOT_EMOJI = {0x0000, 0x000D, 0x0020, 0x200D, 0x20E3, 0xFE0F, *range(0xE0020, 0xE0080)}


def emoji_sequences(font: TTFont) -> dict[tuple[int, ...], str]:
    """Each sequence of code points that the font draws as one emoji, and its glyph (its cmap for single
    code points, its ligatures for sequences; U+FE0F left out, as the renderer leaves it out when it looks a
    sequence up)."""
    cmap = font.getBestCmap()
    code_of: dict[str, int] = {}
    for code, glyph in sorted(cmap.items()):
        code_of.setdefault(glyph, code)
    sequences: dict[tuple[int, ...], str] = {(code,): glyph for code, glyph in sorted(cmap.items())
                                             if code not in NOT_EMOJI}
    for lookup in font["GSUB"].table.LookupList.Lookup:
        if lookup.LookupType != 4:
            continue
        for table in lookup.SubTable:
            for first, ligatures in sorted(table.ligatures.items()):
                for ligature in ligatures:
                    codes = tuple(code_of[g] for g in (first, *ligature.Component) if code_of[g] != 0xFE0F)
                    sequences.setdefault(codes, ligature.LigGlyph)
    return sequences


def build_emoji(target: Path) -> None:
    from PIL import Image

    font = TTFont(str(COLOR_EMOJI))
    strike = font["CBDT"].strikeData[0]
    sequences = {codes: glyph for codes, glyph in emoji_sequences(font).items() if glyph in strike}
    drawn = set(sequences.values())
    glyphs = [g for g in font.getGlyphOrder() if g in drawn]
    cell_of = {g: n for n, g in enumerate(glyphs)}
    target.mkdir(exist_ok=True)
    for old in target.glob("sheet-*.webp"):
        old.unlink()
    width, height = EMOJI_CELL
    for start in range(0, len(glyphs), EMOJI_PER_SHEET):
        chunk = glyphs[start: start + EMOJI_PER_SHEET]
        rows = -(-len(chunk) // EMOJI_COLUMNS)
        sheet = Image.new("RGBA", (EMOJI_COLUMNS * width, rows * height))
        for n, glyph in enumerate(chunk):
            bitmap = Image.open(io.BytesIO(strike[glyph].imageData)).convert("RGBA")
            sheet.paste(bitmap.resize(EMOJI_CELL, Image.Resampling.LANCZOS),
                        ((n % EMOJI_COLUMNS) * width, (n // EMOJI_COLUMNS) * height))
        sheet.save(target / f"sheet-{start // EMOJI_PER_SHEET:02d}.webp", "WEBP", quality=EMOJI_QUALITY, method=6)
    Image.new("RGBA", (1, 1)).save(target / "blank.png")  # holds an emoji's place in a line
    index = {"-".join(f"{c:x}" for c in codes): cell_of[glyph] for codes, glyph in sorted(sequences.items())}
    (target / "index.json").write_text(json.dumps(
        {"cell": list(EMOJI_CELL), "columns": EMOJI_COLUMNS, "perSheet": EMOJI_PER_SHEET, "emoji": index},
        separators=(",", ":"), sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"emoji: {len(index)} sequences, {len(glyphs)} images, {size / 1024:.0f} KiB")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for source, name, unicodes in FONTS:
        if not source.exists():
            print(f"missing {source}: apt-get install fonts-noto-core fonts-droid-fallback fonts-nanum",
                  file=sys.stderr)
            return 1
        build(source, OUT / name, unicodes)
        print(f"{name}: {(OUT / name).stat().st_size / 1024:.0f} KiB")
    if not COLOR_EMOJI.exists():
        print(f"missing {COLOR_EMOJI}: apt-get install fonts-noto-color-emoji", file=sys.stderr)
        return 1
    build_emoji(OUT / "emoji")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
