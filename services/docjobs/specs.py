"""The declarative specs: one JSON Schema per job type (`schemas/*.json`, published in docs/schemas/),
validation with errors that name the field.

Shared by the gateway, which validates a request before anything is enqueued, and the renderer, which
validates again before it renders; it imports no document library.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs
from referencing import Registry, Resource

from .jobtypes import JOB_TYPES

SCHEMA_BASE = "https://docjobs.dev/schemas/"
DISCRIMINATORS = ("type", "layout")


class SpecError(ValueError):
    """The spec does not describe a document we can render. `path` locates the problem (e.g.
    "spec.sheets[0].rows[2][1]"); the message says what is wrong there."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def schema_names() -> list[str]:
    return [*JOB_TYPES, "common"]


@cache
def _raw(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")
    raw: dict[str, Any] = json.loads(text)
    return raw


def schema(job_type: str) -> dict[str, Any]:
    return _raw(job_type)


@cache
def _validator(job_type: str) -> jsonschema.protocols.Validator:
    registry: Registry = Registry().with_resources(
        (SCHEMA_BASE + f"{name}.json", Resource.from_contents(_raw(name))) for name in schema_names())
    cls = jsonschema.validators.validator_for(_raw(job_type))
    return cls(_raw(job_type), registry=registry)


@cache
def _fast_validator(job_type: str) -> jsonschema_rs.Validator:
    registry = jsonschema_rs.Registry([(SCHEMA_BASE + f"{name}.json", _raw(name)) for name in schema_names()])
    return jsonschema_rs.validator_for(_raw(job_type), registry=registry)


def format_path(parts: Any, root: str = "spec") -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(job_type: str, spec: Any, root: str = "spec") -> None:
    """Raise SpecError for the most relevant problem of spec, if any."""
    if job_type not in JOB_TYPES:
        raise SpecError("documentType", f"unknown document type {job_type!r}; one of {', '.join(JOB_TYPES)}")
    # The Rust validator answers yes or no hundreds of times faster (a 50,000-row spreadsheet: 8 ms
    # against 6 s); only a spec that fails is explained, by the Python one, whose errors read better.
    if _fast_validator(job_type).is_valid(spec):
        return
    errors = list(_validator(job_type).iter_errors(spec))
    # A block's or slide's kind decides which other fields it may have: an unknown kind is the error
    # to report, not the fields that would only be wrong for the kinds we do know.
    kinds = [e for e in errors if e.validator == "enum" and e.absolute_path and e.absolute_path[-1] in DISCRIMINATORS]
    error = kinds[0] if kinds else jsonschema.exceptions.best_match(errors)
    if error is None:
        return
    # For a oneOf over block kinds, the deepest matching alternative says more than "not valid under".
    while error.context:
        deeper = jsonschema.exceptions.best_match(error.context)
        if deeper is None:
            break
        error = deeper
    raise SpecError(format_path(error.absolute_path, root), _message(error))


def _message(error: jsonschema.ValidationError) -> str:
    message = error.message
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance
    # An image's base64 runs to megabytes: jsonschema's own message quotes it whole, and cut to length
    # it would no longer say what is wrong. Patterns say more by what they stand for than by their regex.
    if isinstance(instance, str) and error.validator in ("maxLength", "pattern"):
        shown = repr(instance if len(instance) <= 40 else instance[:37] + "...")
        if error.validator == "maxLength":
            message = f"{shown} is too long ({len(instance):,} characters; at most {schema['maxLength']:,})"
            if schema.get("contentEncoding") == "base64":
                message += ": an image may be at most 2 MB"
        elif schema.get("contentEncoding") == "base64":
            message = f"{shown} is not base64 (the standard alphabet, padded, without line breaks)"
        elif "description" in schema:
            message = f"{shown} is not valid here: {schema['description']}"
    if len(message) > 300:
        message = message[:297] + "..."
    return message
