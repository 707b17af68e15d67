"""One gateway process, 2,000 concurrent event streams (500 jobs, 4 readers each), a handful of Redis
connections: live events arrive on one shared subscription and are handed to every local reader."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import redis

from gateway.app import REDIS_CLIENT_NAME
from producer import Producer
from tests.servers import WorkerFleet, ark_env, start_gateway

JOBS = 500
READERS_PER_JOB = 4
#: What the issue allows one gateway process: 8 Redis connections, its subscription included.
MAX_CONNECTIONS = 8


async def read_stream(session: aiohttp.ClientSession, url: str, ready: asyncio.Event) -> list[int]:
    """The seqs of one SSE stream, in the order received; `ready` once the response has begun."""
    seqs = []
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        ready.set()
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("id:"):
                seqs.append(int(line[3:]))
    return seqs


def gateway_connections(admin: redis.Redis) -> int:
    return sum(1 for client in admin.client_list() if client.get("name") == REDIS_CLIENT_NAME)


async def test_two_thousand_readers_share_a_few_redis_connections(
    redis_url: str, fake_llm: str, fleet: WorkerFleet, log_dir: Path
) -> None:
    env = ark_env(redis_url, fake_llm, gateway__sse_heartbeat_s="5")
    process, url = start_gateway(log_dir, env)
    admin = redis.Redis.from_url(redis_url)
    most = 0
    try:
        # Jobs are queued first and run only once every reader is following: their events go live.
        async with Producer(redis_url) as producer:
            jobs = [
                await producer.enqueue([{"role": "user", "content": f"Job {i}. [[arkq:tokens=6 itl_ms=20]]"}])
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
                    readers.append(
                        asyncio.create_task(read_stream(session, f"{url}/v1/jobs/{job.id}/events", began))
                    )
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 120)
            most = max(most, gateway_connections(admin))
            fleet.env.update(ARK_WORKER__MAX_JOBS="250")
            await asyncio.to_thread(fleet.start, 2)
            everything = asyncio.gather(*readers)
            while not everything.done():
                most = max(most, gateway_connections(admin))
                await asyncio.wait({everything}, timeout=0.2)
            streams = everything.result()
        results = [await producer_result(redis_url, job.id) for job in jobs[:5]]
    finally:
        process.stop()
        admin.close()
    assert len(streams) == JOBS * READERS_PER_JOB
    for index, seqs in enumerate(streams):
        assert seqs == list(range(len(seqs))) and len(seqs) >= 8, (index, seqs)
    for job_index in range(JOBS):  # the four readers of one job saw the same sequence
        group = streams[job_index * READERS_PER_JOB : (job_index + 1) * READERS_PER_JOB]
        assert all(seqs == group[0] for seqs in group)
    assert all(result["status"] == "done" for result in results)
    print(f"gateway Redis connections at most: {most}; events per stream: {len(streams[0])}")
    assert 1 <= most <= MAX_CONNECTIONS, f"the gateway used {most} Redis connections"


async def producer_result(redis_url: str, job_id: str) -> dict[str, object]:
    async with Producer(redis_url) as producer:
        found = await producer.job(job_id).fetch_result()
    assert found is not None
    return json.loads(found.model_dump_json())
