"""The replay log and the live channel together give every reader the whole sequence, once, in order."""

import asyncio
import gc
import weakref

import fakeredis
import pytest
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from arkq import scripts
from arkq.contract import DoneEvent, JobResult, StartedEvent, Timings, TokenEvent, encode_event, parse_event
from arkq.errors import JobLost, LeaseLost
from arkq.keys import event_channel, event_log_key, lease_key, result_key
from arkq.lease import Lease
from arkq.pipelined import Done, PipelinedCalls
from producer.events import read_event_batches
from tests.waiting import until
from worker.publisher import EventPublisher, EventWriter

PREFIX = "ark:tokens:"


async def still_pending() -> bool:
    return True


async def collect(redis: ArqRedis, job_id: str, is_pending=still_pending) -> list:
    reader = read_event_batches(
        redis, job_id, channel_prefix=PREFIX, is_pending=is_pending, quiet_check_s=0.05
    )
    return [event async for batch in reader for event in batch]


def log_readers(redis: ArqRedis) -> set[asyncio.Task]:
    """The tasks that have read a replay log through `redis`, filled in as they do. A reader subscribes
    before it reads the log, so one in this set follows the live channel from then on."""
    readers: set[asyncio.Task] = set()
    lrange = redis.lrange

    async def recorded(*args: object) -> list:
        rows = await lrange(*args)
        task = asyncio.current_task()
        if task is not None:
            readers.add(task)
        return rows

    redis.lrange = recorded  # type: ignore[method-assign]  # this test's own client
    return readers


async def following(readers: set[asyncio.Task], reader: asyncio.Task) -> None:
    """Until `reader` has subscribed and read the log once: it is waiting on the live channel."""
    await until(lambda: reader in readers or reader.done(), 2, "the reader to follow the live channel")


async def publisher(redis: ArqRedis, job_id: str = "j", token: str = "attempt-1") -> EventPublisher:
    """A publisher holding the job's lease, as a worker's attempt does."""
    await redis.set(lease_key(job_id), token)
    log = await redis.lrange(event_log_key(job_id), 0, -1)
    return EventPublisher.open(redis, Lease(job_id, token, log=log), channel_prefix=PREFIX, log_ttl_s=60)


async def end_done(pub: EventPublisher, text: str) -> None:
    """End the job `done` with `text`, as a worker's attempt does."""
    timings = Timings(enqueued_at=0, started_at=0, finished_at=0)
    result = JobResult(job_id=pub.job_id, status="done", text=text, timings=timings)
    await pub.end(result, DoneEvent, 60, text=text, finish_reason="stop", usage=None)


async def test_seq_counts_from_zero_and_the_log_expires(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    first = await pub.publish(StartedEvent, attempt=1, worker="w")
    second = await pub.publish(TokenEvent, text="a")
    assert (first.seq, second.seq) == (0, 1)
    assert 0 < await fake_redis.ttl(event_log_key("j")) <= 60


async def test_the_log_ttl_is_set_first_and_last_not_by_every_call(fake_redis: ArqRedis) -> None:
    log = event_log_key("j")
    pub = await publisher(fake_redis)
    await pub.publish(StartedEvent, attempt=1, worker="w")
    assert 50_000 < await fake_redis.pttl(log) <= 60_000
    await fake_redis.pexpire(log, 30_000)  # stands for time gone by (less than a quarter of the TTL later)
    await pub.publish(TokenEvent, text="a")
    assert await fake_redis.pttl(log) <= 30_000, "a token's call leaves the TTL alone"
    result = JobResult(job_id="j", status="done", timings=Timings(enqueued_at=0, started_at=0, finished_at=0))
    await pub.end(result, DoneEvent, 60, text="a", finish_reason="stop", usage=None)
    assert await fake_redis.pttl(log) > 50_000, "the end sets it again: the log lives on after its last event"


async def test_a_second_attempt_continues_the_sequence(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    await pub.publish(StartedEvent, attempt=1, worker="w")
    await pub.publish(TokenEvent, text="a")
    again = await publisher(fake_redis, token="attempt-2")
    assert (again.attempts, again.dirty, again.ended) == (1, True, False)
    assert (await again.publish(StartedEvent, attempt=2, worker="w")).seq == 2


async def test_an_attempt_that_lost_its_lease_cannot_publish(fake_redis: ArqRedis) -> None:
    old = await publisher(fake_redis, token="attempt-1")
    await old.publish(StartedEvent, attempt=1, worker="w")
    new = await publisher(fake_redis, token="attempt-2")  # another worker took the job over
    with pytest.raises(LeaseLost):
        await old.publish(TokenEvent, text="stale")
    await new.publish(StartedEvent, attempt=2, worker="w2")
    assert [e.attempt for e in await collect_now(fake_redis)] == [1, 2]


async def test_the_ending_call_gives_the_lease_up_and_a_retry_of_it_is_not_refused(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = Lease("j", "attempt-1")
    await fake_redis.set(lease_key("j"), held.token)
    pub = EventPublisher.open(fake_redis, held, channel_prefix=PREFIX, log_ttl_s=60)
    calls: list[tuple[list[bytes], list[bytes]]] = []
    real_call = PipelinedCalls.call

    def recorded(sender: PipelinedCalls, keys: list[bytes], args: list[bytes], done: Done) -> None:
        calls.append((keys, args))
        real_call(sender, keys, args, done)

    monkeypatch.setattr(PipelinedCalls, "call", recorded)
    await pub.publish(StartedEvent, attempt=1, worker="w")
    assert await fake_redis.get(lease_key("j")) == b"attempt-1" and not held.given_up
    result = JobResult(job_id="j", status="done", timings=Timings(enqueued_at=0, started_at=0, finished_at=0))
    await pub.end(result, DoneEvent, 60, text="", finish_reason="stop", usage=None)
    assert held.given_up, "the attempt knows its lease went with the end"
    assert await fake_redis.exists(lease_key("j")) == 0, "the next attempt, or nobody, may take it at once"
    assert [e.type for e in await collect_now(fake_redis)] == ["started", "done"]
    (start_keys, start_args), (end_keys, end_args) = calls
    # The client sends the ending call again (its reply was lost): it was written, so it is not refused.
    assert await scripts.PUBLISH(fake_redis, keys=end_keys, args=end_args) == [2]
    # Any other call of the attempt is fenced as before: its lease is gone.
    assert await scripts.PUBLISH(fake_redis, keys=start_keys, args=start_args) == [-1]
    assert [e.type for e in await collect_now(fake_redis)] == ["started", "done"]


async def test_a_stalled_attempts_end_is_refused_after_another_attempt_ended_the_job(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt 1 stalls past its lease; attempt 2 takes the job and ends it (its end gives the lease
    up). Attempt 1's ending call then finds no lease and a log as long as its own end would make it,
    but not its result: it is refused, not taken for its own retry."""
    stalled = await publisher(fake_redis, token="attempt-1")
    await stalled.publish(StartedEvent, attempt=1, worker="w1")
    taking_over = await publisher(fake_redis, token="attempt-2")
    await taking_over.publish(StartedEvent, attempt=2, worker="w2")
    await end_done(taking_over, "two")
    assert await fake_redis.exists(lease_key("j")) == 0
    await fake_redis.rpop(event_log_key("j"))  # a log as long as attempt 1's end would make it
    with pytest.raises(LeaseLost):
        await end_done(stalled, "one")
    stored = JobResult.model_validate_json(await fake_redis.get(result_key("j")))
    assert stored.text == "two"


async def test_an_end_is_refused_to_an_attempt_whose_lease_another_holds(fake_redis: ArqRedis) -> None:
    old = await publisher(fake_redis, token="attempt-1")
    await old.publish(StartedEvent, attempt=1, worker="w")
    await fake_redis.set(lease_key("j"), "attempt-2")
    with pytest.raises(LeaseLost):
        await end_done(old, "")
    assert await fake_redis.get(lease_key("j")) == b"attempt-2"


async def collect_now(redis: ArqRedis) -> list:
    return [parse_event(raw) for raw in await redis.lrange(event_log_key("j"), 0, -1)]


async def test_readers_arriving_before_during_and_after_see_the_same_sequence(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    readers = log_readers(fake_redis)
    early = asyncio.create_task(collect(fake_redis, "j"))
    await following(readers, early)
    await pub.publish(StartedEvent, attempt=1, worker="w")
    for text in "abc":
        await pub.publish(TokenEvent, text=text)
    middle = asyncio.create_task(collect(fake_redis, "j"))
    await following(readers, middle)
    for text in "def":
        await pub.publish(TokenEvent, text=text)
    await pub.publish(DoneEvent, finish_reason="stop", usage=None, text="abcdef")
    late = await collect(fake_redis, "j")
    for events in (await early, await middle, late):
        assert [e.seq for e in events] == list(range(8))
        assert "".join(e.text for e in events if e.type == "token") == "abcdef"
        assert events[-1].type == "done"


async def test_a_lost_live_message_is_recovered_from_the_log(fake_redis: ArqRedis) -> None:
    readers = log_readers(fake_redis)
    reader = asyncio.create_task(collect(fake_redis, "j"))
    await following(readers, reader)
    channel, log = event_channel(PREFIX, "j"), event_log_key("j")
    events = [
        StartedEvent(job_id="j", seq=0, attempt=1, worker="w"),
        TokenEvent(job_id="j", seq=1, text="x"),
        DoneEvent(job_id="j", seq=2, finish_reason="stop", usage=None, text="x"),
    ]
    for event in events:
        await fake_redis.rpush(log, encode_event(event))
    # Only the last event reaches the channel; the reader must notice the gap and fill it from the log.
    await fake_redis.publish(channel, encode_event(events[-1]))
    assert await asyncio.wait_for(reader, 2) == events


async def test_duplicated_live_messages_are_yielded_once(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    readers = log_readers(fake_redis)
    reader = asyncio.create_task(collect(fake_redis, "j"))
    await following(readers, reader)
    token = await pub.publish(TokenEvent, text="x")
    await fake_redis.publish(event_channel(PREFIX, "j"), encode_event(token))
    await pub.publish(DoneEvent, finish_reason="stop", usage=None, text="x")
    assert [e.seq for e in await asyncio.wait_for(reader, 2)] == [0, 1]


async def test_a_job_that_is_gone_without_an_end_raises_instead_of_hanging(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    await pub.publish(StartedEvent, attempt=1, worker="w")

    async def gone() -> bool:
        return False

    with pytest.raises(JobLost):
        await asyncio.wait_for(collect(fake_redis, "j", is_pending=gone), 2)


async def test_an_end_published_as_the_job_leaves_is_still_read(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    await pub.publish(StartedEvent, attempt=1, worker="w")
    pending = True

    async def is_pending() -> bool:
        return pending

    readers = log_readers(fake_redis)
    reader = asyncio.create_task(collect(fake_redis, "j", is_pending=is_pending))
    await following(readers, reader)  # it has read `started` and waits on the channel
    # The terminal event lands in the log without reaching the live channel, then the job is gone.
    done = DoneEvent(job_id="j", seq=1, finish_reason="stop", usage=None, text="")
    await fake_redis.rpush(event_log_key("j"), encode_event(done))
    pending = False
    events = await asyncio.wait_for(reader, 2)
    assert [event.type for event in events] == ["started", "done"]


class CountingCalls:
    """Wraps an event writer's script call to count the calls (each one a script run in Redis)."""

    def __init__(self, call):
        self.call, self.calls = call, 0

    def __call__(self, *args):
        self.calls += 1
        return self.call(*args)


async def test_a_hot_stream_shares_round_trips_and_keeps_every_event_in_order(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    writer = EventWriter.of(fake_redis)
    counter = writer._calls.call = CountingCalls(writer._calls.call)
    readers = log_readers(fake_redis)
    reader = asyncio.create_task(collect(fake_redis, "j"))
    await following(readers, reader)
    texts = [f"t{i} " for i in range(1000)]
    for text in texts:  # faster than Redis answers: nothing in between yields to the writer
        await pub.emit_text("token", text)
    await pub.publish(DoneEvent, finish_reason="stop", usage=None, text="".join(texts))
    events = await asyncio.wait_for(reader, 5)
    assert [e.seq for e in events] == list(range(1001))
    assert [e.text for e in events[:-1]] == texts
    assert counter.calls <= 1000 // EventWriter.JOB_LIMIT + 2


async def test_a_trickling_stream_sends_each_token_at_once(fake_redis: ArqRedis) -> None:
    pub = await publisher(fake_redis)
    for index in range(3):
        await pub.emit_text("token", str(index))

        async def logged(count: int = index + 1) -> bool:
            return await fake_redis.llen(event_log_key("j")) == count

        # No flush: the token goes out by itself, within a second, without waiting for more.
        await until(logged, 1, f"token {index} in the log")
        assert await fake_redis.llen(event_log_key("j")) == index + 1


async def test_a_lost_lease_stops_the_backlog_and_surfaces_at_the_next_call(fake_redis: ArqRedis) -> None:
    old = await publisher(fake_redis, token="attempt-1")
    await old.publish(StartedEvent, attempt=1, worker="w")
    await fake_redis.set(lease_key("j"), "attempt-2")  # another worker took the job over
    await old.emit_text("token", "stale")
    with pytest.raises(LeaseLost):
        await old.flush()
    with pytest.raises(LeaseLost):
        await old.emit_text("token", "later")
    assert [e.type for e in await collect_now(fake_redis)] == ["started"]


async def test_many_jobs_share_round_trips_and_each_keeps_its_own_order(fake_redis: ArqRedis) -> None:
    jobs = [await publisher(fake_redis, job_id=f"job-{n}") for n in range(50)]
    writer = EventWriter.of(fake_redis)
    counter = writer._calls.call = CountingCalls(writer._calls.call)
    for index in range(20):  # interleaved, as concurrent streams produce them
        for pub in jobs:
            await pub.emit_text("token", f"{pub.job_id}:{index}")
    for pub in jobs:
        await pub.flush()
    for pub in jobs:
        logged = [parse_event(raw) for raw in await fake_redis.lrange(event_log_key(pub.job_id), 0, -1)]
        assert [(e.seq, e.text) for e in logged] == [(i, f"{pub.job_id}:{i}") for i in range(20)]
    # A call as soon as SEND_EVERY jobs have events, one at the end of the pass, then once more each
    # for their remaining events: a handful, not one per event (1,000) nor per job (50).
    assert counter.calls <= 2 * (len(jobs) // EventWriter.SEND_EVERY + 1)


async def test_a_lost_lease_in_a_shared_call_stops_only_that_job(fake_redis: ArqRedis) -> None:
    kept = await publisher(fake_redis, job_id="kept")
    lost = await publisher(fake_redis, job_id="lost")
    await fake_redis.set(lease_key("lost"), "another-attempt")
    await kept.emit_text("token", "a")
    await lost.emit_text("token", "b")
    await kept.flush()
    with pytest.raises(LeaseLost):
        await lost.flush()
    assert await fake_redis.llen(event_log_key("kept")) == 1
    assert await fake_redis.llen(event_log_key("lost")) == 0


async def test_a_writer_stopped_mid_call_fails_its_jobs_instead_of_leaving_them_waiting(
    fake_redis: ArqRedis,
) -> None:
    pub = await publisher(fake_redis)
    writer = EventWriter.of(fake_redis)
    await pub.emit_text("token", "a")
    await asyncio.sleep(0)  # the writer's pass: the call is made, its reading task not started yet
    assert writer._calls.outstanding == 1
    reading = writer._calls._task
    assert reading is not None
    reading.cancel()  # as when its event loop stops
    with pytest.raises(RedisError):
        await asyncio.wait_for(pub.flush(), 1)
    # The writer goes on for later jobs, on a fresh connection (the stopped call's reply is not
    # taken for theirs).
    later = await publisher(fake_redis, job_id="later")
    await later.publish(TokenEvent, text="b")
    assert await fake_redis.llen(event_log_key("later")) == 1


def test_the_writers_registry_does_not_keep_a_client_alive() -> None:
    client = ArqRedis(connection_pool=fakeredis.FakeAsyncRedis().connection_pool)
    EventWriter.of(client)
    gone = weakref.ref(client)
    del client
    gc.collect()
    assert gone() is None
