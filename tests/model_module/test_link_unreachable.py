"""A server that cannot be reached: one cause per error, a refusal called a refusal, and no abort
sent to a server the link knows is down (the emulator's counters show what really reached it)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from fake_llm import running_fake_llm
from model_module import ArkModelLink, ModelError, UserMessage


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that nothing listens on (bound, never listening, so nothing else takes it)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


async def fail_to_stream(link: ArkModelLink) -> ModelError:
    with pytest.raises(ModelError) as caught:
        async for _ in link.stream([UserMessage(content="hi")], rid="job-1:1"):
            pass
    return caught.value


async def test_a_refused_connection_is_one_connect_error_that_says_refused(closed_port: int) -> None:
    async with ArkModelLink(base_url=f"http://127.0.0.1:{closed_port}/v1", max_retries=0) as link:
        error = await fail_to_stream(link)
    assert error.kind == "connect" and error.retryable
    report = str(error)
    assert report == (
        f"connect: the LLM server at 127.0.0.1:{closed_port} refused the connection: "
        "is it running, is llm.base_url right?"
    )
    assert "Timeout" not in report and "Connect call failed" not in report


async def test_an_unknown_host_is_named_as_such() -> None:
    async with ArkModelLink(base_url="http://no-such-host.invalid/v1", max_retries=0) as link:
        error = await fail_to_stream(link)
    assert error.kind == "connect"
    assert str(error).startswith("connect: cannot resolve the LLM server's host 'no-such-host.invalid' (")
    assert "Timeout" not in str(error)


async def test_no_abort_is_sent_to_a_server_that_could_not_be_reached(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with ArkModelLink(base_url=f"http://127.0.0.1:{closed_port}/v1", max_retries=0) as link:
        await fail_to_stream(link)
        assert link.server_unreached
        with caplog.at_level(logging.DEBUG, logger="arkq"):
            assert await link.abort("job-1:1") is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "skipped without a word"


async def test_aborts_resume_once_the_server_answers_again() -> None:
    async with running_fake_llm(ttft_ms=0, itl_ms=0) as srv:
        async with ArkModelLink(base_url=srv.base_url, max_retries=0) as link:
            link.server_unreached = True  # as after a failed connect, before the server came up
            async for _ in link.stream([UserMessage(content="hi")], max_tokens=2):
                pass
            assert not link.server_unreached
            assert await link.abort("job-1:1") is True
        assert srv.stats.aborted == 0  # nothing ran under that rid; the request reached the server


async def test_served_models_asks_the_server(closed_port: int) -> None:
    async with running_fake_llm(ttft_ms=0, itl_ms=0) as srv:
        async with ArkModelLink(base_url=srv.base_url) as link:
            assert await link.served_models() == ["tgi"]
        async with ArkModelLink(base_url=srv.base_url.removesuffix("/v1")) as link:
            with pytest.raises(ModelError) as caught:
                await link.served_models()
            assert caught.value.kind == "bad_response" and "not a model list" in str(caught.value)
    async with ArkModelLink(base_url=f"http://127.0.0.1:{closed_port}/v1") as link:
        with pytest.raises(ModelError, match="refused the connection"):
            await link.served_models()
