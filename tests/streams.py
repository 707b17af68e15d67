"""Reading event sequences as a subscriber would, for the fault tests."""

from __future__ import annotations

TERMINAL = frozenset({"done", "error", "cancelled"})


def text_of_last_attempt(events: list) -> str:
    """The answer as a subscriber rebuilds it: the tokens since the last `reset`."""
    text: list[str] = []
    for event in events:
        if event.type == "reset":
            text.clear()
        elif event.type == "token":
            text.append(event.text)
    return "".join(text)


def assert_one_end(events: list) -> None:
    """seq 0..n-1 without a gap, and exactly one terminal event, the last."""
    assert [event.seq for event in events] == list(range(len(events)))
    terminal = [event for event in events if event.type in TERMINAL]
    assert len(terminal) == 1 and events[-1] is terminal[0], [event.type for event in events]
