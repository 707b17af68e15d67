"""A Redis that stops answering without closing anything (a failed host, a partition, a NAT that forgot
the connection) is noticed within `redis.dead_after_s`, by every kind of connection arkq holds.

The Redis here sits behind `tests.tcp_proxy`, which can go silent with every socket left open: `stall`
(nothing flows until `resume`) and `forget` (the open connections never carry another byte; new ones
work). Before arkq had read timeouts and heartbeats, each test below hung on a connection like that.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.connection import Heartbeat, connect, keepalive_options
from arkq.keys import event_log_key, lease_key, wake_channel
from config_module.loader import load_config
from config_module.settings import ArkConfig
from producer import Producer, RedisUnavailable
from tests.servers import WorkerFleet, ark_env
from tests.streams import assert_one_end, text_of_last_attempt
from tests.tcp_proxy import ProxyProcess
from tests.waiting import until
from worker.settings import redis_pool

#: Seconds of silence that make a connection dead, in these tests: short, so that each takes seconds.
DEAD_AFTER_S = 1.0


def fast(**settings: str) -> ArkConfig:
    return load_config({"ARK_REDIS__DEAD_AFTER_S": str(DEAD_AFTER_S), **settings})


@pytest.fixture
def proxy(redis_url: str) -> Iterator[ProxyProcess]:
    """The test's Redis behind a proxy that can go silent."""
    started = ProxyProcess(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    yield started
    started.stop()


async def test_every_connection_has_tcp_keepalive_set_from_dead_after_s(redis_url: str) -> None:
    config = load_config({"ARK_REDIS__DEAD_AFTER_S": "12"})
    for client in (connect(config, redis_url), redis_pool(config, redis_url)):
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe("anything")  # a pub/sub connection: made like the others
            assert pubsub.connection is not None
            # The socket redis-py opened, as redis-py itself reaches it to set its options.
            sock = pubsub.connection._writer.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            for option, value in keepalive_options(12).items():
                assert sock.getsockopt(socket.IPPROTO_TCP, option) == value
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 6
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()


async def test_a_quiet_subscription_stays_up_and_a_silent_one_is_found_dead(
    proxy: ProxyProcess, aredis: redis.asyncio.Redis
) -> None:
    client = connect(fast(), proxy.url())
    pubsub = client.pubsub()
    try:
        live = Heartbeat(pubsub, DEAD_AFTER_S)
        await pubsub.subscribe("quiet")
        # Nothing is published for four times dead_after_s: the answered pings keep it alive.
        quiet_until = time.monotonic() + 4 * DEAD_AFTER_S
        while time.monotonic() < quiet_until:
            assert await live.get_message(timeout=0.25) is None
        assert await aredis.publish("quiet", "still here") == 1
        assert (await next_message(live))["data"] == b"still here"

        proxy.forget()
        with pytest.raises(RedisTimeoutError, match="dead_after_s"):
            await asyncio.wait_for(next_message(live), 30)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def next_message(live: Heartbeat) -> dict[str, Any]:
    while (message := await live.get_message(timeout=0.25)) is None:
        pass
    return message


async def test_a_reader_whose_connections_go_silent_catches_up(
    proxy: ProxyProcess, fleet: WorkerFleet
) -> None:
    fleet.start(1)  # the worker reaches Redis directly: only the reader's connections go silent
    async with Producer(proxy.url(), config=fast()) as producer:
        job = await producer.enqueue([{"role": "user", "content": "[[arkq:tokens=80 itl_ms=40]]"}])
        seen: list[Any] = []

        async def follow() -> None:
            async for event in producer.job(job.id).events():
                seen.append(event)

        reader = asyncio.create_task(follow())
        await until(lambda: any(event.type == "token" for event in seen), 20, "the first token")
        proxy.forget()  # every connection the reader holds now, its subscription included, goes silent
        at_silence = len(seen)
        await asyncio.wait_for(reader, 60)
        assert_one_end(seen)
        assert seen[-1].type == "done"
        assert any(event.type == "token" for event in seen[at_silence:]), "it went on after the silence"
        result = await job.result(timeout=10)
        assert result.text == text_of_last_attempt(seen) == seen[-1].text


async def test_enqueue_moves_past_a_dead_connection_and_fails_in_time_on_a_silent_redis(
    proxy: ProxyProcess,
) -> None:
    connect_timeout_s = 4  # well above dead_after_s: time to find a connection dead and make another
    config = fast(ARK_REDIS__CONNECT_TIMEOUT_S=str(connect_timeout_s))
    async with Producer(proxy.url(), config=config) as producer:
        proxy.forget()  # the producer's connection is dead; a new one works
        first = await producer.enqueue([{"role": "user", "content": "after a dead connection"}])
        assert await first.exists()

        proxy.stall()  # now Redis answers nobody
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as silent:
            await producer.enqueue([{"role": "user", "content": "into the silence"}])
        # Named for what it is: silence (not a refusal), from which server, and how long it was given.
        said = f"did not answer: no answer from {proxy.url()} within {connect_timeout_s}"
        assert said in str(silent.value)
        assert time.monotonic() - started < connect_timeout_s + 10

        proxy.resume()  # the same producer, not reopened, works again
        again = await producer.enqueue([{"role": "user", "content": "after the silence"}])
        assert await again.exists()


async def test_after_a_partition_one_call_fails_in_time_and_the_next_ones_open_fresh_connections(
    proxy: ProxyProcess,
) -> None:
    # Below dead_after_s: a call that meets a dead connection fails; the pool must not make every
    # call after it meet one of its other dead connections too.
    config = fast(ARK_REDIS__CONNECT_TIMEOUT_S="0.5")
    async with Producer(proxy.url(), config=config) as producer:
        jobs = [await producer.enqueue([{"role": "user", "content": f"job {i}"}]) for i in range(4)]
        await asyncio.gather(*(job.state() for job in jobs))  # four connections, idle in the pool now
        proxy.forget()  # every open connection is dead; new ones work
        with pytest.raises(RedisUnavailable):
            await jobs[0].state()
        # Callers at once, as a busy producer has them: each takes a pooled connection.
        states = await asyncio.gather(*(job.state() for job in jobs))
        assert [state.status for state in states] == ["queued"] * len(jobs)


async def test_a_worker_whose_connections_go_silent_hands_its_job_over_and_carries_on(
    proxy: ProxyProcess, producer: Producer, fake_llm: str, log_dir: Path
) -> None:
    settings = {"worker__lease_s": "2", "worker__lease_renew_s": "0.2"}
    env = ark_env(proxy.url(), fake_llm, redis__dead_after_s=str(DEAD_AFTER_S), **settings)
    fleet = WorkerFleet(log_dir / "dead-peer-worker", env)
    fleet.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        [worker] = fleet.start(1)
        await until(wake_subscribers_at_least(producer, 1), 20, "the wake-up listener")
        job = await producer.enqueue([{"role": "user", "content": "[[arkq:tokens=100 itl_ms=30]]"}])
        await until(lambda: has_token(producer, job.id), 20, "the first token")

        proxy.stall()  # a partition: Redis goes on without the worker, and the job's lease lapses

        async def lease_lapsed() -> bool:
            return not await producer.redis.exists(lease_key(job.id))

        await until(lease_lapsed, 20, "the cut-off worker's lease to lapse")
        proxy.forget()  # the partition heals, but the worker's connections are gone for good
        proxy.resume()

        result = await job.result(timeout=60)
        events = [event async for event in producer.job(job.id).events()]
        assert_one_end(events)
        types = [event.type for event in events]
        assert result.attempts >= 2 and "reset" not in types  # the new attempt continued the answer
        assert result.text == events[-1].text == text_of_last_attempt(events)

        # The same process, never restarted, listens for wake-ups again and serves the next job. (The
        # forgotten subscription still counts at Redis: the proxy holds its end open.)
        await until(wake_subscribers_at_least(producer, 2), 20, "a new wake-up subscription")
        later = await producer.enqueue([{"role": "user", "content": "[[arkq:tokens=5]]"}])
        assert (await later.result(timeout=30)).usage["completion_tokens"] == 5
        assert fleet.alive() == [worker]
    except BaseException:
        print(fleet.logs()[-20000:])
        raise
    finally:
        fleet.stop()


def wake_subscribers_at_least(producer: Producer, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        [(_, subscribers)] = await producer.redis.pubsub_numsub(wake_channel(producer.config.queue.name))
        return bool(subscribers >= count)

    return check


async def has_token(producer: Producer, job_id: str) -> bool:
    return any(b'"type":"token"' in raw for raw in await producer.redis.lrange(event_log_key(job_id), 0, -1))
