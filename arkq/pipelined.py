"""Calls of one script written the moment they are made, on a connection of their own.

A client call holds a connection until its reply comes, so a writer that waits for each call before
it sends the next adds a round trip to everything that arrives while a call is out. Redis answers the
calls of one connection in the order they were sent, so they need not wait: `PipelinedCalls` writes
each call at once, without awaiting anything, and hands each reply to its call's callback, in order.

What this asks of its caller, and what it keeps:

- Every call must be safe to run twice. When the connection is lost, the calls that were not answered
  may or may not have run; they are all sent again, in order, on a new connection, for as long as the
  client's retry budget (`redis.retry_s`) lasts, and then fail with the last error. (`publish.lua`
  checks where a job's log ends and whether its lease and result are there, so a repeat is a no-op.)
- Two calls out at once must not depend on each other's order: a call that meets NOSCRIPT (a fresh or
  restarted Redis) is sent again whole (EVAL), after calls sent later that may have found the script
  loaded by someone else meanwhile. (The event writer has at most one call per job out.)
- An error reply fails its call alone; the connection goes on.
- A Redis that stops answering is noticed as any client call notices it: a read waits at most
  `redis.dead_after_s` (the connection's read timeout), and reads happen only while a call is out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError, TimeoutError

from arkq.backoff import RedisClientBackoff
from arkq.connection import RetryFor, hiredis_reader
from arkq.scripts import Script

#: What a call's callback is given: the reply, or the error that failed the call.
Done = Callable[[Any], None]

#: How long calls are sent again after a lost connection, for a client without arkq's `RetryFor`.
DEFAULT_RETRY_S = 30.0

_LOST = (ConnectionError, TimeoutError, OSError)


class _Call:
    __slots__ = ("done", "keys_and_args", "numkeys", "whole")

    def __init__(self, numkeys: int, keys_and_args: list[bytes], done: Done):
        self.numkeys = numkeys
        self.keys_and_args = keys_and_args
        self.done = done
        #: Sent as the whole script (EVAL), since the server did not know its SHA.
        self.whole = False


class PipelinedCalls:
    """Calls of `script` on a connection of `redis`'s pool that this object holds for its life."""

    def __init__(self, redis: Redis, script: Script):
        self._pool = redis.connection_pool
        retry = self._pool.connection_kwargs.get("retry")
        self._retry_s = retry.budget_s if isinstance(retry, RetryFor) else DEFAULT_RETRY_S
        self._backoff = RedisClientBackoff()
        self._script = script
        self._connection: AbstractConnection | None = None
        #: Connected, and every call not answered is on it: a new call can be written at once.
        self._writable = False
        #: Calls written, oldest first: the replies come in this order.
        self._sent: deque[_Call] = deque()
        #: Calls made while there was no connection to write them on.
        self._unsent: list[_Call] = []
        self._task: asyncio.Task[None] | None = None

    def call(self, keys: Sequence[bytes], args: Sequence[bytes], done: Done) -> None:
        """Send a call of the script; `done` gets its reply (or the error that failed it), in the order
        the calls were made (a call sent again whole, after NOSCRIPT, answers later)."""
        call = _Call(len(keys), [*keys, *args], done)
        if self._writable:
            self._write(call)
        else:
            self._unsent.append(call)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
            self._task.add_done_callback(self._stopped)

    @property
    def outstanding(self) -> int:
        """Calls made and not answered yet."""
        return len(self._sent) + len(self._unsent)

    def _write(self, call: _Call) -> None:
        connection = self._connection
        assert connection is not None
        writer = connection._writer  # redis-py's stream writer (tests/integration/test_pipelined_publish.py)
        assert writer is not None, "written only while connected"
        if call.whole:
            head: tuple[str | int, ...] = ("EVAL", self._script.source, call.numkeys)
        else:
            head = ("EVALSHA", self._script.sha, call.numkeys)
        # hiredis packs the call in C (redis-py's packer, in Python, was a tenth of the writer's time).
        # The stream writer takes the bytes now and sends them as the socket allows, without a wait:
        # redis-py's own send waits on the write (a task, with the read timeout) for every call.
        command = (*head, *call.keys_and_args)
        writer.writelines((hiredis.pack_command(command),))  # type: ignore[arg-type]  # its stub: 1 item
        self._sent.append(call)

    async def _run(self) -> None:
        """Reads the replies while calls are out; connects, and reconnects after a loss."""
        failing_since: float | None = None
        failures = 0
        while self._sent or self._unsent:
            if not self._writable and not await self._connect():
                return
            try:
                first = await self._connection_now().read_response(disable_decoding=True)
            except _LOST as error:
                self._writable = False
                await self._connection_now().disconnect(nowait=True)
                now = time.monotonic()
                failing_since = failing_since or now
                failures += 1
                if now - failing_since >= self._retry_s:
                    self._fail_all(error)
                    failing_since, failures = None, 0
                else:
                    await asyncio.sleep(self._backoff.compute(failures))
                continue
            except ResponseError as error:
                first = error
            failing_since, failures = None, 0
            self._answered(first)
            # Replies that came in the same read are in the parser already: taken without a wait.
            parser = hiredis_reader(self._connection)
            while parser is not None and self._sent:
                reply = parser.gets(False)
                if not isinstance(reply, list | Exception):  # no whole reply left (the script's
                    break  # replies are arrays; errors come as exceptions)
                self._answered(reply)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """The reading task ended: by itself, nothing left out; else cancelled (with its event loop)
        or by a bug, and no caller may wait forever for a reply."""
        if task.cancelled() or task.exception() is not None:
            self._writable = False
            error = None if task.cancelled() else task.exception()
            self._fail_all(error if isinstance(error, Exception) else RedisError("the Redis writer stopped"))

    def _connection_now(self) -> AbstractConnection:
        assert self._connection is not None
        return self._connection

    async def _connect(self) -> bool:
        """Connects (retrying for the client's budget), then writes every call not answered, in order.
        False when it could not: every call failed with the error."""
        try:
            if self._connection is None:
                self._connection = await self._pool.get_connection()
            else:
                # Closed first: replies to calls that were given up (a stopped task) may be on it.
                await self._connection.disconnect(nowait=True)
                await self._connection.connect()  # type: ignore[no-untyped-call]  # unannotated
        except _LOST as error:  # retried for the budget already, by the connection's own retry
            self._fail_all(error)
            return False
        self._writable = True
        again, self._unsent = [*self._sent, *self._unsent], []
        self._sent.clear()
        for call in again:
            self._write(call)
        return True

    def _answered(self, reply: Any) -> None:
        call = self._sent.popleft()
        if isinstance(reply, NoScriptError) and not call.whole:
            call.whole = True
            self._write(call)
        else:
            call.done(reply)

    def _fail_all(self, error: Exception) -> None:
        calls = [*self._sent, *self._unsent]
        self._sent.clear()
        self._unsent = []
        for call in calls:
            call.done(error)
