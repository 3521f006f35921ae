"""The spec contract as the render sandbox imports it: docjobs.specs (the schemas and validation) and
docjobs.jobtypes (names, file extensions, content types) live in the shared package, with the gateway.
The rest of the renderer imports them from there."""

from __future__ import annotations

from docjobs.jobtypes import CONTENT_TYPES, EXTENSIONS, JOB_TYPES
from docjobs.specs import SpecError, validate

__all__ = ["CONTENT_TYPES", "EXTENSIONS", "JOB_TYPES", "SpecError", "validate"]
