"""Images in specs (image blocks, slide images, sheet images, a theme's logo): decoded from base64 and
checked here, inside the sandboxed render, before any document library sees the bytes.

Nothing is ever fetched: an image is its bytes in the spec. An image may be at most 2 MB decoded and
25 megapixels; its first bytes must be the signature of the media type it claims; and it must decode
whole. The pixel count is read from the header before anything is decompressed, so a small file that
claims a huge canvas (a decompression bomb) is refused without being inflated; Pillow's own limits
(its bomb check, its cap on compressed text chunks) stay on as a second line.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage

from docjobs.specs import SpecError

MAX_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 25_000_000
SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}
CM_PER_PX = 2.54 / 96  # an image without a size of its own is shown at 96 pixels per inch

# Pillow warns between MAX_IMAGE_PIXELS and twice that and raises above; ours is checked first and
# is the tighter one, this keeps Pillow's from ever being the only guard.
PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class Picture:
    """A checked image: its bytes as given, its media type and its size in pixels."""

    data: bytes
    media_type: str
    width_px: int
    height_px: int

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.data)

    def as_png(self) -> Picture:
        """The image re-encoded as PNG (lossless; CMYK made RGB), for a library that cannot parse the file
        as sent (python-docx reads only JPEGs with a JFIF or Exif header)."""
        with PILImage.open(self.stream()) as image:
            converted = image if image.mode in ("RGB", "RGBA", "L", "LA", "P") else image.convert("RGB")
            out = io.BytesIO()
            converted.save(out, "PNG")
        return Picture(out.getvalue(), "image/png", self.width_px, self.height_px)

    def size_cm(self, width_cm: float | None, max_width_cm: float, max_height_cm: float | None = None
                ) -> tuple[float, float]:
        """The width and height to show it at: the width asked (else its own at 96 dpi), no wider than
        max_width_cm nor higher than max_height_cm, in its own proportions."""
        width = width_cm if width_cm is not None else self.width_px * CM_PER_PX
        width = min(width, max_width_cm)
        height = width * self.height_px / self.width_px
        if max_height_cm is not None and height > max_height_cm:
            width, height = width * max_height_cm / height, max_height_cm
        return width, height


def load(spec: dict[str, Any], where: str) -> Picture:
    """The image an image object of the spec holds ({data, mediaType, ...}), checked; SpecError naming
    where (e.g. "spec.blocks[3]") and the field if it is not one we embed."""
    media_type = spec["mediaType"]
    try:
        data = base64.b64decode(spec["data"], validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(f"{where}.data", "is not base64 (the standard alphabet, padded, without line breaks)") from None
    if len(data) > MAX_BYTES:
        raise SpecError(f"{where}.data", f"is {len(data):,} bytes decoded; an image may be at most {MAX_BYTES:,}")
    if not data.startswith(SIGNATURES[media_type]):
        actual = next((t for t, sig in SIGNATURES.items() if data.startswith(sig)), None)
        found = f"the data is {actual}" if actual else "the data is neither a PNG nor a JPEG file"
        raise SpecError(f"{where}.mediaType", f"says {media_type} but {found}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=[PIL_FORMATS[media_type]]) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise SpecError(f"{where}.data", f"has no pixels ({width}x{height})")
                if width * height > MAX_PIXELS:
                    raise SpecError(f"{where}.data", f"is {width}x{height} pixels ({width * height:,}); an image "
                                                     f"may have at most {MAX_PIXELS:,}")
                image.load()  # the whole image decodes: a truncated or corrupt file is refused here
    except SpecError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise SpecError(f"{where}.data", f"is refused as a decompression bomb (at most {MAX_PIXELS:,} pixels): "
                                         f"{exc}") from None
    except Exception as exc:
        raise SpecError(f"{where}.data", f"is not a readable {media_type} image: {str(exc)[:200]}") from None
    return Picture(data, media_type, width, height)


class Pictures:
    """The checked images of one spec, each decoded once (a logo is shown on every page)."""

    def __init__(self) -> None:
        self._seen: dict[str, Picture] = {}

    def get(self, spec: dict[str, Any], where: str) -> Picture:
        key = spec["mediaType"] + ":" + spec["data"]
        if key not in self._seen:
            self._seen[key] = load(spec, where)
        return self._seen[key]
