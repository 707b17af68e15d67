"""One gateway process, 2,000 concurrent event streams (500 jobs, 4 readers each), a handful of Redis
connections: live events arrive on one shared subscription and are handed to every local reader. And
the shared subscription takes in a reader that arrives while it is still subscribing."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from pathlib import Path

import aiohttp
import redis.asyncio

from arkq.contract import TokenEvent, encode_event
from gateway.app import REDIS_CLIENT_NAME
from producer import Producer
from producer.hub import Hub
from tests.servers import WorkerFleet, ark_env, start_gateway

JOBS = 500
READERS_PER_JOB = 4
#: What one gateway process may use: 8 Redis connections, its subscription included.
MAX_CONNECTIONS = 8
#: Open files this test and the gateway (which inherits the limit) need: a socket per stream each.
FILES_NEEDED = 2 * JOBS * READERS_PER_JOB + 1024


def enough_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FILES_NEEDED:
        wanted = FILES_NEEDED if hard == resource.RLIM_INFINITY else min(FILES_NEEDED, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


Events = list[tuple[int, str]]


async def read_stream(session: aiohttp.ClientSession, url: str, ready: asyncio.Event) -> Events:
    """The `(id, event)` of each event of one SSE stream, in the order received; `ready` once the
    response has begun."""
    events: Events = []
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        ready.set()
        seq, kind = None, None
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("id:"):
                seq = int(line[3:])
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line == "" and seq is not None:  # the end of one event (a ping comment has no id)
                events.append((seq, kind or "message"))
                seq, kind = None, None
    return events


async def gateway_connections(admin: redis.asyncio.Redis) -> int:
    """How many connections Redis has from the gateway now (they carry its client name)."""
    return sum(1 for client in await admin.client_list() if client.get("name") == REDIS_CLIENT_NAME)


async def test_two_thousand_readers_share_a_few_redis_connections(
    redis_url: str, fake_llm: str, fleet: WorkerFleet, log_dir: Path
) -> None:
    enough_open_files()
    env = ark_env(redis_url, fake_llm, gateway__sse_heartbeat_s="5")
    process, url = start_gateway(log_dir, env)
    admin = redis.asyncio.Redis.from_url(redis_url)
    samples: list[int] = []

    async def count_connections() -> None:
        while True:
            samples.append(await gateway_connections(admin))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(count_connections())
    try:
        # Jobs are queued first and run only once every reader is following: their events go live.
        async with Producer(redis_url) as producer:
            jobs = [
                await producer.enqueue(
                    [{"role": "user", "content": f"Job {i}. [[arkq:tokens=6 itl_ms=20]]"}], max_tokens=6
                )
                for i in range(JOBS)
            ]
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                readers, ready = [], []
                for job in jobs:
                    for _ in range(READERS_PER_JOB):
                        began = asyncio.Event()
                        ready.append(began)
                        stream = read_stream(session, f"{url}/v1/jobs/{job.id}/events", began)
                        readers.append(asyncio.create_task(stream))
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 120)
                fleet.env.update(ARK_WORKER__MAX_JOBS="250")
                await asyncio.to_thread(fleet.start, 2)
                streams = await asyncio.wait_for(asyncio.gather(*readers), 300)
            samples.append(await gateway_connections(admin))
            counts = [await job.event_count() for job in jobs]
            results = [await job.fetch_result() for job in jobs]
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        process.stop()
        await admin.aclose()
    assert len(streams) == JOBS * READERS_PER_JOB
    for index, events in enumerate(streams):
        count = counts[index // READERS_PER_JOB]
        # Every event of the job's log, each once, in order, ending with `done`.
        assert [seq for seq, _ in events] == list(range(count)), (index, events)
        assert events[-1][1] == "done" and count >= 8, (index, events)
    for result in results:
        assert result is not None and result.status == "done", result
    most = max(samples)
    print(f"gateway Redis connections: at most {most} in {len(samples)} samples; {counts[0]} events a job")
    assert 1 <= most <= MAX_CONNECTIONS, f"the gateway used {most} Redis connections"


async def test_a_reader_that_comes_while_the_hub_subscribes_gets_live_events(redis_url: str) -> None:
    """The hub subscribes every followed channel when it connects; a channel first followed while that
    SUBSCRIBE is on its way is subscribed right after, not left to the log's quiet checks."""
    client = redis.asyncio.Redis.from_url(redis_url)
    hub = Hub(client, dead_after_s=30, connect_wait_s=5)
    hub.start()
    try:
        await asyncio.sleep(0)  # the hub is connecting and subscribing: it is not connected yet
        feed = await hub.follow("ark:test:late")

        async def subscribed() -> bool:
            reply = await client.pubsub_numsub("ark:test:late")
            return bool(reply[0][1] == 1)

        deadline = asyncio.get_running_loop().time() + 10
        while not await subscribed():
            assert asyncio.get_running_loop().time() < deadline, "the late channel was never subscribed"
            await asyncio.sleep(0.05)
        await client.publish("ark:test:late", encode_event(TokenEvent(job_id="late", seq=0, text="live")))
        event = await feed.next_event(timeout=10)
        assert isinstance(event, TokenEvent) and event.text == "live"
        await feed.aclose()
    finally:
        await hub.aclose()
        await client.aclose()
