"""A request budget handed to `ArkModelLink.stream` again (as a worker does for each attempt of a job)
keeps counting: failures before output stay bounded for the whole job, not per call."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from arkq.errors import ModelError
from fake_llm import running_fake_llm
from model_module import ArkModelLink, Finish, StreamEvent
from model_module.retry import RequestBudget


async def drain(llm: ArkModelLink, prompt: str, budget: RequestBudget | None) -> list[StreamEvent]:
    async with aclosing(llm.stream([{"role": "user", "content": prompt}], budget=budget)) as events:
        return [event async for event in events]


async def test_a_budget_passed_again_keeps_counting_across_calls() -> None:
    async with running_fake_llm() as server:
        llm = ArkModelLink(base_url=server.base_url, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02)
        budget = llm.retry_policy.budget()
        events = await drain(llm, "[[arkq:status=503 times=2 tokens=3]]", budget)
        assert isinstance(events[-1], Finish)
        assert (budget.sent, budget.failed) == (3, 2)
        with pytest.raises(ModelError) as refused:
            await drain(llm, "[[arkq:status=502 times=1000]]", budget)
        assert refused.value.status_code == 502
        assert (budget.sent, budget.failed) == (4, 3)  # one more request, then the budget was spent
        assert server.stats.requests == 4
        await llm.aclose()


async def test_without_a_budget_each_call_gets_its_own() -> None:
    async with running_fake_llm() as server:
        llm = ArkModelLink(base_url=server.base_url, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02)
        for _ in range(2):
            with pytest.raises(ModelError):
                await drain(llm, "[[arkq:status=502 times=1000]]", None)
        assert server.stats.requests == 4
        await llm.aclose()
