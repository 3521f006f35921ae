"""Rebuild the fonts shipped in services/renderer/fonts/ from Debian's font packages.

The renderer embeds these in every spec-mode PDF, and measures what they can draw for every format's
warnings. They are committed (a renderer never fetches a font, and `make run` needs no apt-get), so this
script runs only when the set changes, on a Debian machine with the packages below installed:

    apt-get install fonts-noto-core fonts-droid-fallback fonts-nanum
    .venv/bin/pip install fonttools==4.68.0
    .venv/bin/python scripts/build_fonts.py

Each font is TrueType (reportlab embeds TrueType outlines only: Debian's Noto CJK is CFF, hence Droid Sans
Fallback for Chinese, Japanese and Korean) and is written without its hinting (PDF viewers do not use it)
and with every OpenType layout feature (Arabic joining and Indic conjuncts need them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.merge import Merger
from fontTools.ttLib import TTFont

NOTO = Path("/usr/share/fonts/truetype/noto")
DROID = Path("/usr/share/fonts/truetype/droid")
NANUM = Path("/usr/share/fonts/truetype/nanum")
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


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for source, name, unicodes in FONTS:
        if not source.exists():
            print(f"missing {source}: apt-get install fonts-noto-core fonts-droid-fallback fonts-nanum",
                  file=sys.stderr)
            return 1
        build(source, OUT / name, unicodes)
        print(f"{name}: {(OUT / name).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
