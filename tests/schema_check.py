"""A JSON Schema checker for the subset sqserve's grammars support (the
`jsonschema` package is not a test dependency): type, properties, required,
additionalProperties, items, minItems, maxItems, enum, const, anyOf, oneOf,
allOf, $ref (local JSON pointers), minLength, maxLength. Returns a list of
problems (empty: valid). Written independently of the server's converter so
the two can disagree.
"""

from __future__ import annotations

from typing import Any, List

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _resolve(doc: Any, ref: str) -> Any:
    assert ref.startswith("#"), ref
    cur = doc
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


def problems(value: Any, schema: Any, doc: Any = None, path: str = "$") -> List[str]:
    doc = schema if doc is None else doc
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{path}: schema false"]
    out: List[str] = []
    if "$ref" in schema:
        out += problems(value, _resolve(doc, schema["$ref"]), doc, path)
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_TYPES[x](value) for x in types):
            return out + [f"{path}: {value!r} is not of type {t}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in enum {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != const {schema['const']!r}")
    for key in ("anyOf", "oneOf"):
        if key in schema:
            ok = [s for s in schema[key] if not problems(value, s, doc, path)]
            if not ok:
                out.append(f"{path}: matches no branch of {key}")
            elif key == "oneOf" and len(ok) > 1:
                out.append(f"{path}: matches {len(ok)} branches of oneOf")
    for s in schema.get("allOf", []):
        out += problems(value, s, doc, path)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                out.append(f"{path}: missing required '{k}'")
        ap = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += problems(v, props[k], doc, f"{path}.{k}")
            elif ap is False:
                out.append(f"{path}: extra property '{k}'")
            elif isinstance(ap, dict):
                out += problems(v, ap, doc, f"{path}.{k}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{path}: fewer than minItems")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path}: more than maxItems")
        if "items" in schema:
            for i, v in enumerate(value):
                out += problems(v, schema["items"], doc, f"{path}[{i}]")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{path}: shorter than minLength")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path}: longer than maxLength")
    return out
