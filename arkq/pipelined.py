"""Calls of one script written the moment they are made, on a connection of their own.

A client call holds a connection until its reply comes, so a writer that waits for each call before
it sends the next adds a round trip to everything that arrives while a call is out. Redis answers the
calls of one connection in the order they were sent, so they need not wait: `PipelinedCalls` writes
each call at once, without awaiting anything, and hands each reply to its call's callback, in order.

What this asks of its caller, and what it keeps:

- Every call must be safe to run twice. When the connection is lost (a reset, a closed socket, a
  read that times out), the calls that were not answered may or may not have run; they are all sent
  again, in order, on a new connection, until one is answered or about `redis.retry_s` has passed
  since the first failure; then they fail with the last error. (`publish.lua` checks where a job's
  log ends and whether its lease and result are there, so a repeat is a no-op.)
- Two calls out at once must not depend on each other's order: a call that meets NOSCRIPT (a fresh or
  restarted Redis) is sent again whole (EVAL), after calls sent later that may have found the script
  loaded by someone else meanwhile. (The event writer has at most one call per job out.)
- An error reply fails its call alone; the connection goes on.
- A Redis that stops answering is noticed as any client call notices it: on a connection with a read
  timeout (`redis.dead_after_s`, set by `arkq.connection`), a read waits no longer, and reads happen
  only while a call is out.
- Every call is answered, once: with its reply or with an error (its callback's own failures are
  logged, never lost in a task nobody awaits).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError, TimeoutError

from arkq.backoff import Outage
from arkq.connection import RetryFor, hiredis_reader
from arkq.scripts import Script
from config_module.settings import RedisConfig

logger = logging.getLogger("arkq.worker")

#: What a call's callback is given: the reply, or the error that failed the call.
Done = Callable[[Any], None]

#: How long calls are sent again after a lost connection, for a client without arkq's `RetryFor`.
DEFAULT_RETRY_S: float = RedisConfig.model_fields["retry_s"].default

#: What a lost connection raises (a LOADING reply is a ConnectionError too: the call did not run).
_LOST = (ConnectionError, TimeoutError, OSError)


class _Call:
    __slots__ = ("done", "keys_and_args", "numkeys", "packed", "whole")

    def __init__(self, numkeys: int, keys_and_args: tuple[bytes, ...], done: Done, script: Script):
        self.numkeys = numkeys
        self.keys_and_args = keys_and_args
        self.done = done
        #: Sent as the whole script (EVAL), since the server did not know its SHA.
        self.whole = False
        self.packed = self.pack(script)

    def pack(self, script: Script) -> bytes:
        # hiredis packs the call in C (redis-py's packer, in Python, was a tenth of a worker's CPU).
        head = ("EVAL", script.source) if self.whole else ("EVALSHA", script.sha)
        command = (*head, self.numkeys, *self.keys_and_args)
        packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]  # its stub: one item
        return packed


class PipelinedCalls:
    """Calls of `script` on a connection of `redis`'s pool that this object holds for its life."""

    def __init__(self, redis: Redis, script: Script):
        self._pool = redis.connection_pool
        retry = self._pool.connection_kwargs.get("retry")
        self._retry_s = retry.budget_s if isinstance(retry, RetryFor) else DEFAULT_RETRY_S
        self._script = script
        self._connection: AbstractConnection | None = None
        #: Connected, and every call in `_sent` was written on this connection: write new ones at once.
        self._writable = False
        #: Every call not answered yet, oldest first: the replies come in this order.
        self._sent: deque[_Call] = deque()
        self._task: asyncio.Task[None] | None = None

    def call(self, keys: Sequence[bytes], args: Sequence[bytes], done: Done) -> None:
        """Send a call of the script; `done` gets its reply (or the error that failed it), in the order
        the calls were made (a call sent again whole, after NOSCRIPT, answers later). Raises only for
        arguments that cannot be sent (not bytes, str or numbers), before anything is sent."""
        call = _Call(len(keys), (*keys, *args), done, self._script)
        self._sent.append(call)
        if self._writable:
            self._write(call)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
            self._task.add_done_callback(self._stopped)

    @property
    def outstanding(self) -> int:
        """Calls made and not answered yet."""
        return len(self._sent)

    def _write(self, call: _Call) -> None:
        """Writes `call` (already in `_sent`) on the connection, if it is writable. Never raises: a
        connection found closed (an event loop closes a socket that was reset, idle or not) is marked
        lost, so the reader connects again and writes every call not answered."""
        if not self._writable:
            return
        # redis-py's stream writer (tests/integration/test_pipelined_publish.py): it takes the bytes now
        # and sends them as the socket allows, without a wait; redis-py's own send waits on the write
        # (a task, with the read timeout) for every call.
        writer = getattr(self._connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        try:
            if writer is None or (transport is not None and transport.is_closing()):
                raise ConnectionError("the connection was closed")
            writer.writelines((call.packed,))
        except Exception:
            self._lost()

    def _lost(self) -> None:
        """The connection cannot be written to: reading on it fails at once, then it is replaced."""
        self._writable = False
        transport = getattr(getattr(self._connection, "_writer", None), "transport", None)
        abort = getattr(transport, "abort", None)
        if abort is not None:
            abort()

    async def _run(self) -> None:
        """Reads the replies while calls are out; connects, and reconnects after a loss."""
        outage = Outage(self._retry_s)
        while self._sent:
            if not self._writable:
                try:
                    await self._connect()
                except _LOST as error:  # tried for the client's budget already, by its own retry
                    self._fail_all(error)
                    outage.over()
                    continue
            connection = self._connection
            assert connection is not None
            try:
                self._read_one(await self._reply(connection))
                # Replies that came in the same read are in the parser already: taken without a wait.
                parser = hiredis_reader(connection)
                while parser is not None and self._sent:
                    reply = parser.gets(False)
                    if reply is NOT_ENOUGH_DATA:
                        break
                    self._read_one(reply)
            except _LOST as error:
                self._lost()
                await connection.disconnect(nowait=True)
                try:
                    await outage.wait(error)  # raises `error` once the budget is spent
                except _LOST:
                    self._fail_all(error)
                    outage.over()
                continue
            outage.over()

    @staticmethod
    async def _reply(connection: AbstractConnection) -> Any:
        try:
            return await connection.read_response(disable_decoding=True)
        except ResponseError as error:  # an error reply: its call's answer
            return error

    def _read_one(self, reply: Any) -> None:
        """Hands `reply` to the oldest call; a reply that says the connection is unusable (LOADING,
        or the parser's own ConnectionError) is raised instead, and its call stays to be sent again."""
        if isinstance(reply, _LOST):
            raise reply
        call = self._sent.popleft()
        if isinstance(reply, NoScriptError) and not call.whole:
            call.whole = True
            call.packed = call.pack(self._script)
            self._sent.append(call)
            self._write(call)
        else:
            self._tell(call, reply)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """The reading task ended: by itself when nothing is left out; else it was cancelled (with its
        event loop) or stopped by a bug, and every call not answered fails."""
        if task.cancelled() or task.exception() is not None:
            self._writable = False
            error = None if task.cancelled() else task.exception()
            if error is not None:
                logger.error("the Redis writer stopped", exc_info=error)
            self._fail_all(error if isinstance(error, Exception) else RedisError("the Redis writer stopped"))

    async def _connect(self) -> None:
        """Connects (the connection's own retry tries for the client's budget), then writes every call
        not answered, in order, before any new one."""
        if self._connection is None:
            self._connection = await self._pool.get_connection()
        else:
            # Closed first: replies to calls that were given up (a stopped task) may be on it.
            await self._connection.disconnect(nowait=True)
            await self._connection.connect()  # type: ignore[no-untyped-call]  # unannotated
        self._writable = True
        for call in list(self._sent):
            self._write(call)

    def _tell(self, call: _Call, reply: Any) -> None:
        try:
            call.done(reply)
        except Exception:  # the caller's bug: the other calls are still answered
            logger.exception("handling a Redis reply failed")

    def _fail_all(self, error: Exception) -> None:
        calls = list(self._sent)
        self._sent.clear()
        for call in calls:
            self._tell(call, error)
