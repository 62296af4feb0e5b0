"""A small, valid instance of a JSON Schema (or a Gemini `responseSchema`), deterministically.

Covers what structured-output schemas use: types (also Gemini's upper-case ones and
`nullable`), enum/const, properties/required, items/prefixItems, min/max bounds, common string
formats, local `$ref`s, anyOf/oneOf/allOf. A `pattern` is tried against a few candidates only.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

# Given (property name, its schema), a string the caller wants there, or None for the default.
StringChooser = Callable[[str, Mapping[str, Any]], str | None]
_MAX_DEPTH = 12


def sample_instance(
    schema: Any, *, seed_text: str = "", choose: StringChooser | None = None
) -> Any:
    """Build an instance of `schema`; strings mention `seed_text` so answers follow the prompt."""
    sampler = _Sampler(schema, seed_text, choose)
    return sampler.sample(schema, "value", 0)


class _Sampler:
    def __init__(self, root: Any, seed_text: str, choose: StringChooser | None) -> None:
        self._root = root
        first_line = next((line.strip() for line in seed_text.splitlines() if line.strip()), "")
        self._excerpt = first_line[:48]
        self._digest = hashlib.sha256(seed_text.encode()).hexdigest()
        self._choose = choose

    def sample(self, schema: Any, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return self._string(name, {})
        if depth > _MAX_DEPTH:
            return None
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for keyword in ("anyOf", "oneOf"):
            options = schema.get(keyword)
            if isinstance(options, list) and options:
                non_null = [o for o in options if _type_of(self._resolve(o)) != "null"]
                return self.sample((non_null or options)[0], name, depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.sample(_merge_all_of(schema, self._resolve), name, depth + 1)
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "integer":
            return int(_number(schema, integer=True))
        if kind == "number":
            return _number(schema, integer=False)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self._string(name, schema)

    def _resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and seen < 20:
            schema = _pointer(self._root, schema["$ref"])
            seen += 1
        return schema

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        # Every declared property, not just the required ones: still valid, and more useful.
        return {
            key: self.sample(sub, key, depth + 1)
            for key, sub in properties.items()
            if isinstance(key, str)
        }

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft-07 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        lowest = _as_int(schema.get("minItems")) or 0
        highest = _as_int(schema.get("maxItems"))
        count = max(lowest, 1, len(prefix) if isinstance(prefix, list) else 0)
        if highest is not None:
            count = min(count, highest)
        singular = name[:-1] if name.endswith("s") and len(name) > 3 else name
        values = []
        for index in range(count):
            if isinstance(prefix, list) and index < len(prefix):
                values.append(self.sample(prefix[index], singular, depth + 1))
            else:
                values.append(self.sample(items if items is not None else {}, singular, depth + 1))
        return values

    def _string(self, name: str, schema: Mapping[str, Any]) -> str:
        chosen = self._choose(name, schema) if self._choose else None
        if chosen is None:
            chosen = self._default_string(name, schema)
        return _fit_length(chosen, schema)

    def _default_string(self, name: str, schema: Mapping[str, Any]) -> str:
        fmt = str(schema.get("format", "")).lower()
        if fmt == "email":
            return "contact@example.com"
        if fmt == "date-time":
            return "2026-01-01T09:00:00Z"
        if fmt == "date":
            return "2026-01-01"
        if fmt == "time":
            return "09:00:00"
        if fmt in ("uri", "url", "uri-reference"):
            return "https://example.com/"
        if fmt == "uuid":
            return str(uuid.UUID(self._digest[:32]))
        label = name.replace("_", " ").strip() or "value"
        text = f"{label}: {self._excerpt}" if self._excerpt else f"sample {label}"
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            for candidate in (text, label, "sample", "a", "A", "0", "a1", "A1", self._digest[:8]):
                try:
                    if re.search(pattern, candidate):
                        return candidate
                except re.error:
                    break
        return text


def _type_of(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "string"
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [str(k).lower() for k in kind if str(k).lower() != "null"]
        kind = non_null[0] if non_null else "null"
    if isinstance(kind, str) and kind:
        return kind.lower()  # Gemini's responseSchema spells types in upper case
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merge_all_of(schema: Mapping[str, Any], resolve: Callable[[Any], Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        part = resolve(part)
        if not isinstance(part, Mapping):
            continue
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return {}
    return node


def _number(schema: Mapping[str, Any], *, integer: bool) -> float:
    """Zero when allowed, else the nearest value inside the bounds."""
    value = 0.0
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(low) and value < low:
        value = float(low)
    if _is_number(above) and value <= above:
        value = math.floor(above) + 1.0 if integer else above + 0.5
    if _is_number(high) and value > high:
        value = float(high)
    if _is_number(below) and value >= below:
        value = math.ceil(below) - 1.0 if integer else below - 0.5
    if integer:
        value = float(math.ceil(value))
    multiple = schema.get("multipleOf")
    if _is_number(multiple) and multiple > 0:
        value = multiple * math.ceil(value / multiple)
    return value


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fit_length(text: str, schema: Mapping[str, Any]) -> str:
    shortest = _as_int(schema.get("minLength")) or 0
    longest = _as_int(schema.get("maxLength"))
    if len(text) < shortest:
        text = text + "." * (shortest - len(text))
    if longest is not None and len(text) > longest:
        text = text[:longest]
    return text


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():  # Gemini's responseSchema sends "3"
        return int(value)
    return None
