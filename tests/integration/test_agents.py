"""ARKOS agents moved onto the queue by the link they are handed, and nothing else: the example holds the
same conversation on either link, and 200 agents at once, each a three-turn conversation with one tool
call, all complete through two workers with the transcripts they have through the direct link."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from arkq.contract import JobResult, parse_event
from arkq.keys import event_log_key
from examples.agent import conversation, converse
from model_module.ArkModelNew import ArkModelLink, QueuedModelLink
from producer import Producer
from tests.servers import WorkerFleet, ark_env

ROOT = Path(__file__).resolve().parents[2]
AGENTS = 200


def test_the_example_agent_holds_the_same_conversation_on_either_link(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "examples/agent.py"],
        cwd=ROOT,
        env=ark_env(redis_url, fake_llm),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert done.stdout.rstrip().endswith("--- the same conversation")
    assert "assistant calls get_weather(" in done.stdout


async def test_200_agents_at_once_hold_the_same_conversations_through_two_workers(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(2)
    names = [f"agent {index}" for index in range(AGENTS)]
    async with ArkModelLink(base_url=fake_llm) as direct, QueuedModelLink(redis_url=redis_url) as queued:
        through_direct = await asyncio.gather(*(converse(direct, name) for name in names))
        through_queue = await asyncio.gather(*(converse(queued, name) for name in names))
    assert len(through_queue) == AGENTS
    for name, transcript, expected in zip(names, through_queue, through_direct, strict=True):
        assert transcript == expected, name
        assert [line.removeprefix("user: ") for line in transcript if line.startswith("user: ")] == [
            text for text, _ in conversation(name)
        ]
        assert sum(line.startswith("assistant calls get_weather(") for line in transcript) == 1
        assert sum(line.startswith("tool: ") for line in transcript) == 1
        assert sum(line.startswith("assistant: ") for line in transcript) == 3
    async with Producer(redis_url) as producer:
        stored = await producer.redis.keys("ark:result:*")
        results = [JobResult.model_validate_json(raw) for raw in await producer.redis.mget(stored)]
        async with producer.redis.pipeline(transaction=False) as pipe:
            for result in results:
                pipe.lindex(event_log_key(result.job_id), 0)
            first_events = [parse_event(raw) for raw in await pipe.execute()]
    # Every model call was a job: the tool turn's two and one each for the others, all done.
    assert len(results) == AGENTS * 4
    assert {result.status for result in results} == {"done"}
    assert len({result.job_id for result in results}) == AGENTS * 4
    assert len({event.worker for event in first_events if event.type == "started"}) == 2, (
        "both workers ran jobs"
    )
