"""arkq's Lua scripts: one file each, shipped with the package, called by SHA with a NOSCRIPT fallback."""

from __future__ import annotations

from importlib.resources import files

import pytest
from redis.asyncio import Redis

from arkq import scripts


def test_every_lua_file_is_a_script_and_every_script_a_file() -> None:
    shipped = {
        path.name.removesuffix(".lua") for path in files(scripts).iterdir() if path.name.endswith(".lua")
    }
    declared = {value.name for value in vars(scripts).values() if isinstance(value, scripts.Script)}
    assert shipped == declared and len(shipped) == 8


def test_a_script_says_what_it_does_at_the_top() -> None:
    for path in files(scripts).iterdir():
        if path.name.endswith(".lua"):
            assert path.read_text().startswith("-- "), f"{path.name} has no header comment"


async def test_a_server_that_does_not_know_a_script_gets_it_once_then_runs_it_by_sha(
    fake_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fake_redis.script_flush()
    sent: list[str] = []
    evalsha, eval_ = fake_redis.evalsha, fake_redis.eval

    def spy_evalsha(*args: object) -> object:
        sent.append("evalsha")
        return evalsha(*args)  # type: ignore[arg-type]  # passes arkq's own arguments through

    def spy_eval(*args: object) -> object:
        sent.append("eval")
        return eval_(*args)  # type: ignore[arg-type]  # as above

    monkeypatch.setattr(fake_redis, "evalsha", spy_evalsha)
    monkeypatch.setattr(fake_redis, "eval", spy_eval)
    release = scripts.LEASE_RELEASE
    assert await release(fake_redis, keys=["ark:lease:j"], args=["token"]) == 0
    assert sent == ["evalsha", "eval"]  # NOSCRIPT, then the source once
    assert await fake_redis.script_exists(release.sha) == [True]
    assert await release(fake_redis, keys=["ark:lease:j"], args=["token"]) == 0
    assert sent == ["evalsha", "eval", "evalsha"]  # by SHA from then on
