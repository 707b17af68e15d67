from pathlib import Path

import pytest
import yaml

from config_module.loader import DEFAULT_CONFIG_PATH, ConfigError, foreign_env_hints, load_config
from config_module.settings import ArkConfig


def test_config_yaml_lists_every_setting_with_its_default() -> None:
    in_yaml = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    defaults = ArkConfig().model_dump(mode="json")
    assert in_yaml == defaults


def test_defaults_match_the_arkos_docs() -> None:
    config = load_config({})
    assert config.get("llm.base_url") == "http://0.0.0.0:30000/v1"
    assert config.get("llm.model_name") == "tgi"
    assert (config.llm.max_tokens, config.llm.temperature) == (1024, 0.7)
    assert config.get("redis.url") == "redis://localhost:6379/0"
    assert config.get("queue.name") == "arq:queue"
    assert config.get("worker.max_jobs") == 64
    assert config.get("streaming.channel_prefix") == "ark:tokens:"


def test_environment_overrides_nested_keys_with_types() -> None:
    config = load_config(
        {
            "ARK_LLM__BASE_URL": "http://gpu:30000/v1",
            "ARK_REDIS__URL": "redis://r:6379/1",
            "ARK_WORKER__MAX_JOBS": "7",
        }
    )
    assert config.llm.base_url == "http://gpu:30000/v1"
    assert config.redis.url == "redis://r:6379/1"
    assert config.worker.max_jobs == 7


def test_ark_config_names_another_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text("llm:\n  model_name: qwen\nworker:\n  max_jobs: 3\n")
    config = load_config({"ARK_CONFIG": str(path), "ARK_WORKER__MAX_JOBS": "4"})
    assert config.llm.model_name == "qwen"
    assert config.worker.max_jobs == 4  # the environment wins over the file
    assert config.llm.temperature == 0.7  # unnamed keys keep their defaults


def test_secrets_come_from_the_environment_and_do_not_print() -> None:
    config = load_config({"ARK_LLM__API_KEY": "sk-secret", "ARK_REDIS__PASSWORD": "hunter2"})
    assert config.get("llm.api_key") == "sk-secret"
    assert config.get("redis.password") == "hunter2"
    assert "sk-secret" not in repr(config) and "hunter2" not in str(config.model_dump())


def test_get_returns_the_default_for_unknown_keys() -> None:
    config = load_config({})
    assert config.get("llm.nope", "fallback") == "fallback"
    assert config.get("nope.at.all") is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ARK_WORKER__MAX_JOBS": "many"}, "worker.max_jobs"),
        ({"ARK_LLM__TEMPERATURE": "3"}, "llm.temperature"),
        ({"ARK_LLM__BASE_URLL": "x"}, "ARK_LLM__BASE_URLL"),
        ({"ARK_NOPE": "x"}, "ARK_NOPE"),
        ({"ARK_LLM": "x"}, "ARK_LLM"),
    ],
)
def test_bad_environment_fails_naming_the_key(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(environ)


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("ARK_REDIS_URL", "ARK_REDIS__URL"),  # one underscore
        ("ARK_WORKER__MAX_JOBZ", "ARK_WORKER__MAX_JOBS"),
        ("ARK_LLM__BASEURL", "ARK_LLM__BASE_URL"),
    ],
)
def test_an_unknown_variable_says_which_setting_it_likely_meant(name: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} \\(did you mean {meant}\\?\\)"):
        load_config({name: "x"})


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="from the environment: ARK_WORKER__MAX_JOBS") as from_env:
        load_config({"ARK_WORKER__MAX_JOBS": "abc"})
    assert "yaml" not in str(from_env.value).lower()
    path = tmp_path / "mine.yaml"
    path.write_text("worker:\n  max_jobs: lots\n")
    with pytest.raises(ConfigError, match=f"from {path}"):
        load_config({"ARK_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("worker:\n  max_jobz: 3\n", "worker.max_jobz"),
        ("worker:\n  max_jobs: lots\n", "worker.max_jobs"),
        ("streamin:\n  channel_prefix: x\n", "streamin"),
    ],
)
def test_bad_yaml_fails_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_config({"ARK_CONFIG": str(path)})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config({"ARK_CONFIG": str(tmp_path / "absent.yaml")})


@pytest.mark.parametrize("shorter", ["ARK_WORKER__KEEP_RESULT_S", "ARK_WORKER__JOB_TIMEOUT_S"])
def test_the_replay_log_must_outlive_jobs_and_results(shorter: str) -> None:
    with pytest.raises(ConfigError, match=r"streaming\.replay_ttl_s"):
        load_config({"ARK_STREAMING__REPLAY_TTL_S": "10", shorter: "11"})


def test_a_yaml_file_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "scalar.yaml"
    path.write_text("just a string\n")
    with pytest.raises(ConfigError):
        load_config({"ARK_CONFIG": str(path)})


def test_a_percent_encoded_password_in_the_redis_url_is_decoded() -> None:
    from arkq.connection import connect
    from worker.settings import redis_settings

    config = load_config({"ARK_REDIS__URL": "redis://:p%40ss%3Aword@h:6380/2"})
    settings = redis_settings(config)
    assert (settings.password, settings.host, settings.port, settings.database) == ("p@ss:word", "h", 6380, 2)
    client = connect(config).connection_pool.connection_kwargs
    assert (client["password"], client["host"], client["port"], client["db"]) == ("p@ss:word", "h", 6380, 2)
    from_env = load_config({"ARK_REDIS__PASSWORD": "hunter2"})
    assert redis_settings(from_env).password == "hunter2"
    assert connect(from_env).connection_pool.connection_kwargs["password"] == "hunter2"


def test_a_redis_url_that_is_not_one_is_a_config_error_without_its_password() -> None:
    from arkq.connection import connect

    with pytest.raises(ConfigError, match=r"redis\.url") as refused:
        connect(load_config({"ARK_REDIS__URL": "http://:secret@h:6380/2"}))
    assert "secret" not in str(refused.value)


def test_dead_after_s_defaults_to_30_s_is_overridable_and_must_be_positive() -> None:
    assert load_config({}).redis.dead_after_s == 30
    assert load_config({"ARK_REDIS__DEAD_AFTER_S": "2.5"}).redis.dead_after_s == 2.5
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match=r"redis\.dead_after_s"):
            load_config({"ARK_REDIS__DEAD_AFTER_S": bad})


def test_every_client_judges_a_silent_connection_by_dead_after_s() -> None:
    import fakeredis
    from arq.connections import ArqRedis

    from arkq.connection import RetryFor, connect, dead_after_s_of, keepalive_options
    from arkq.envelope import serialize
    from worker.settings import WorkerSettings, redis_pool

    config = load_config({"ARK_REDIS__DEAD_AFTER_S": "12", "ARK_REDIS__RETRY_S": "7"})
    for client in (connect(config), redis_pool(config)):
        connection = client.connection_pool.make_connection()
        assert connection.socket_timeout == 12
        assert connection.socket_connect_timeout == config.redis.connect_timeout_s
        assert connection.socket_keepalive is True
        assert connection.socket_keepalive_options == keepalive_options(12)
        assert isinstance(connection.retry, RetryFor) and connection.retry.budget_s == 7
        assert dead_after_s_of(client) == 12
    assert dead_after_s_of(fakeredis.FakeAsyncRedis()) == 30, "a lent client gets the default"
    # `arq worker.WorkerSettings` runs on such a client, not one arq builds without these options.
    pool = WorkerSettings.__dict__["redis_pool"]
    assert isinstance(pool, ArqRedis) and pool.job_serializer is serialize
    assert pool.default_queue_name == WorkerSettings.__dict__["queue_name"]
    assert pool.connection_pool.connection_kwargs["socket_keepalive"] is True


@pytest.mark.parametrize("dead_after_s", [0.5, 2, 4, 12, 30, 600])
def test_tcp_keepalive_gives_up_on_a_silent_peer_in_about_dead_after_s(dead_after_s: float) -> None:
    import math
    import socket

    from arkq.connection import keepalive_options

    options = keepalive_options(dead_after_s)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        assert options[socket.TCP_USER_TIMEOUT] == math.ceil(dead_after_s * 1000)
    if not hasattr(socket, "TCP_KEEPIDLE"):
        pytest.skip("no Linux keepalive options on this platform")
    idle, interval, probes = (
        options[socket.TCP_KEEPIDLE],
        options[socket.TCP_KEEPINTVL],
        options[socket.TCP_KEEPCNT],
    )
    assert min(idle, interval, probes) >= 1  # the kernel refuses 0, and counts whole seconds
    assert dead_after_s / 2 <= idle + interval * probes <= max(dead_after_s, 4)


def test_a_unix_socket_url_gets_the_read_timeout_but_no_tcp_options() -> None:
    from arkq.connection import connect

    client = connect(load_config({"ARK_REDIS__DEAD_AFTER_S": "3"}), "unix:///tmp/arkq-redis.sock")
    connection = client.connection_pool.make_connection()  # redis-py refuses TCP options for these
    assert connection.socket_timeout == 3
    assert "socket_keepalive" not in client.connection_pool.connection_kwargs


async def test_redis_retries_are_bounded_by_time_not_by_tries() -> None:
    import copy
    import time

    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from arkq.backoff import Backoff, RedisClientBackoff
    from arkq.connection import RetryFor

    retry = RetryFor(RedisClientBackoff(Backoff(base_s=0.01, max_s=0.01)), budget_s=0.3)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise RedisConnectionError("refused")

    async def no_cleanup(error: Exception) -> None:
        del error

    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await retry.call_with_retry(refused, no_cleanup)
    assert time.monotonic() - started >= 0.3
    assert calls > 2

    outcomes: list[object] = [RedisTimeoutError("silent"), RedisConnectionError("reset"), "answered"]

    async def third_time_lucky() -> object:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await retry.call_with_retry(third_time_lucky, no_cleanup) == "answered"
    assert copy.deepcopy(retry).budget_s == 0.3  # redis-py copies it into each connection


def test_a_variable_set_for_other_software_gets_a_hint_naming_arkqs() -> None:
    assert foreign_env_hints({"REDIS_URL": "redis://elsewhere:6379"}) == [
        "REDIS_URL is set, but arkq does not read it: set ARK_REDIS__URL for arkq"
    ]
    assert foreign_env_hints({"REDIS_URL": "redis://x", "ARK_REDIS__URL": "redis://x"}) == []
