"""docjobs.jsonvalues: what a parsed JSON value may hold to be stored (jsonb) and passed on (protobuf
strings), decided on the value, never on its text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from docjobs import jsonvalues

# A line of Python that removes the escape sequence `\u0000` from a string: legitimate code, and text.
LINE = 's = s.replace("\\\\u0000", "")'


@pytest.mark.parametrize(("value", "where", "what"), [
    ({"a": "\x00"}, "a", "NUL"),
    ({"a": ["ok", {"b": "x\ud800"}]}, "a[1].b", "surrogate"),
    ({"a": {"\x00key": 1}}, "a", "a key contains the NUL"),
    ({"n": [1, float("nan")]}, "n[1]", "nan"),
    ({"n": float("-inf")}, "n", "-inf"),
    ({"deep": json.loads("[" * 70 + "]" * 70)}, "deep" + "[0]" * 64, "nested more than 64 levels"),
    (json.loads("[" * 66 + "]" * 66), "[0]" * 65, "nested more than 64 levels"),
    ({"k" * 100: {"k" * 100: {"k" * 100: "\x00"}}}, "k" * 80 + "." + "k" * 80 + "." + "k" * 38 + "...", "NUL"),
])
def test_what_cannot_be_stored_is_found_and_placed(value: Any, where: str, what: str) -> None:
    found = jsonvalues.problem(value)
    assert found is not None
    assert found[0] == where and what in found[1], found


@pytest.mark.parametrize("value", [
    {"code": LINE}, {"text": "\\u0000 \\ud800 NaN Infinity"}, json.loads('{"emoji": "\\ud83d\\ude00"}'),
    {"big": 10**300, "small": -(10**300), "float": 1.7e308, "tiny": 5e-324},
    json.loads("[" * 65 + "]" * 65), {"arabic": "مرحبا", "chinese": "你好", "controls": "\t\n\r\x1f"},
])
def test_what_can_be_stored_passes(value: Any) -> None:
    assert jsonvalues.problem(value) is None


def test_the_refusal_names_the_place_under_a_root() -> None:
    assert jsonvalues.problem({"rows": [[1, "\x00"]]}, "spec") == (
        "spec.rows[0][1]", "contains the NUL character (U+0000), which cannot be stored")
