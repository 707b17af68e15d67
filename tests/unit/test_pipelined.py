"""Pipelined script calls: written at once, each reply to its own call, in order."""

import asyncio
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ResponseError

from arkq import scripts
from arkq.keys import event_log_key, lease_key, result_key
from arkq.lease import Lease
from arkq.pipelined import PipelinedCalls
from worker.publisher import EventPublisher


def publish_call(job_id: str, first: int, events: list[bytes], token: bytes = b"t") -> tuple[list, list]:
    """The keys and arguments of a `publish.lua` call for one job's events."""
    keys = [k.encode() for k in (lease_key(job_id), event_log_key(job_id), result_key(job_id))]
    header = token + b"\n0\n%d\n%d\n0\nark:tokens:%s" % (first, len(events), job_id.encode())
    return keys, [header, *events]


class Replies:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []
        self.all_in = asyncio.Event()
        self.expected = 0

    def to(self, name: str):
        self.expected += 1

        def done(reply: Any) -> None:
            self.got.append((name, reply))
            if len(self.got) == self.expected:
                self.all_in.set()

        return done


async def test_calls_are_written_at_once_and_each_reply_goes_to_its_call_in_order(
    fake_redis: ArqRedis,
) -> None:
    calls = PipelinedCalls(fake_redis, scripts.PUBLISH)
    replies = Replies()
    for n in range(20):
        await fake_redis.set(lease_key(f"j{n}"), "t")
    for n in range(20):  # twenty calls made without a wait in between
        calls.call(*publish_call(f"j{n}", 0, [b"e"] * (n + 1)), replies.to(f"j{n}"))
    assert calls.outstanding == 20
    await asyncio.wait_for(replies.all_in.wait(), 2)
    assert replies.got == [(f"j{n}", [n + 1]) for n in range(20)]
    assert calls.outstanding == 0


async def test_a_server_that_does_not_know_the_script_runs_the_call_whole(fake_redis: ArqRedis) -> None:
    await fake_redis.set(lease_key("j"), "t")
    await fake_redis.script_flush()  # as after a Redis restart
    calls = PipelinedCalls(fake_redis, scripts.PUBLISH)
    replies = Replies()
    calls.call(*publish_call("j", 0, [b"a"]), replies.to("first"))
    calls.call(*publish_call("j", 1, [b"b"]), replies.to("second"))
    await asyncio.wait_for(replies.all_in.wait(), 2)
    assert sorted(replies.got) == [("first", [1]), ("second", [2])]
    assert await fake_redis.lrange(event_log_key("j"), 0, -1) == [b"a", b"b"]
    assert await fake_redis.script_exists(scripts.PUBLISH.sha) == [True], "later calls go by SHA again"


async def test_an_error_reply_fails_its_call_alone(fake_redis: ArqRedis) -> None:
    for job in ("before", "after"):
        await fake_redis.set(lease_key(job), "t")
    calls = PipelinedCalls(fake_redis, scripts.PUBLISH)
    replies = Replies()
    calls.call(*publish_call("before", 0, [b"a"]), replies.to("before"))
    calls.call([b"k1", b"k2", b"k3"], [b"not a header"], replies.to("malformed"))
    calls.call(*publish_call("after", 0, [b"b"]), replies.to("after"))
    await asyncio.wait_for(replies.all_in.wait(), 2)
    assert [name for name, _ in replies.got] == ["before", "malformed", "after"]
    assert replies.got[0][1] == [1] and replies.got[2][1] == [1]
    assert isinstance(replies.got[1][1], ResponseError)


async def test_a_stopped_reader_fails_what_was_out_and_the_next_call_goes_on_a_fresh_connection(
    fake_redis: ArqRedis,
) -> None:
    await fake_redis.set(lease_key("j"), "t")
    calls = PipelinedCalls(fake_redis, scripts.PUBLISH)
    connected = Replies()
    calls.call(*publish_call("j", 0, [b"a"]), connected.to("first"))
    await asyncio.wait_for(connected.all_in.wait(), 2)
    replies = Replies()
    calls.call(*publish_call("j", 1, [b"b"]), replies.to("lost"))  # written at once: connected
    assert calls._task is not None
    calls._task.cancel()  # its reply is left on the connection, unread
    await asyncio.wait_for(replies.all_in.wait(), 2)
    assert isinstance(replies.got[0][1], Exception)
    later = Replies()
    calls.call(*publish_call("j", 2, [b"c"]), later.to("later"))
    await asyncio.wait_for(later.all_in.wait(), 2)
    assert later.got == [("later", [3])], "its own reply, not the stopped call's ([2])"


async def test_a_callback_that_raises_is_logged_and_the_other_calls_are_still_answered(
    fake_redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    for job in ("a", "b"):
        await fake_redis.set(lease_key(job), "t")
    calls = PipelinedCalls(fake_redis, scripts.PUBLISH)
    replies = Replies()

    def broken(reply: Any) -> None:
        raise ValueError("a bug in handling a reply")

    calls.call(*publish_call("a", 0, [b"x"]), broken)
    calls.call(*publish_call("b", 0, [b"y"]), replies.to("b"))
    await asyncio.wait_for(replies.all_in.wait(), 2)
    assert replies.got == [("b", [1])]
    assert "handling a Redis reply failed" in caplog.text and "a bug in handling a reply" in caplog.text


async def test_a_job_whose_bookkeeping_fails_fails_alone(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    publishers = []
    for job in ("broken", "fine"):
        await fake_redis.set(lease_key(job), "t")
        publishers.append(
            EventPublisher.open(fake_redis, Lease(job, "t"), channel_prefix="ark:", log_ttl_s=60)
        )
    broken, fine = publishers

    def wrote(count: int, *, ended: bool = False) -> None:
        raise ValueError("a bug in one job's bookkeeping")

    monkeypatch.setattr(broken, "wrote", wrote)
    for pub in publishers:  # in one pass: one call for both
        pub.put_text("token", "x")
    with pytest.raises(ValueError, match="bookkeeping"):
        await asyncio.wait_for(broken.flush(), 2)
    await asyncio.wait_for(fine.flush(), 2)
    assert await fake_redis.llen(event_log_key("fine")) == 1
