"""Hypothesis strategies for instances of the document JSON Schemas (the subset of keywords they use:
type, enum, const, properties/required, items, min/maxItems, min/maxLength, minimum/maximum, pattern,
oneOf, $ref). Sizes are kept small: the point is variety of shape and content, not volume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

MAX_ITEMS = 4
MAX_TEXT = 40


Load = Callable[[str], dict[str, Any]]


def from_schema(schema: dict[str, Any], load: Load) -> st.SearchStrategy[Any]:
    """`load(name)` returns the schema document a reference like `common.json#/$defs/x` names."""
    return _strategy(schema, schema, load)


def _strategy(node: dict[str, Any], root: dict[str, Any], load: Load) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        document, _, pointer = node["$ref"].partition("#")
        target = load(document.removesuffix(".json")) if document else root
        name = pointer.rsplit("/", 1)[1]
        return st.deferred(lambda: _strategy(target["$defs"][name], target, load))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "oneOf" in node:  # each alternative inherits what the parent says besides its own properties
        parent = {k: v for k, v in node.items() if k not in ("oneOf", "properties", "required")}
        return st.one_of([_strategy({**parent, **option}, root, load) for option in node["oneOf"]])
    types = node.get("type", ["string", "integer", "boolean", "null"])
    if isinstance(types, list):
        return st.one_of([_strategy({**node, "type": t}, root, load) for t in types])
    if types == "object":
        required = set(node.get("required", []))
        properties = node.get("properties", {})
        fixed = {k: _strategy(v, root, load) for k, v in properties.items() if k in required}
        optional = {k: _strategy(v, root, load) for k, v in properties.items() if k not in required}
        return st.fixed_dictionaries(fixed, optional=optional)
    if types == "array":
        low = node.get("minItems", 0)
        high = min(node.get("maxItems", MAX_ITEMS), max(low, MAX_ITEMS))
        return st.lists(_strategy(node.get("items", {}), root, load), min_size=low, max_size=high)
    if types == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True)
        low = node.get("minLength", 0)
        return st.text(min_size=low, max_size=min(node.get("maxLength", MAX_TEXT), max(low, MAX_TEXT)))
    if types == "integer":
        return st.integers(min_value=node.get("minimum", -10**6), max_value=node.get("maximum", 10**6))
    if types == "number":
        return st.floats(min_value=node.get("minimum", -1e9), max_value=node.get("maximum", 1e9),
                         allow_nan=False, allow_infinity=False)
    if types == "boolean":
        return st.booleans()
    if types == "null":
        return st.none()
    raise ValueError(f"no strategy for {node}")
