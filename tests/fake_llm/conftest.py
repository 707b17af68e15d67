"""Fixtures for the SGLang emulator tests: an in-process server and the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from fake_llm import FakeLLMServer, running_fake_llm


@pytest.fixture
async def srv() -> AsyncIterator[FakeLLMServer]:
    async with running_fake_llm() as server:
        yield server


@pytest.fixture
async def client(srv: FakeLLMServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="-", max_retries=0) as c:
        yield c
