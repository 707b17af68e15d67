"""Structured output: every ``json_schema`` answer validates against its schema."""

from __future__ import annotations

import enum
import json
import random
from typing import Any, Literal

import jsonschema
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from fake_llm.json_instances import SchemaError, check_schema, generate_instance


class Colour(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    postcode: str = Field(min_length=4, max_length=8)
    floor: int | None = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, lt=130)
    email: str | None = None
    favourite: Colour
    tags: list[str] = Field(min_length=1, max_length=3)
    home: Address
    previous: list[Address] = Field(default_factory=list)
    pet: Cat | Dog = Field(discriminator="kind")
    scores: dict[str, float] = Field(default_factory=dict)
    ratio: float = Field(gt=0, lt=1)
    born: str = Field(json_schema_extra={"format": "date"})
    children: list[Person] = Field(default_factory=list)


SCHEMAS: dict[str, Any] = {
    "pydantic": Person.model_json_schema(),
    "flat": {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    },
    "array": {"type": "array", "items": {"type": "integer", "multipleOf": 5}, "minItems": 2, "maxItems": 4},
    "definitions": {
        "definitions": {
            "point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
        },
        "type": "object",
        "properties": {"points": {"type": "array", "items": {"$ref": "#/definitions/point"}, "minItems": 1}},
        "required": ["points"],
    },
    "combinators": {
        "allOf": [
            {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]},
            {"properties": {"b": {"oneOf": [{"type": "null"}, {"type": "string", "format": "email"}]}}},
        ],
        "required": ["b"],
    },
}


def ask(schema: Any, text: str = "Describe someone.") -> dict[str, Any]:
    return {
        "model": "tgi",
        "messages": [{"role": "user", "content": text}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
async def test_json_schema_output_validates_streamed_and_not(client: openai.AsyncOpenAI, name: str) -> None:
    schema = SCHEMAS[name]
    whole = await client.chat.completions.create(**ask(schema))
    text = whole.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), schema)
    assert whole.choices[0].finish_reason == "stop"

    stream = await client.chat.completions.create(**ask(schema), stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == text
    assert len(pieces) > 3
    assert max(len(p) for p in pieces) < 24


async def test_pydantic_model_round_trips(client: openai.AsyncOpenAI) -> None:
    for i in range(5):
        result = await client.chat.completions.create(**ask(Person.model_json_schema(), f"Person number {i}"))
        Person.model_validate_json(result.choices[0].message.content or "")


async def test_json_object_is_an_object(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="tgi",
        messages=[{"role": "user", "content": "Any JSON."}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(result.choices[0].message.content or ""), dict)


async def test_max_tokens_truncates_json(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(**ask(SCHEMAS["pydantic"]), max_tokens=4)
    assert result.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.choices[0].message.content or "")


async def test_invalid_schema_is_an_invalid_grammar_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(**ask({"type": "frobnicate"}))
    assert caught.value.status_code == 400
    assert caught.value.body["message"].startswith("Invalid grammar request: req.grammar_key=('json', ")  # type: ignore[index]
    assert caught.value.body["type"] == "BadRequestError"  # type: ignore[index]

    # Streamed, SGLang has already sent the 200 when the grammar fails: an in-stream error.
    stream = await client.chat.completions.create(**ask({"type": "frobnicate"}), stream=True)
    with pytest.raises(openai.APIError, match="Invalid grammar request"):
        async for _ in stream:
            pass


async def test_schema_that_is_not_an_object_fails_validation(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(**ask(["not", "a", "schema"]))
    assert caught.value.body["type"] == "Bad Request"  # type: ignore[index]


async def test_bad_tool_parameters_are_rejected(client: openai.AsyncOpenAI) -> None:
    tool: Any = {"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}
    with pytest.raises(openai.BadRequestError, match="Tool 0 function has invalid 'parameters' schema"):
        await client.chat.completions.create(
            model="tgi", messages=[{"role": "user", "content": "x"}], tools=[tool]
        )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "array", "minItems": 3, "maxItems": 1},
        {"$ref": "#/$defs/missing"},
        {"enum": []},
        {"type": ["string", "nonsense"]},
        {"type": "object", "required": ["a"], "additionalProperties": False},
        False,
    ],
)
def test_unusable_schemas_raise(schema: Any) -> None:
    with pytest.raises(SchemaError):
        check_schema(schema)


# -- property test over small generated schemas ---------------------------------------------

_scalars = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-1000, 1000),
        st.integers(0, 50),
    ),
    st.builds(
        lambda lo, span: {"type": "number", "exclusiveMinimum": lo, "maximum": lo + span},
        st.integers(-100, 100),
        st.integers(1, 50),
    ),
    st.builds(
        lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    st.builds(
        lambda values: {"enum": values}, st.lists(st.integers() | st.text(max_size=5), min_size=1, max_size=4)
    ),
    st.builds(lambda value: {"const": value}, st.integers() | st.text(max_size=5)),
    st.sampled_from([{"type": "string", "format": f} for f in ("date", "date-time", "email", "uuid", "uri")]),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
    objects = st.builds(
        lambda props, data: {
            "type": "object",
            "properties": props,
            "required": sorted(k for k in props if data.draw(st.booleans())),
            "additionalProperties": data.draw(st.booleans()),
        },
        st.dictionaries(names, children, max_size=4),
        st.data(),
    )
    arrays = st.builds(
        lambda item, lo, extra: {"type": "array", "items": item, "minItems": lo, "maxItems": lo + extra},
        children,
        st.integers(0, 3),
        st.integers(0, 3),
    )
    unions = st.builds(lambda options: {"anyOf": options}, st.lists(children, min_size=1, max_size=3))
    return objects | arrays | unions


schemas = st.recursive(_scalars, _compound, max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(schema=schemas, seed=st.integers(0, 2**32))
def test_generated_instances_validate(schema: dict[str, Any], seed: int) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    instance = generate_instance(schema, random.Random(seed))
    jsonschema.validate(instance, schema)
