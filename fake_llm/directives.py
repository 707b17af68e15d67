"""In-band fault directives: ``[[arkq:key=value ...]]`` inside message content.

Putting the switch in the prompt lets any client (the worker, a benchmark, a test) ask
for a specific failure without a side channel, and lets one server serve healthy and
faulty requests at the same time. The grammar is documented in the package docstring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from arkq.errors import ArkqError

__all__ = ["DirectiveError", "Directives", "FaultBudget", "parse_directives", "strip_directives"]

DIRECTIVE_RE = re.compile(r"\[\[arkq:([^\[\]]*)\]\]")

_INT_KEYS = frozenset(
    {"tokens", "status", "retry_after", "context_overflow", "stream_error", "error_after", "cut_after",
     "reasoning", "times", "stamp", "html", "flip_stream", "refuse_continue"}
)  # fmt: skip
_FLOAT_KEYS = frozenset({"ttft_ms", "itl_ms"})
FAULT_KEYS = frozenset({"status", "stream_error", "cut_after", "context_overflow", "html", "flip_stream"})


class DirectiveError(ArkqError, ValueError):
    """A directive names an unknown key or carries a value of the wrong kind."""


@dataclass(frozen=True, slots=True)
class Directives:
    """Everything the directives of one request asked for (``None`` = not asked)."""

    key: str = ""  # the exact directive text(s); what ``times`` counts against
    tokens: int | None = None
    status: int | None = None
    retry_after: int | None = None
    context_overflow: bool = False
    stream_error: int | None = None
    error_after: int = 0
    cut_after: int | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    reasoning: int = 0
    times: int | None = None
    stamp: bool = False  # streamed content tokens carry their send time (latency benchmarks)
    html: bool = False  # a 200 login page instead of the answer (a gateway in front of the server)
    flip_stream: bool = False  # answer streamed when not asked to, and not streamed when asked
    refuse_continue: bool = False  # 400 for continue_final_message, as a server without it answers

    @property
    def has_fault(self) -> bool:
        return (
            self.status is not None
            or self.stream_error is not None
            or self.cut_after is not None
            or self.context_overflow
            or self.html
            or self.flip_stream
        )

    def without_faults(self) -> Directives:
        """The same request once its ``times`` budget is spent: shaping stays, faults go."""
        return Directives(
            key=self.key,
            tokens=self.tokens,
            ttft_ms=self.ttft_ms,
            itl_ms=self.itl_ms,
            reasoning=self.reasoning,
            stamp=self.stamp,
            refuse_continue=self.refuse_continue,
        )


NO_DIRECTIVES = Directives()


def strip_directives(text: str) -> str:
    """Remove directive markup so it never influences generated text or token counts."""
    if "[[arkq:" not in text:
        return text
    return DIRECTIVE_RE.sub("", text)


def parse_directives(texts: Iterable[str]) -> Directives:
    """Collect the directives found in ``texts``; later values override earlier ones."""
    found: list[str] = []
    for text in texts:
        if "[[arkq:" in text:
            found.extend(m.group(0) for m in DIRECTIVE_RE.finditer(text))
    if not found:
        return NO_DIRECTIVES

    values: dict[str, int | float] = {}
    for directive in found:
        body = DIRECTIVE_RE.fullmatch(directive)
        assert body is not None
        for item in body.group(1).split():
            name, sep, raw = item.partition("=")
            if not sep:
                raise DirectiveError(f"arkq directive item {item!r} is not key=value")
            try:
                if name in _INT_KEYS:
                    values[name] = int(raw)
                elif name in _FLOAT_KEYS:
                    values[name] = float(raw)
                else:
                    raise DirectiveError(f"unknown arkq directive key {name!r}")
            except ValueError as exc:
                if isinstance(exc, DirectiveError):
                    raise
                raise DirectiveError(f"arkq directive {name}={raw!r} is not a number") from None
            if values[name] < 0:
                raise DirectiveError(f"arkq directive {name} must not be negative")

    def as_int(name: str) -> int | None:
        value = values.get(name)
        return None if value is None else int(value)

    status = as_int("status")
    if status is not None and not 400 <= status <= 599:
        raise DirectiveError("arkq directive status must be an HTTP error code (400-599)")
    stream_error = as_int("stream_error")
    if stream_error is not None and not 400 <= stream_error <= 599:
        raise DirectiveError("arkq directive stream_error must be an HTTP error code (400-599)")
    ttft = values.get("ttft_ms")
    itl = values.get("itl_ms")
    return Directives(
        key=" ".join(found),
        tokens=as_int("tokens"),
        status=status,
        retry_after=as_int("retry_after"),
        context_overflow=bool(values.get("context_overflow", 0)),
        stream_error=stream_error,
        error_after=as_int("error_after") or 0,
        cut_after=as_int("cut_after"),
        ttft_ms=None if ttft is None else float(ttft),
        itl_ms=None if itl is None else float(itl),
        reasoning=as_int("reasoning") or 0,
        times=as_int("times"),
        stamp=bool(values.get("stamp", 0)),
        html=bool(values.get("html", 0)),
        flip_stream=bool(values.get("flip_stream", 0)),
        refuse_continue=bool(values.get("refuse_continue", 0)),
    )


class FaultBudget:
    """Counts requests per exact directive text so ``times=N`` faults stop after N hits.

    Retry tests need "fail twice, then succeed" for the very same request body; keying on
    the directive text (not the whole prompt) keeps that stable while the caller changes
    other parts of the conversation.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def apply(self, directives: Directives) -> Directives:
        """Return ``directives`` as they hold for this request, consuming one use."""
        if directives.times is None or not directives.has_fault:
            return directives
        count = self._seen.get(directives.key, 0) + 1
        self._seen[directives.key] = count
        return directives if count <= directives.times else directives.without_faults()
