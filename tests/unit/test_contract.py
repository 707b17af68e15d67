import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from arkq.contract import (
    DoneEvent,
    GenerationRequest,
    JobResult,
    ReasoningEvent,
    TextEventEncoder,
    Timings,
    TokenEvent,
    encode_event,
    parse_event,
)
from arkq.envelope import JOB_FUNCTION, deserialize, serialize

SCHEMA = {"type": "json_schema", "json_schema": {"name": "thing", "schema": {"type": "object"}}}


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_a_request_round_trips_through_json() -> None:
    original = request(json_schema=SCHEMA, max_tokens=5, temperature=0.1, metadata={"user": 7})
    payload = json.loads(serialize(original.model_dump(mode="json")))
    assert GenerationRequest.model_validate(payload) == original


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.user.content"),
        ({"json_schema": {"type": "object", "properties": {}}}, "json_schema"),
        ({"json_schema": {"type": "json_schema", "json_schema": {"name": "x"}}}, "json_schema"),
        ({"json_schema": "not a dict"}, "json_schema"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"metadata": {"when": object()}}, "metadata.when"),
        ({"metadata": {"x": float("nan")}}, "metadata.x"),
        ({"json_schema": {**SCHEMA, "json_schema": {"name": "t", "schema": {"a": b"\x80"}}}}, "json_schema"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_requests_name_the_field(fields: dict[str, object], field_name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        request(**fields)
    locations = {".".join(map(str, error["loc"])) for error in caught.value.errors()}
    messages = [error["msg"] for error in caught.value.errors()]
    assert field_name in locations or any(f" {field_name}" in message for message in messages)


def test_a_bare_schema_gets_a_hint_to_wrap_it() -> None:
    with pytest.raises(ValidationError, match="bare JSON Schema"):
        request(json_schema={"type": "object", "properties": {"a": {"type": "string"}}})


def test_events_are_json_objects_with_job_id_seq_and_type() -> None:
    raw = encode_event(TokenEvent(job_id="j", seq=3, text="hé"))
    assert json.loads(raw) == {"job_id": "j", "seq": 3, "type": "token", "text": "hé"}
    assert parse_event(raw) == TokenEvent(job_id="j", seq=3, text="hé")
    done = parse_event(encode_event(DoneEvent(job_id="j", seq=4, finish_reason="stop", usage=None, text="x")))
    assert isinstance(done, DoneEvent)


def test_unknown_event_types_are_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_event(b'{"job_id": "j", "seq": 0, "type": "party"}')


def test_timings_are_stored_with_their_durations() -> None:
    timings = Timings(enqueued_at=10.0, started_at=10.5, first_token_at=10.75, finished_at=12.0)
    stored = json.loads(JobResult(job_id="j", status="done", timings=timings).model_dump_json())
    assert stored["timings"]["queued_s"] == 0.5
    assert stored["timings"]["ttft_s"] == 0.25
    assert stored["timings"]["total_s"] == 2.0
    assert JobResult.model_validate(stored).timings == timings


def test_jobs_are_json_never_pickle() -> None:
    job = {"t": 1, "f": JOB_FUNCTION, "a": [{"messages": []}], "k": {}, "et": 1_764_000_000_000}
    assert deserialize(serialize(job)) == job
    with pytest.raises(TypeError):
        serialize({"a": object()})


GOOD = {"t": None, "f": JOB_FUNCTION, "a": [], "k": {}, "et": 1_764_000_000_000}


@pytest.mark.parametrize(
    "raw",
    [
        b"\x80\x04\x95pickle",
        b"not json",
        b"[1, 2]",
        b'{"f": "generate"}',
        b"\xff\xfe",
        *(
            serialize({**GOOD, **bad})
            for bad in [
                {"et": "x"},
                {"et": None},
                {"et": 1e300},
                {"et": -(10**20)},
                {"t": "2"},
                {"t": 0},
                {"f": []},
                {"f": "other_function"},
                {"a": {"not": "a list"}},
                {"k": ["not", "a", "dict"]},
            ]
        ),
    ],
)
def test_an_undecodable_job_becomes_a_job_that_reports_it(raw: bytes) -> None:
    job = deserialize(raw)
    assert job["f"] == JOB_FUNCTION
    assert job["a"] == []
    assert "undecodable" in job["k"]


@given(job_id=st.text(min_size=1, max_size=40), seq=st.integers(0, 10**9), text=st.text(max_size=200))
def test_text_events_encoded_without_the_model_read_back_the_same(job_id: str, seq: int, text: str) -> None:
    encode = TextEventEncoder(job_id)
    assert parse_event(encode(seq, "token", text)) == TokenEvent(job_id=job_id, seq=seq, text=text)
    reasoning = parse_event(encode(seq, "reasoning", text))
    assert reasoning == ReasoningEvent(job_id=job_id, seq=seq, text=text)
