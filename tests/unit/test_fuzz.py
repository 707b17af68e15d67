"""Property-based tests of the three places where outside data enters arkq: the producer's validation,
arq's job deserializer and the job function that a worker runs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from arq.connections import ArqRedis
from arq.utils import ms_to_datetime
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from arkq.contract import TERMINAL_EVENT_TYPES, GenerationRequest, JobResult, parse_event
from arkq.envelope import JOB_FUNCTION, deserialize, serialize
from arkq.keys import claim_key, event_log_key, lease_key, result_key
from arkq.lease import LeaseKeeper
from arkq.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage
from config_module.loader import load_config
from fake_llm import running_fake_llm
from model_module import ArkModelLink
from producer import InvalidRequest, Producer
from producer.producer import JOB_ID_PATTERN
from worker.job import generate
from worker.metrics import JobMetrics
from worker.settings import arq_claim_ttl_s
from worker.stats import WorkerStats

CONFIG = load_config({"ARK_WORKER__MAX_TRIES": "3"})
ROLES = ("user", "assistant", "system", "tool")
REQUEST_FIELDS = ("messages", "json_schema", "max_tokens", "temperature", "model", "tools", "metadata")
#: How an InvalidRequest's message starts: with the field it is about.
NAMES_A_FIELD = re.compile(
    r"(invalid generation request: )?"
    r"(messages|json_schema|max_tokens|temperature|job_id|model|tools|metadata|request|payload)\b"
)
ENVELOPE_KEYS = ("f", "a", "k", "t", "et")
SHORT_ANSWER = "[[arkq:tokens=3]]"
#: Hypothesis's phases but `explain`, which reruns a failing example under a tracer: slow here.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)


def fresh_redis() -> ArqRedis:
    """A new, empty Redis: function fixtures are not reset between the examples of one test."""
    fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return ArqRedis(
        connection_pool=fake.connection_pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name="arq:queue",
    )


class DeepDict(dict):
    """A deeply nested dict that reports itself briefly, so a failing example prints."""

    depth = 0

    def __repr__(self) -> str:
        return f"<dict nested {self.depth} deep>"


class DeepList(list):
    """A deeply nested list that reports itself briefly."""

    depth = 0

    def __repr__(self) -> str:
        return f"<list nested {self.depth} deep>"


def nest(depth: int, leaf: Any, *, in_list: bool) -> DeepDict | DeepList:
    value = leaf
    for _ in range(depth - 1):
        value = [value] if in_list else {"a": value}
    outer = DeepList([value]) if in_list else DeepDict(a=value)
    outer.depth = depth
    return outer


# --- Strategies ---------------------------------------------------------------------------------------

surrogates = st.characters(categories=["Cs"])
#: Text, sometimes with lone surrogates (JSON's "\ud800" escapes decode to them). Joined from a list:
#: `st.text` drops surrogates from a mixed alphabet.
texts = st.text(max_size=12) | st.lists(st.characters() | surrogates, max_size=4).map("".join)


def json_values(*, with_bytes: bool) -> st.SearchStrategy[Any]:
    """JSON-like data: what `json.loads` can return (NaN and infinities included), nested up to thousands
    of levels deep; with `with_bytes`, bytes too, as a Python caller may pass them."""
    leaves = [st.none(), st.booleans(), st.integers(), st.floats(), texts]
    scalars = st.one_of(*leaves, *([st.binary(max_size=6)] if with_bytes else []))
    shallow = st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
        max_leaves=10,
    )
    # Depths on either side of pydantic's serialization limit (about 255) and of the recursion limit,
    # but never at the recursion limit, where what fails depends on the caller's stack.
    deep = st.builds(nest, st.sampled_from([2, 100, 300, 900, 10_000]), scalars, in_list=st.booleans())
    return shallow | deep


def request_fields(values: st.SearchStrategy[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Strategies for each request field: values it accepts, and anything at all."""
    objects = st.dictionaries(texts, values, max_size=4)
    message_dicts = st.fixed_dictionaries(
        {"role": st.sampled_from(ROLES) | values, "content": values},
        optional={"tool_calls": values, "tool_call_id": values, "name": values},
    )
    without_role = st.fixed_dictionaries({"content": values})
    valid = {
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts}),
            min_size=1,
            max_size=2,
        ),
        "json_schema": st.none()
        | st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {"name": st.text(min_size=1, max_size=8), "schema": objects}
                ),
            }
        ),
        "max_tokens": st.none() | st.integers(min_value=1),
        "temperature": st.none() | st.floats(0, 2) | st.integers(0, 2),
        "model": st.none() | st.text(min_size=1, max_size=8),
        "tools": st.none()
        | st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": st.text(min_size=1, max_size=8)}, optional={"parameters": values}
                    ),
                }
            ),
            max_size=2,
        ),
        "metadata": st.none() | objects,
    }
    numbers = st.one_of(
        st.none(), st.integers(), st.integers(-1, 3), st.floats(), st.floats(-1, 3), st.booleans(), values
    )
    anything = {
        "messages": st.lists(message_dicts | without_role | values, max_size=3) | values,
        "json_schema": st.fixed_dictionaries(
            {
                "type": st.just("json_schema") | values,
                "json_schema": st.fixed_dictionaries({"name": values, "schema": values}) | values,
            }
        )
        | values,
        "max_tokens": numbers,
        "temperature": numbers,
        "model": values,
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function") | values,
                    "function": st.fixed_dictionaries({"name": values}, optional={"parameters": values})
                    | values,
                }
            ),
            max_size=2,
        )
        | values,
        "metadata": objects | values,
    }
    return valid, anything


python_values = json_values(with_bytes=True)
wire_values = json_values(with_bytes=False)
valid_arguments, any_arguments = request_fields(python_values)
valid_fields, any_fields = request_fields(wire_values)

message_objects = st.one_of(
    st.builds(UserMessage, content=st.text(max_size=12)),
    st.builds(SystemMessage, content=st.text(max_size=12)),
    st.builds(
        AIMessage,
        content=st.none() | st.text(max_size=12),
        tool_calls=st.none() | st.lists(st.dictionaries(texts, python_values, max_size=3), max_size=2),
    ),
    st.builds(ToolMessage, content=st.text(max_size=12), tool_call_id=st.none() | st.text(max_size=8)),
    st.builds(Message, content=st.none() | st.text(max_size=12), role=st.sampled_from(ROLES)),
)
#: Around `queue.max_payload_bytes`: some fit, some do not.
oversized = st.integers(999_700, 1_000_100).map(lambda n: [{"role": "user", "content": "x" * n}])
valid_arguments["messages"] |= st.lists(message_objects, min_size=1, max_size=3)
any_arguments["messages"] |= st.lists(message_objects | python_values, max_size=3) | oversized
valid_arguments["job_id"] = st.none() | st.from_regex(JOB_ID_PATTERN, fullmatch=True)
any_arguments["job_id"] = st.one_of(texts, st.from_regex(JOB_ID_PATTERN, fullmatch=True), python_values)


@st.composite
def enqueue_calls(draw: st.DrawFn) -> dict[str, Any]:
    """`enqueue`'s arguments: valid but for up to two, which may be anything."""
    wild = draw(st.sets(st.sampled_from(sorted(any_arguments)), max_size=2))
    return {name: draw((any_arguments if name in wild else valid_arguments)[name]) for name in any_arguments}


# --- 1. The producer validates at the edge --------------------------------------------------------------


@settings(max_examples=300, deadline=None, phases=PHASES, report_multiple_bugs=False)
@given(call=enqueue_calls())
async def test_enqueue_stores_the_request_it_was_given_or_refuses_it_naming_a_field(
    call: dict[str, Any],
) -> None:
    redis = fresh_redis()
    try:
        producer = Producer(redis=redis, config=CONFIG)
        try:
            job = await producer.enqueue(**call)
        except InvalidRequest as refused:
            assert await redis.dbsize() == 0, "a refused request wrote to Redis"
            assert NAMES_A_FIELD.match(str(refused)), f"names no field: {refused}"
            return
        except Exception as error:
            raise AssertionError(f"enqueue raised {type(error).__name__}, not InvalidRequest") from error

        envelope = deserialize(await redis.get(f"arq:job:{job.id}"))
        assert (envelope["f"], len(envelope["a"]), envelope["k"]) == (JOB_FUNCTION, 1, {}), envelope
        assert call["job_id"] is None or job.id == call["job_id"]
        fields = {name: value for name, value in call.items() if name not in ("messages", "job_id")}
        given_request = producer.build_request(call["messages"], **fields)
        queued_request = GenerationRequest.model_validate(envelope["a"][0])
        assert queued_request == given_request, "the queued request is not the one that was given"
        given_metadata = {} if call["metadata"] is None else call["metadata"]
        assert queued_request.metadata == given_metadata, "metadata was replaced instead of refused"
    finally:
        await redis.aclose()


# --- 2. Any bytes deserialize into a job that arq can run ---------------------------------------------

kwarg_names = st.sampled_from(["ctx", "undecodable", "request", "job_id"]) | texts
envelope_values = {
    "f": st.just(JOB_FUNCTION) | wire_values,
    "a": st.lists(wire_values, max_size=2) | wire_values,
    "k": st.dictionaries(kwarg_names, texts | wire_values, max_size=3) | wire_values,
    "t": st.none() | st.integers(-2, 5) | wire_values,
    "et": st.integers(946_684_800_000, 4_102_444_800_000) | st.integers() | wire_values,
}
envelopes = st.fixed_dictionaries(envelope_values) | st.fixed_dictionaries(
    {}, optional={**envelope_values, "extra": wire_values}
)


def json_bytes(value: Any, encoding: str, ascii_only: bool) -> bytes | None:
    try:
        text = json.dumps(value, ensure_ascii=ascii_only)
    except RecursionError:
        return None
    return text.encode(encoding, errors="surrogatepass")


raw_jobs = st.one_of(
    st.binary(max_size=64),
    st.builds(
        json_bytes, envelopes | wire_values, st.sampled_from(["utf-8", "utf-16", "utf-32"]), st.booleans()
    ).filter(lambda raw: raw is not None),
    st.sampled_from([2, 900, 10_000]).map(lambda depth: b"[" * depth + b"]" * depth),
    st.sampled_from([2, 900, 10_000]).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
)


@settings(max_examples=400, deadline=None, phases=PHASES)
@given(raw=raw_jobs)
def test_any_bytes_deserialize_into_a_runnable_arq_job(raw: bytes) -> None:
    job = deserialize(raw)
    assert isinstance(job, dict) and set(ENVELOPE_KEYS) <= job.keys(), job
    assert job["f"] == JOB_FUNCTION
    assert isinstance(job["a"], list)
    assert isinstance(job["k"], dict)
    assert job["t"] is None or (type(job["t"]) is int and job["t"] > 0)
    assert type(job["et"]) is int
    ms_to_datetime(job["et"])
    # The job function takes no keyword arguments but the reason a job could not be decoded, which
    # ends up in its error event: text that encodes.
    assert set(job["k"]) <= {"undecodable"}, job["k"]
    if "undecodable" in job["k"]:
        job["k"]["undecodable"].encode()


# --- 3. The job function ends every job once, whatever it was given ------------------------------------


@pytest.fixture
async def link() -> AsyncIterator[ArkModelLink]:
    """One emulator for all the examples of a test."""
    async with running_fake_llm() as llm, ArkModelLink(base_url=llm.base_url, max_retries=0) as opened:
        yield opened


plain_words = st.text(st.characters(codec="ascii", exclude_characters="[]"), max_size=12)
#: What a producer lets through as message text, lone surrogates included.
any_words = plain_words | st.tuples(plain_words, surrogates, plain_words).map("".join)


@st.composite
def short_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Valid requests whose answer is three tokens (fewer under a smaller max_tokens)."""
    roles = st.sampled_from(["user", "system", "assistant"])
    rest = draw(st.lists(st.fixed_dictionaries({"role": roles, "content": plain_words}), max_size=2))
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": f"{draw(any_words)} {SHORT_ANSWER}"}, *rest]
    }
    optional = {
        "max_tokens": st.integers(1, 5),
        "temperature": st.floats(0, 2),
        "metadata": st.dictionaries(plain_words, st.integers() | plain_words | st.none(), max_size=3),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            request[name] = draw(values)
    return request


@st.composite
def near_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request as arq hands it over, with one or two fields (or an unknown one) that may be anything."""
    wild = draw(st.sets(st.sampled_from([*REQUEST_FIELDS, "unknown"]), min_size=1, max_size=2))
    request = {name: draw((any_fields if name in wild else valid_fields)[name]) for name in REQUEST_FIELDS}
    request = {name: value for name, value in request.items() if value is not None or name in wild}
    if "messages" not in wild:  # should it be valid after all, its answer is short
        request["messages"] = [{"role": "user", "content": SHORT_ANSWER}, *request["messages"]]
    if "unknown" in wild:
        request[draw(texts.filter(lambda name: name not in REQUEST_FIELDS))] = draw(wire_values)
    return request


#: Keyword arguments: arq passes `ctx` positionally and the rest as `deserialize` left them, whose only
#: keyword is `undecodable` (text: its reasons quote values with repr); any others are extra ones.
extra_kwargs = st.dictionaries(
    texts.filter(lambda name: name not in ("ctx", "undecodable")), texts | wire_values, max_size=3
)
job_kwargs = st.fixed_dictionaries({}, optional={"undecodable": st.text(max_size=40)}).flatmap(
    lambda kwargs: extra_kwargs.map(lambda extra: {**extra, **kwargs})
)
job_calls = st.one_of(
    st.tuples(st.tuples(wire_values), st.just({})),
    st.tuples(st.lists(wire_values, max_size=3).map(tuple), job_kwargs),
    raw_jobs.map(deserialize).map(lambda job: (tuple(job["a"]), job["k"])),
    st.tuples(st.tuples(near_requests() | short_requests()), st.just({})),
)


def is_valid_job(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if kwargs or len(args) != 1:
        return False
    try:
        GenerationRequest.model_validate(args[0])
    except (ValidationError, RecursionError):
        return False
    return True


def short_answer_expected(request: dict[str, Any]) -> bool:
    """The request is one of `short_requests`: its only directive asks for three tokens."""
    first = request["messages"][0]
    content = first.get("content") if isinstance(first, dict) else None
    directives = json.dumps(request["messages"], default=repr).count("[[")
    return directives == 1 and isinstance(content, str) and content.endswith(f" {SHORT_ANSWER}")


@settings(
    max_examples=200,
    deadline=None,
    phases=PHASES,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=job_calls)
async def test_every_job_ends_with_exactly_one_terminal_event_and_its_result(
    link: ArkModelLink, call: tuple[tuple[Any, ...], dict[str, Any]]
) -> None:
    args, kwargs = call
    redis = fresh_redis()
    job_id = uuid.uuid4().hex
    try:
        await redis.set(claim_key(job_id), b"1")  # arq's claim
        ctx = {
            "redis": redis,
            "config": CONFIG,
            "link": link,
            "leases": LeaseKeeper(
                redis,
                lease_s=CONFIG.worker.lease_s,
                renew_s=CONFIG.worker.lease_renew_s,
                queue_name=CONFIG.queue.name,
                claim_ttl_s=arq_claim_ttl_s(CONFIG),
            ),
            "worker_name": "fuzz:1",
            "stats": WorkerStats(),
            "metrics": JobMetrics(CONFIG.llm.model_name, enabled=True),
            "job_id": job_id,
            "job_try": 1,
            "enqueue_time": datetime.now(UTC),
        }
        returned = await generate(ctx, *args, **kwargs)

        assert await redis.get(claim_key(job_id)) == b"leased", "the job did not take its lease"
        assert await redis.exists(lease_key(job_id)) == 0, "the job did not give its lease up"
        events = [parse_event(raw) for raw in await redis.lrange(event_log_key(job_id), 0, -1)]
        assert [event.seq for event in events] == list(range(len(events)))
        assert {event.job_id for event in events} == {job_id}
        types = [event.type for event in events]
        assert sum(kind in TERMINAL_EVENT_TYPES for kind in types) == 1, types
        last = events[-1]
        assert last.type in TERMINAL_EVENT_TYPES, types
        assert returned == {"status": last.type}
        stored = JobResult.model_validate_json(await redis.get(result_key(job_id)))
        assert (stored.job_id, stored.status) == (job_id, last.type)

        if not is_valid_job(args, kwargs):
            assert types == ["error"] and last.kind == "invalid_job", last
            assert stored.error is not None and stored.error.kind == "invalid_job"
            return
        assert types[0] == "started" and last.type in ("done", "error"), types
        if last.type == "error":
            assert stored.error is not None and stored.error.kind == last.kind
            assert last.kind != "internal", f"a valid request failed as a bug: {last.message}"
        if short_answer_expected(args[0]):
            tokens = [event.text for event in events if event.type == "token"]
            assert last.type == "done", last
            assert len(tokens) == min(3, args[0].get("max_tokens") or 3)
            assert stored.text == last.text == "".join(tokens)
    finally:
        await redis.aclose()
