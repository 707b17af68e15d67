"""A link the user never closes still leaves nothing open at interpreter exit.

The ARKOS docs' own example does not close its `ArkModelLink`; each script here runs in a fresh
interpreter with `-W error::ResourceWarning` against the SGLang emulator, so an unclosed aiohttp session,
connector or socket shows up on stderr ("Unclosed client session", "Exception ignored in ...").
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_llm import running_fake_llm
from model_module import ArkModelLink, SystemMessage, UserMessage

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """\
import asyncio
import gc
import sys
from model_module.ArkModelNew import ArkModelLink, UserMessage, SystemMessage

BASE_URL = sys.argv[1]
messages = [SystemMessage(content="You are helpful"), UserMessage(content="Say hello")]
"""

SCRIPTS = {
    # The docs' example as written: the link is dropped when `test()` returns, inside the loop.
    "docs_example": """
        async def test():
            llm = ArkModelLink(base_url=BASE_URL)
            response = await llm.generate_response(messages, None)
            print(response)

        asyncio.run(test())
    """,
    "stream": """
        async def test():
            llm = ArkModelLink(base_url=BASE_URL)
            async for piece in llm.generate_stream(messages):
                print(piece, end="", flush=True)
            print()

        asyncio.run(test())
    """,
    "async_with": """
        async def test():
            async with ArkModelLink(base_url=BASE_URL) as llm:
                print(await llm.generate_response(messages, None))

        asyncio.run(test())
    """,
    "explicit_aclose": """
        async def test():
            llm = ArkModelLink(base_url=BASE_URL)
            print(await llm.generate_response(messages, None))
            await llm.aclose()
            await llm.aclose()

        asyncio.run(test())
    """,
    # A module-level link outlives its loop: the loop's shutdown has to close the client.
    "global_link_two_loops": """
        llm = ArkModelLink(base_url=BASE_URL)

        async def test():
            print(await llm.generate_response(messages, None))

        asyncio.run(test())
        asyncio.run(test())
    """,
    "global_link_closed_in_second_loop": """
        llm = ArkModelLink(base_url=BASE_URL)

        async def test():
            print(await llm.generate_response(messages, None))

        async def close():
            await llm.aclose()

        asyncio.run(test())
        asyncio.run(close())
    """,
    # `async with` in async generators left suspended: the loop's shutdown closes them and the links'
    # clients together, in an order that depends on where they land in memory, hence eight of them.
    "async_with_in_suspended_generators": """
        async def session():
            async with ArkModelLink(base_url=BASE_URL) as llm:
                yield await llm.generate_response(messages, None)
                yield "never reached"

        async def test():
            global suspended
            suspended = [session() for _ in range(8)]
            answers = {await anext(generator) for generator in suspended}
            print(*answers)

        asyncio.run(test())
    """,
    # Dropped while its loop keeps running: the client is closed then, not at exit.
    "dropped_mid_loop": """
        async def ask():
            llm = ArkModelLink(base_url=BASE_URL)
            return await llm.generate_response(messages, None)

        async def test():
            answer = await ask()
            gc.collect()
            await asyncio.sleep(0.2)
            print(answer)

        asyncio.run(test())
    """,
}

EXPECTED_LINES = {"global_link_two_loops": 2}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """An emulator on its own loop in a thread, so the scripts' interpreters can reach it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = running_fake_llm()
    try:
        url = asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10).base_url
        yield url
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def answer(base_url: str) -> str:
    async def ask() -> str:
        async with ArkModelLink(base_url=base_url) as llm:
            messages = [SystemMessage(content="You are helpful"), UserMessage(content="Say hello")]
            return await llm.generate_response(messages, None)

    return asyncio.run(ask())


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_exits_clean(name: str, base_url: str, answer: str) -> None:
    code = PRELUDE + textwrap.dedent(SCRIPTS[name])
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", code, base_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{answer}\n" * EXPECTED_LINES.get(name, 1)
    assert done.stderr == ""


def test_loops_in_threads_share_a_link(base_url: str, answer: str) -> None:
    """Loops in several threads may take turns with one link: none finds its client closed under it.

    stderr is not checked: a client the link lets go of when another loop takes over stays open, as
    only its own loop could close it and that loop may still be using it.
    """
    code = PRELUDE + textwrap.dedent("""
        import threading

        llm = ArkModelLink(base_url=BASE_URL)
        answers = []

        async def ask():
            for _ in range(5):
                answers.append(await llm.generate_response(messages, None))

        threads = [threading.Thread(target=asyncio.run, args=(ask(),)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(*answers, sep="\\n")
    """)
    done = subprocess.run(
        [sys.executable, "-c", code, base_url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{answer}\n" * 15, done.stderr
