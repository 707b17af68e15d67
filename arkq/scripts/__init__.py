"""arkq's Lua scripts: each a `.lua` file beside this module, shipped as package data.

Each script is read and hashed once per process and called by SHA (`EVALSHA`). A server that does not
know it yet (a fresh or restarted Redis, another shard) answers NOSCRIPT; the script is then sent whole
once (`EVAL`, which also caches it there), and later calls go by SHA again. Every script is atomic, so
each step it takes happens whole or not at all; what each one does and returns is at the top of its file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from arkq.connection import reply


class Script:
    """One of arkq's scripts: `await SCRIPT(redis, keys=[...], args=[...])`."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, libs: Sequence[str] = ()):
        self.name = name
        here = files(__name__)
        # Shared functions (`lib/<name>.lua`) go before the script's own source, in one script.
        parts = [here.joinpath("lib", f"{lib}.lua").read_text(encoding="utf-8") for lib in libs]
        self.source = "".join([*parts, here.joinpath(f"{name}.lua").read_text(encoding="utf-8")])
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r})"

    async def __call__(self, redis: Redis, *, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        # Keys as str or bytes (redis-py encodes either; its annotations say str only).
        keys_and_args: list[Any] = [*keys, *args]
        try:
            return await reply(redis.evalsha(self.sha, len(keys), *keys_and_args))
        except NoScriptError:
            return await reply(redis.eval(self.source, len(keys), *keys_and_args))


ENQUEUE = Script("enqueue", libs=["cursor"])
CANCEL = Script("cancel")
PICK = Script("pick", libs=["cursor"])
LEASE_ACQUIRE = Script("lease_acquire")
LEASE_RENEW = Script("lease_renew")
LEASE_RELEASE = Script("lease_release")
LEASE_REAP = Script("lease_reap")
PUBLISH = Script("publish")
