"""The backoff delay: exponential, capped, jittered, never earlier than the server asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arkq.backoff import Backoff
from arkq.errors import ModelError
from model_module.retry import MAX_RETRY_AFTER_S, RetryPolicy


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=120),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_within_equal_jitter_bounds(attempt: int, base: float, cap: float, draw: float) -> None:
    ceiling = min(cap, base * 2.0**attempt)
    delay = Backoff(base, cap).delay(attempt, rand=lambda: draw)
    assert ceiling / 2 <= delay <= ceiling


def test_delay_grows_exponentially_until_the_cap() -> None:
    top = [Backoff(0.5, 8.0).delay(n, rand=lambda: 1.0) for n in range(7)]
    bottom = [Backoff(0.5, 8.0).delay(n, rand=lambda: 0.0) for n in range(7)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert bottom == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_spreads_delays() -> None:
    delays = {Backoff(0.5, 8.0).delay(3) for _ in range(50)}
    assert len(delays) > 1
    assert all(2.0 <= d <= 4.0 for d in delays)


@given(retry_after=st.floats(min_value=0, max_value=1000), attempt=st.integers(min_value=0, max_value=10))
def test_retry_after_is_a_floor(retry_after: float, attempt: int) -> None:
    delay = Backoff(0.5, 8.0).delay(attempt, retry_after, rand=lambda: 0.5)
    assert delay >= retry_after
    assert delay == max(retry_after, Backoff(0.5, 8.0).delay(attempt, rand=lambda: 0.5))


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff(0.5, 8.0).delay(-1)


def test_policy_stops_after_max_retries_and_for_permanent_errors() -> None:
    policy = RetryPolicy(max_retries=2, base_s=0.1, max_s=1.0)
    transient = ModelError("server_error", "busy")
    assert policy.delay_for(transient, 0) is not None
    assert policy.delay_for(transient, 1) is not None
    assert policy.delay_for(transient, 2) is None
    assert policy.delay_for(ModelError("bad_request", "no"), 0) is None
    assert policy.delay_for(ModelError("context_overflow", "too long"), 0) is None


def test_policy_honours_retry_after_up_to_a_cap() -> None:
    policy = RetryPolicy(max_retries=3, base_s=0.1, max_s=1.0)
    assert policy.delay_for(ModelError("rate_limit", "slow", retry_after=5.0), 0) == 5.0
    too_long = ModelError("rate_limit", "slow", retry_after=MAX_RETRY_AFTER_S + 1)
    assert policy.delay_for(too_long, 0, rand=lambda: 0.0) == MAX_RETRY_AFTER_S
    capped = RetryPolicy(max_retries=3, base_s=0.1, max_s=1.0, max_retry_after_s=2.0)
    assert capped.delay_for(too_long, 0, rand=lambda: 1.0) == 2.0
    assert capped.delay_for(too_long, 3) is None  # the cap never adds a try


def test_a_budget_allows_max_retries_plus_one_requests_that_fail_before_output() -> None:
    policy = RetryPolicy(max_retries=2, base_s=0.1, max_s=1.0)
    budget = policy.budget()
    assert budget.limit == 3 and not budget.spent
    budget.failed = 3
    assert budget.spent
