"""What a parsed JSON document may hold to be stored and passed on: the check the gateway makes on a
request body and the jobstore on every payload and result.

Python's json module reads things that Postgres' jsonb refuses (a NUL character, a lone surrogate such
as "\\ud800", NaN and Infinity, a number beyond 1.8e308 read as infinity) and nesting as deep as its
recursion limit. The decision is made on the parsed value, never on the text: the six characters
`\\u0000` in a string (code that removes them, say) are legitimate text.
"""

from __future__ import annotations

import math
import re
from typing import TypeAlias

MAX_DEPTH = 64
MAX_PLACE_CHARS = 200
SURROGATE = re.compile("[\ud800-\udfff]")

# Where a value sits: (its parent's trail, its key or index), up to the top (None).
Trail: TypeAlias = tuple["Trail", str | int] | None


def problem(value: object, root: str = "") -> tuple[str, str] | None:
    """(where, what) for the first thing in value that cannot be stored, or None. `where` is a path
    such as `spec.sheets[0].rows[2][1]` (under `root`), `what` says what is wrong there."""
    if _fine(value):
        return None
    stack: list[tuple[object, int, Trail]] = [(value, 0, None)]  # the same walk, noting the place
    while stack:
        item, depth, trail = stack.pop()
        if depth > MAX_DEPTH:
            return place(trail, root), f"nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            text = text_problem(item)
            if text:
                return place(trail, root), text
        elif isinstance(item, float):
            if not math.isfinite(item):
                return place(trail, root), f"{item!r} is no JSON number (NaN, Infinity or beyond 1.8e308)"
        elif isinstance(item, dict):
            for key, child in item.items():
                text = text_problem(key)
                if text:
                    return place(trail, root), f"a key {text}"
                stack.append((child, depth + 1, (trail, key)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, (trail, i)) for i, child in enumerate(item))
    return None  # pragma: no cover - _fine said there was a problem


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored (as jsonb, or in a protobuf string), or None."""
    if "\x00" in text:
        return "contains the NUL character (U+0000), which cannot be stored"
    if not text.isascii() and SURROGATE.search(text):
        return "contains a lone surrogate (U+D800 to U+DFFF), which is no character"
    return None


def place(trail: Trail, root: str = "") -> str:
    parts: list[str | int] = []
    while trail is not None:
        trail, part = trail
        parts.append(part)
    out = root
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else f".{part[:80]}" if out else part[:80]
        if len(out) > MAX_PLACE_CHARS:  # as deep as 64 levels of long keys: the start says enough
            return out[:MAX_PLACE_CHARS] + "..."
    return out


def _fine(value: object) -> bool:
    """The common case, fast: one level at a time, with no note of where anything is (a 4 MiB spec is
    walked in a third of the time it takes to parse)."""
    level = [value]
    for _ in range(MAX_DEPTH + 1):
        below: list[object] = []
        for item in level:
            if isinstance(item, str):
                if text_problem(item):
                    return False
            elif isinstance(item, dict):
                if any(text_problem(key) for key in item):
                    return False
                below.extend(item.values())
            elif isinstance(item, list):
                below.extend(item)
            elif isinstance(item, float) and not math.isfinite(item):
                return False
        if not below:
            return True
        level = below
    return False
