"""Deterministic "model output" for a request.

Everything is derived from a hash of the conversation, so the same request always yields
the same tokens: a streamed answer can be compared with a non-streamed one, a retried job
produces what the first attempt would have, and benchmarks are reproducible. The whole
output is planned up front (an :class:`OutputPlan`); the HTTP layer then only paces it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from arkq.errors import ArkqError

from .directives import Directives, strip_directives
from .json_instances import SchemaError, generate_instance
from .protocol import ChatRequest

__all__ = [
    "EOS_TOKEN_ID",
    "GrammarError",
    "OutputPlan",
    "estimate_prompt_tokens",
    "plan_output",
    "split_json",
]

# SGLang reports a natural stop as the EOS token that matched (Qwen's <|im_end|> here).
EOS_TOKEN_ID = 151645

VOCABULARY = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim",
    "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi",
    "aliquip", "ex", "ea", "commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit",
    "voluptate", "velit", "esse", "cillum", "fugiat", "nulla", "pariatur", "excepteur", "sint",
    "occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui", "officia", "deserunt",
    "mollit", "anim", "id", "est", "laborum", "vitae", "porta",
)  # fmt: skip
_SPACED = tuple(" " + w for w in VOCABULARY)

MIN_DEFAULT_TOKENS = 16
MAX_DEFAULT_TOKENS = 48
_PER_MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template
_PRIMING_OVERHEAD = 3  # the assistant turn header

# One token = optional whitespace plus a word or one or two punctuation characters.
_JSON_PIECE = re.compile(r"\s*(?:\w+|[^\w\s]{1,2})|\s+")

FinishReason = Literal["stop", "length", "tool_calls"]


class GrammarError(ArkqError):
    """A schema cannot be compiled into a grammar (SGLang: "Invalid grammar request")."""

    def __init__(self, schema: Any, reason: str) -> None:
        super().__init__(reason)
        self.schema = schema

    @property
    def sglang_message(self) -> str:
        """SGLang's wording, which quotes the grammar cache key ``('json', <schema>)``."""
        key = ("json", json.dumps(self.schema))
        return f"Invalid grammar request: req.grammar_key={key!r}"


@dataclass(slots=True)
class OutputPlan:
    """Every token the request will produce, in order, plus how it ends.

    ``reasoning`` tokens come first, then either ``content`` tokens or a tool call made of
    a header (id + name) and ``tool_args`` fragments. All lists are already cut to
    ``max_tokens`` and stop strings.
    """

    reasoning: list[str]
    content: list[str]
    tool_name: str | None
    tool_args: list[str]
    finish_reason: FinishReason
    matched_stop: int | str | None

    @property
    def completion_tokens(self) -> int:
        tool = 1 + len(self.tool_args) if self.tool_name is not None else 0
        return len(self.reasoning) + len(self.content) + tool


def request_seed(texts: tuple[str, ...]) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for text in texts:
        digest.update(strip_directives(text).encode())
        digest.update(b"\x00")
    return int.from_bytes(digest.digest(), "big")


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A stable stand-in for tokenizer output: words plus chat-template overhead."""
    total = _PRIMING_OVERHEAD
    for text in request.texts:
        total += len(strip_directives(text).split()) + _PER_MESSAGE_OVERHEAD
    total += len(request.tools_text.split())
    if request.prefix is not None:
        total += len(request.prefix.split())
    return total


def text_tokens(rng: random.Random, count: int) -> list[str]:
    if count <= 0:
        return []
    picks = rng.choices(range(len(VOCABULARY)), k=count)
    return [VOCABULARY[picks[0]].capitalize(), *(_SPACED[i] for i in picks[1:])]


def split_json(text: str) -> list[str]:
    """Cut JSON text into token-sized pieces that concatenate back to ``text``."""
    return _JSON_PIECE.findall(text)


def _json_instance(schema: Any, rng: random.Random) -> str:
    try:
        value = generate_instance(schema, rng)
    except SchemaError as exc:
        raise GrammarError(schema, str(exc)) from None
    return json.dumps(value, ensure_ascii=False)


def _apply_stop(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], str | None]:
    """Cut ``pieces`` at the earliest stop string; the stop text itself is not returned."""
    if not stops:
        return pieces, None
    text = "".join(pieces)
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    if best is None:
        return pieces, None
    cut, stop = best
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) >= cut:
            # The token that completed the stop string was still generated (and counted).
            kept.append(piece[: cut - used])
            break
        kept.append(piece)
        used += len(piece)
    return kept, stop


def plan_output(request: ChatRequest, directives: Directives) -> OutputPlan:
    """Decide the full output of ``request``; raises :class:`GrammarError` for bad schemas.

    A request that continues a final assistant message (``continue_final_message``) whose text begins
    this conversation's answer gets the rest of that answer: an answer interrupted any number of times
    and continued each time is, in the end, the uninterrupted one, token for token."""
    if request.prefix is not None:
        return _plan_continuation(request, directives, request.prefix)
    return _plan_answer(request, directives)


def _plan_continuation(request: ChatRequest, directives: Directives, prefix: str) -> OutputPlan:
    whole = _plan_answer(replace(request, prefix=None, max_tokens=None, stop=()), directives)
    rest = _after(prefix, whole.content)
    if rest is None:  # not this conversation's answer: go on with other words, as a model would
        rng = random.Random(request_seed((*request.texts, prefix)))
        count = directives.tokens
        if count is None:
            count = MIN_DEFAULT_TOKENS + rng.randrange(MAX_DEFAULT_TOKENS - MIN_DEFAULT_TOKENS + 1)
        rest = [_SPACED[i] for i in rng.choices(range(len(VOCABULARY)), k=count)]
    finish: FinishReason = "stop"
    matched: int | str | None = EOS_TOKEN_ID
    if request.max_tokens is not None and len(rest) > request.max_tokens:
        rest, finish, matched = rest[: request.max_tokens], "length", None
    rest, stop = _apply_stop(rest, request.stop)
    if stop is not None:
        finish, matched = "stop", stop
    return OutputPlan(
        reasoning=[], content=rest, tool_name=None, tool_args=[], finish_reason=finish, matched_stop=matched
    )


def _after(prefix: str, pieces: list[str]) -> list[str] | None:
    """The pieces that follow ``prefix`` in ``pieces`` (the first one cut if it ends inside it), or
    None if the pieces do not begin with ``prefix``."""
    if not "".join(pieces).startswith(prefix):
        return None
    rest: list[str] = []
    used = 0
    for piece in pieces:
        end = used + len(piece)
        if end > len(prefix):
            rest.append(piece[max(0, len(prefix) - used) :])
        used = end
    return rest


def _plan_answer(request: ChatRequest, directives: Directives) -> OutputPlan:
    rng = random.Random(request_seed(request.texts))
    reasoning = text_tokens(rng, directives.reasoning)
    tool_name: str | None = None
    tool_args: list[str] = []
    content: list[str] = []

    if request.response_kind == "json_schema":
        content = split_json(_json_instance(request.schema, rng))
    elif request.response_kind == "json_object":
        content = split_json(_json_instance({"type": "object"}, rng))
    elif request.tool is not None:
        tool_name = request.tool.name
        parameters = request.tool.parameters if request.tool.parameters is not None else {"type": "object"}
        tool_args = split_json(_json_instance(parameters, rng))
    else:
        count = directives.tokens
        if count is None:
            count = MIN_DEFAULT_TOKENS + rng.randrange(MAX_DEFAULT_TOKENS - MIN_DEFAULT_TOKENS + 1)
        content = text_tokens(rng, count)

    finish: FinishReason = "tool_calls" if tool_name is not None else "stop"
    matched: int | str | None = EOS_TOKEN_ID
    budget = request.max_tokens
    if budget is not None:
        planned = len(reasoning) + len(content) + (1 + len(tool_args) if tool_name is not None else 0)
        if planned > budget:
            finish, matched = "length", None
            reasoning = reasoning[:budget]
            budget -= len(reasoning)
            if tool_name is not None:
                if budget == 0:
                    tool_name = None
                tool_args = tool_args[: max(budget - 1, 0)]
            content = content[:budget]
    if tool_name is None and content:
        content, stop = _apply_stop(content, request.stop)
        if stop is not None:
            finish, matched = "stop", stop
    return OutputPlan(
        reasoning=reasoning,
        content=content,
        tool_name=tool_name,
        tool_args=tool_args,
        finish_reason=finish,
        matched_stop=matched,
    )
