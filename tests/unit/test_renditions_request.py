"""What renditions a job asks for, what a renderer lacks to make them, and how a box's PNG is judged
(renderer/renditions.py), without a box."""

from __future__ import annotations

import struct
import zlib

import pytest

from renderer.renditions import INSTALL_OFFICE, Renditions, png_size, requested

LIMITS = {"timeout_s": 60.0, "cpu_s": 30, "memory_mb": 1024, "file_mb": 100, "processes": 16}


def test_the_renditions_asked_come_in_one_order() -> None:
    assert requested({"spec": {}}) == ()
    assert requested({"spec": {}, "renditions": None}) == ()
    assert requested({"renditions": ["thumbnail", "pdf"]}) == ("pdf", "thumbnail")
    assert requested({"renditions": []}) == ()


@pytest.mark.parametrize("value", ["pdf", ["pdf", "pdf"], ["png"], [1], {"pdf": True}, [None]])
def test_a_bad_renditions_value_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ValueError, match=r"^renditions: "):
        requested({"renditions": value})


def test_without_libreoffice_office_documents_cannot_have_renditions() -> None:
    bare = Renditions(LIMITS, LIMITS, which=lambda _name: None)
    bare.bwrap = bare.pdfium = True
    assert bare.unavailable("presentation", ("thumbnail",)) == INSTALL_OFFICE
    assert "libreoffice-writer-nogui" in INSTALL_OFFICE
    assert bare.unavailable("pdf", ("pdf", "thumbnail")) is None  # pdfium alone draws a PDF
    assert bare.unavailable("document", ()) is None  # nothing asked, nothing lacking
    bare.bwrap = False
    assert "bubblewrap" in str(bare.unavailable("pdf", ("thumbnail",)))


def png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + b"IHDR" + header
            + struct.pack(">I", zlib.crc32(b"IHDR" + header)))


def test_a_png_size_is_read_from_its_header() -> None:
    assert png_size(png(800, 1036)) == (800, 1036)
    for bad in (b"", b"%PDF-1.7" + bytes(30), png(800, 600)[:20], b"\x89PNG\r\n\x1a\n" + bytes(16)):
        with pytest.raises(ValueError):
            png_size(bad)
