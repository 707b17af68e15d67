"""Deterministic JSON-schema instance generation.

A real SGLang server constrains decoding with a grammar compiled from the schema, so
every completed ``json_schema`` answer is an instance of that schema. The emulator has
no grammar engine; instead it builds one instance directly from the schema with a seeded
RNG, which gives the same guarantee for the subset of JSON Schema that LLM clients use
(pydantic's ``model_json_schema()`` output included).

Anything the generator cannot make sense of raises :class:`SchemaError`; the server turns
that into SGLang's "Invalid grammar request" failure, as a grammar compile error would.
``pattern`` is the one notable keyword that is accepted but not honoured.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from arkq.errors import ArkqError

__all__ = ["SchemaError", "check_schema", "generate_instance"]

JSON_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})

_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "fjord", "gamma", "harbor", "iris", "juniper",
    "kelp", "lumen", "maple", "nova", "onyx", "pixel", "quartz", "raven", "sierra", "tundra",
    "umber", "vivid", "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip

# Nesting beyond this stops adding optional content so recursive models terminate.
_MAX_DEPTH = 12
_UNBOUNDED_SPAN = 100


class SchemaError(ArkqError, ValueError):
    """The schema is malformed or cannot be satisfied."""


def check_schema(schema: Any) -> None:
    """Raise :class:`SchemaError` if no instance can be produced for ``schema``.

    Generating one instance exercises every branch the server will later need, so it is
    the cheapest complete validity check available without a grammar compiler.
    """
    generate_instance(schema, random.Random(0))


def generate_instance(schema: Any, rng: random.Random) -> Any:
    """Return a JSON-compatible value that validates against ``schema``."""
    if not isinstance(schema, Mapping) and not isinstance(schema, bool):
        raise SchemaError(f"schema must be an object or a boolean, not {type(schema).__name__}")
    return _Generator(schema, rng).build(schema, 0)


class _Generator:
    """One generation run: holds the root (for ``$ref``) and the RNG."""

    def __init__(self, root: Mapping[str, Any] | bool, rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    # -- dispatch ---------------------------------------------------------------------

    def build(self, schema: Any, depth: int) -> Any:
        if schema is True:
            return self._any(depth)
        if schema is False:
            raise SchemaError("the schema `false` has no instances")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"subschema must be an object or a boolean, not {type(schema).__name__}")
        if depth > _MAX_DEPTH * 4:
            raise SchemaError("schema recursion never terminates")

        schema = self._flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            choices = schema["enum"]
            if not isinstance(choices, list) or not choices:
                raise SchemaError("`enum` must be a non-empty array")
            return self._rng.choice(choices)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.build(self._pick_branch(schema, key, depth), depth + 1)

        kind = self._pick_type(schema)
        return self._BUILDERS[kind](self, schema, depth)

    def _flatten(self, schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
        """Resolve ``$ref`` and fold ``allOf`` so the rest only sees plain keywords."""
        seen = 0
        while "$ref" in schema or "allOf" in schema:
            seen += 1
            if seen > 64:
                raise SchemaError("circular `$ref`")
            if "$ref" in schema:
                target = self._resolve(schema["$ref"])
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = _merge(target, rest) if rest else target
            else:
                parts = schema["allOf"]
                if not isinstance(parts, list) or not parts:
                    raise SchemaError("`allOf` must be a non-empty array")
                merged: Mapping[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
                for part in parts:
                    if part is True:
                        continue
                    if not isinstance(part, Mapping):
                        raise SchemaError("`allOf` entries must be schemas")
                    merged = _merge(merged, self._flatten(part, depth))
                schema = merged
        return schema

    def _resolve(self, ref: Any) -> Mapping[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"unsupported `$ref`: {ref!r}")
        node: Any = self._root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaError(f"unresolvable `$ref`: {ref}")
        if node is True:
            return {}
        if not isinstance(node, Mapping):
            raise SchemaError(f"`$ref` {ref} does not point at a schema")
        return node

    def _pick_branch(self, schema: Mapping[str, Any], key: str, depth: int) -> Any:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise SchemaError(f"`{key}` must be a non-empty array")
        rest = {k: v for k, v in schema.items() if k not in (key, "discriminator")}
        if depth >= _MAX_DEPTH:
            # Deep in a recursive structure: prefer the branch that stops recursing.
            nulls = [b for b in branches if isinstance(b, Mapping) and b.get("type") == "null"]
            if nulls:
                return nulls[0]
        branch = self._rng.choice(branches)
        if rest and isinstance(branch, Mapping):
            return _merge(rest, branch)
        return branch

    def _pick_type(self, schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if declared is None:
            return _infer_type(schema)
        if isinstance(declared, str):
            if declared not in JSON_TYPES:
                raise SchemaError(f"unknown type {declared!r}")
            return declared
        if isinstance(declared, list) and declared:
            for entry in declared:
                if entry not in JSON_TYPES:
                    raise SchemaError(f"unknown type {entry!r}")
            non_null = [t for t in declared if t != "null"]
            chosen: str = self._rng.choice(non_null or declared)
            return chosen
        raise SchemaError(f"`type` must be a string or a non-empty array, not {declared!r}")

    # -- per-type builders ------------------------------------------------------------

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, Mapping):
            raise SchemaError("`properties` must be an object")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError("`required` must be an array of strings")
        extra_schema = schema.get("additionalProperties", True)
        if not isinstance(extra_schema, (bool, Mapping)):
            raise SchemaError("`additionalProperties` must be a schema")
        min_props = _int_kw(schema, "minProperties", 0)
        max_props = _int_kw(schema, "maxProperties", None)
        if max_props is not None and (max_props < min_props or max_props < len(required)):
            raise SchemaError("`maxProperties` cannot be satisfied")

        out: dict[str, Any] = {}
        for name in required:
            if name in props:
                out[name] = self.build(props[name], depth + 1)
            elif extra_schema is False:
                raise SchemaError(f"required property {name!r} is forbidden by additionalProperties")
            else:
                out[name] = self.build(extra_schema, depth + 1)
        budget = max_props if max_props is not None else len(props) + 3
        for name, sub in props.items():
            if name in out or len(out) >= budget:
                continue
            wanted = len(out) < min_props or (depth < _MAX_DEPTH and self._rng.random() < 0.6)
            if wanted and sub is not False:
                out[name] = self.build(sub, depth + 1)
        if extra_schema is not False:
            # Free-form maps (``dict[str, X]``, ``json_object``) get a few entries of their own.
            extra = 0
            if "properties" not in schema and depth < _MAX_DEPTH:
                extra = self._rng.randint(1, 3)
            target = min(budget, max(min_props, len(out) + extra))
            attempt = 0
            while len(out) < target and attempt < target + 16:
                key = f"{self._rng.choice(_WORDS)}_{attempt}"
                attempt += 1
                if key not in out and key not in props:
                    out[key] = self.build(extra_schema, depth + 1)
        if len(out) < min_props:
            raise SchemaError("`minProperties` cannot be satisfied")
        return out

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        lo = _int_kw(schema, "minItems", 0)
        hi = _int_kw(schema, "maxItems", None)
        if hi is not None and hi < lo:
            raise SchemaError("`maxItems` is below `minItems`")
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", True)
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        if not isinstance(prefix, list):
            raise SchemaError("`prefixItems` must be an array")
        if not isinstance(items, (bool, Mapping)):
            raise SchemaError("`items` must be a schema")

        cap = hi if hi is not None else lo + 3
        if depth >= _MAX_DEPTH:
            cap = lo
        count = self._rng.randint(lo, max(lo, cap))
        if items is False:
            if lo > len(prefix):
                raise SchemaError("`minItems` exceeds the allowed tuple length")
            count = min(count, len(prefix))
        unique = bool(schema.get("uniqueItems", False))

        out: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < count:
            position = len(out)
            sub = prefix[position] if position < len(prefix) else items
            value = self.build(sub, depth + 1)
            attempts += 1
            if unique:
                key = _canonical(value)
                if key in seen:
                    if attempts > count * 20 + 20:
                        if len(out) >= lo:
                            break
                        raise SchemaError("`uniqueItems` cannot be satisfied")
                    continue
                seen.add(key)
            out.append(value)
        return out

    def _string(self, schema: Mapping[str, Any], depth: int) -> str:
        lo = _int_kw(schema, "minLength", 0)
        hi = _int_kw(schema, "maxLength", None)
        if hi is not None and hi < lo:
            raise SchemaError("`maxLength` is below `minLength`")
        text = self._formatted(schema.get("format"))
        if text is None:
            words = [self._rng.choice(_WORDS) for _ in range(self._rng.randint(1, 3))]
            text = " ".join(words)
        while len(text) < lo:
            text += " " + self._rng.choice(_WORDS)
        if hi is not None and len(text) > hi:
            text = text[:hi].rstrip() if hi else ""
            while len(text) < lo:  # rstrip may have gone below the floor
                text += "x"
        return text

    def _formatted(self, fmt: Any) -> str | None:
        r = self._rng
        if fmt == "date":
            return f"20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
        if fmt == "date-time":
            return (
                f"20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"
                f"T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
            )
        if fmt == "time":
            return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
        if fmt == "email":
            return f"{r.choice(_WORDS)}@example.com"
        if fmt in ("uri", "url", "iri"):
            return f"https://example.com/{r.choice(_WORDS)}"
        if fmt in ("hostname", "idn-hostname"):
            return f"{r.choice(_WORDS)}.example.com"
        if fmt == "ipv4":
            return ".".join(str(r.randint(1, 254)) for _ in range(4))
        if fmt == "ipv6":
            return ":".join(f"{r.randint(0, 0xFFFF):x}" for _ in range(8))
        if fmt == "uuid":
            h = f"{r.getrandbits(128):032x}"
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        if fmt == "duration":
            return f"P{r.randint(1, 30)}D"
        return None

    def _integer(self, schema: Mapping[str, Any], depth: int) -> int:
        lo, hi = _bounds(schema)
        ilo = math.floor(lo) + 1 if lo is not None and _excl(schema, "min", lo) else _ceil(lo)
        ihi = math.ceil(hi) - 1 if hi is not None and _excl(schema, "max", hi) else _floor(hi)
        ilo, ihi = _default_span(ilo, ihi)
        if ilo > ihi:
            raise SchemaError("integer bounds leave no valid value")
        step = schema.get("multipleOf")
        if step is not None:
            if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
                raise SchemaError("`multipleOf` must be a positive number")
            if float(step).is_integer():
                step = int(step)
                first = -(-ilo // step)
                last = ihi // step
                if first > last:
                    raise SchemaError("no multiple of `multipleOf` within bounds")
                return self._rng.randint(first, last) * step
        return self._rng.randint(ilo, ihi)

    def _number(self, schema: Mapping[str, Any], depth: int) -> float | int:
        step = schema.get("multipleOf")
        if step is not None:
            if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
                raise SchemaError("`multipleOf` must be a positive number")
            if float(step).is_integer():
                return self._integer(schema, depth)
            return self._number_multiple(schema, float(step))
        lo, hi = _bounds(schema)
        flo = float(lo) if lo is not None else None
        fhi = float(hi) if hi is not None else None
        if flo is None and fhi is None:
            flo, fhi = 0.0, float(_UNBOUNDED_SPAN)
        elif flo is None:
            assert fhi is not None  # both None was the case above
            flo = fhi - _UNBOUNDED_SPAN
        elif fhi is None:
            fhi = flo + _UNBOUNDED_SPAN
        assert flo is not None and fhi is not None
        excl_lo = lo is not None and _excl(schema, "min", lo)
        excl_hi = hi is not None and _excl(schema, "max", hi)
        if flo > fhi or (flo == fhi and (excl_lo or excl_hi)):
            raise SchemaError("number bounds leave no valid value")
        for _ in range(16):
            value = round(self._rng.uniform(flo, fhi), 2)
            above = value > flo or (not excl_lo and value == flo)
            below = value < fhi or (not excl_hi and value == fhi)
            if above and below:
                return value
        mid = (flo + fhi) / 2
        return mid

    def _number_multiple(self, schema: Mapping[str, Any], step: float) -> float:
        if step <= 0:
            raise SchemaError("`multipleOf` must be a positive number")
        lo, hi = _bounds(schema)
        k_lo = math.ceil((lo if lo is not None else 0) / step)
        k_hi = math.floor((hi if hi is not None else (lo or 0) + _UNBOUNDED_SPAN) / step)
        if lo is not None and _excl(schema, "min", lo) and k_lo * step <= lo:
            k_lo += 1
        if hi is not None and _excl(schema, "max", hi) and k_hi * step >= hi:
            k_hi -= 1
        if k_lo > k_hi:
            raise SchemaError("no multiple of `multipleOf` within bounds")
        # Binary floats make most k*step fail an exact ``value / step`` check; keep the
        # candidates whose quotient round-trips, as validators test exactly that.
        start = self._rng.randint(k_lo, k_hi)
        for k in (*range(start, min(k_hi, start + 64) + 1), *range(k_lo, min(k_hi, k_lo + 64) + 1)):
            value = round(float(k * step), 12)
            if (value / step).is_integer():
                return value
        raise SchemaError("`multipleOf` has no exactly representable multiple within bounds")

    def _boolean(self, schema: Mapping[str, Any], depth: int) -> bool:
        return self._rng.random() < 0.5

    def _null(self, schema: Mapping[str, Any], depth: int) -> None:
        return None

    def _any(self, depth: int) -> Any:
        return self._rng.choice(_WORDS)

    _BUILDERS: ClassVar[dict[str, Callable[[_Generator, Mapping[str, Any], int], Any]]] = {
        "object": _object,
        "array": _array,
        "string": _string,
        "integer": _integer,
        "number": _number,
        "boolean": _boolean,
        "null": _null,
    }


# -- helpers -------------------------------------------------------------------------


def _infer_type(schema: Mapping[str, Any]) -> str:
    """Guess the type of an untyped schema from the keywords it uses."""
    if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")):
        return "array"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "string"


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Combine two schemas that must both hold (the ``allOf`` case, simplified)."""
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum", "minProperties") and key in out:
            out[key] = max(out[key], value)
        elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum", "maxProperties") and key in out:
            out[key] = min(out[key], value)
        else:
            out[key] = value
    return out


def _int_kw(schema: Mapping[str, Any], key: str, default: int | None) -> Any:
    value = schema.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise SchemaError(f"`{key}` must be a non-negative integer")
    return int(value)


def _num_kw(schema: Mapping[str, Any], key: str) -> float | None:
    value = schema.get(key)
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SchemaError(f"`{key}` must be a number")
    return value


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """Effective lower/upper bound, whichever of inclusive/exclusive is tighter."""
    lo = _num_kw(schema, "minimum")
    hi = _num_kw(schema, "maximum")
    xlo = _num_kw(schema, "exclusiveMinimum")
    xhi = _num_kw(schema, "exclusiveMaximum")
    if xlo is not None and (lo is None or xlo >= lo):
        lo = xlo
    if xhi is not None and (hi is None or xhi <= hi):
        hi = xhi
    return lo, hi


def _excl(schema: Mapping[str, Any], side: str, bound: float) -> bool:
    """Whether ``bound`` came from an exclusive keyword (draft 6+ number or draft 4 flag)."""
    key = "exclusiveMinimum" if side == "min" else "exclusiveMaximum"
    value = schema.get(key)
    if isinstance(value, bool):
        return value
    return value is not None and value == bound


def _ceil(x: float | None) -> int | None:
    return None if x is None else math.ceil(x)


def _floor(x: float | None) -> int | None:
    return None if x is None else math.floor(x)


def _default_span(lo: int | None, hi: int | None) -> tuple[int, int]:
    if lo is None and hi is None:
        return 0, _UNBOUNDED_SPAN
    if lo is None:
        assert hi is not None
        return hi - _UNBOUNDED_SPAN, hi
    if hi is None:
        return lo, lo + _UNBOUNDED_SPAN
    return lo, hi


def _canonical(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)
