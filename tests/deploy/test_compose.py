"""docker-compose.yml, as the real Docker Compose v2 reads it (offline: `config` needs no engine)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from config_module.loader import load_config, unknown_env_keys
from tests.deploy.helpers import (
    ENV_EXAMPLE,
    LAUNCH_SCRIPT,
    PROFILE_SETS,
    ROOT,
    compose_config,
    compose_variables,
    env_example_variables,
    flag,
    run_compose,
)

DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
ARKQ_SERVICES = ("fake-llm", "gateway", "llm-check", "worker")  # built from the project's Dockerfile

#: A non-default setting of every LLM variable, shared by the compose and launch.sh checks.
CUSTOM_LLM = {
    "LLM_MODEL": "Qwen/Qwen2.5-14B-Instruct",
    "LLM_SERVED_MODEL_NAME": "qwen14",
    "LLM_PORT": "31000",
    "LLM_TP": "2",
    "LLM_DP": "2",
    "LLM_MEM_FRACTION": "0.8",
    "LLM_CONTEXT_LENGTH": "16384",
    "LLM_REASONING_PARSER": "qwen3",
    "LLM_TOOL_CALL_PARSER": "hermes",
    "LLM_API_KEY": "sk-local",
    "LLM_EXTRA_ARGS": "--max-running-requests 128 --log-requests",
}


def seconds(duration: str) -> float:
    """A compose duration as normalised by `config` ("35s", "1m10.5s", "20m0s", "1h0m0s")."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def services(*profiles: str, **kwargs: Any) -> dict[str, Any]:
    return compose_config(*profiles, **kwargs)["services"]


# -- the file is valid, for every variant ---------------------------------------------------------------


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda p: "+".join(p) or "no-profile")
def test_compose_file_is_valid(profiles: tuple[str, ...]) -> None:
    done = run_compose("config", "-q", profiles=profiles)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"compose warns: {done.stderr}"  # e.g. an unset variable without a default


def test_compose_file_is_valid_with_the_example_env_file() -> None:
    done = run_compose("config", "-q", env_file=ENV_EXAMPLE)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_each_profile_runs_one_llm_server_under_the_same_name() -> None:
    assert set(services()) == {"redis", "llm-check", "worker"}  # an LLM server elsewhere
    assert set(services("gpu")) == {"redis", "sglang", "llm-check", "worker"}
    assert set(services("cpu")) == {"redis", "fake-llm", "llm-check", "worker"}
    assert set(services("redis-port")) == {"redis", "redis-port", "llm-check", "worker"}
    everything = services("*")
    assert set(everything) == {
        *("redis", "redis-port", "sglang", "fake-llm", "llm-check", "worker", "gateway"),
        *("prometheus", "grafana"),  # the monitoring profile: tests/deploy/test_monitoring.py
    }
    for name in ("sglang", "fake-llm"):  # the workers reach whichever runs as `llm`
        assert everything[name]["networks"]["default"]["aliases"] == ["llm"]
    assert everything["worker"]["environment"]["ARK_LLM__BASE_URL"] == "http://llm:30000/v1"


def test_the_example_env_file_selects_the_gpu_stack_and_a_flag_overrides_it() -> None:
    assert set(services(env_file=ENV_EXAMPLE)) == {"redis", "sglang", "llm-check", "worker"}
    assert set(services("cpu", env_file=ENV_EXAMPLE)) == {"redis", "fake-llm", "llm-check", "worker"}


# -- redis ---------------------------------------------------------------------------------------------


def test_redis_persists_to_a_named_volume_with_aof_and_is_not_published() -> None:
    config = compose_config("*")
    redis = config["services"]["redis"]
    assert redis["image"].startswith("redis:")  # the official image
    command = redis["command"]
    assert command[0] == "redis-server" and flag(command, "--appendonly") == "yes"
    assert flag(command, "--appendfsync") in {"always", "everysec"}
    [volume] = redis["volumes"]
    assert (volume["type"], volume["source"], volume["target"]) == ("volume", "redis-data", "/data")
    assert "redis-data" in config["volumes"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert not redis.get("ports")
    assert redis["restart"] == "unless-stopped"


def test_redis_is_published_only_by_the_opt_in_profile_on_localhost() -> None:
    config = compose_config("*")
    published = {name for name, service in config["services"].items() if service.get("ports")}
    # The gateway publishes HTTP only (below); Prometheus and Grafana their UIs (test_monitoring.py).
    assert published == {"redis-port", "gateway", "prometheus", "grafana"}
    forwarder = config["services"]["redis-port"]
    assert forwarder["profiles"] == ["redis-port"]
    [port] = forwarder["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "6379", 6379)
    assert "tcp-connect:redis:6379" in forwarder["command"]
    assert forwarder["depends_on"]["redis"]["condition"] == "service_healthy"


# -- the gateway ---------------------------------------------------------------------------------------


def test_gateway_is_opt_in_published_on_localhost_and_scalable() -> None:
    assert "gateway" not in services() and "gateway" not in services("gpu")
    gateway = services("gateway")["gateway"]
    assert gateway["profiles"] == ["gateway"]
    assert gateway["command"] == ["arkq", "serve", "--host", "0.0.0.0", "--port", "8080"]
    [port] = gateway["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8080", 8080)
    for fixed in ("container_name", "hostname", "mac_address"):
        assert not gateway.get(fixed), f"{fixed} would stop `--scale gateway=N`"
    scaled = services("gateway", env={"GATEWAY_PORT": "8080-8083"})["gateway"]
    assert scaled["ports"][0]["published"] == "8080-8083"
    assert "/readyz" in gateway["healthcheck"]["test"][-1]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"


def test_gateway_keys_come_from_the_environment_and_parse() -> None:
    keys = '{"alice": "sk-a", "bob": "sha256:' + "0" * 64 + '"}'
    env = services("gateway", env={"ARK_GATEWAY__API_KEYS": keys})["gateway"]["environment"]
    assert unknown_env_keys(env) == []
    config = load_config(env)
    assert set(config.gateway.api_keys) == {"alice", "bob"}
    assert config.llm.model_name == DEFAULT_MODEL  # what /v1/models lists: the workers' model
    assert load_config(services("gateway")["gateway"]["environment"]).gateway.api_keys == {}


# -- sglang --------------------------------------------------------------------------------------------


def test_sglang_runs_the_launch_server_on_the_gpu_with_its_defaults() -> None:
    config = compose_config("gpu")
    sglang = config["services"]["sglang"]
    assert sglang["image"].startswith("lmsysorg/sglang:")
    assert sglang["profiles"] == ["gpu"]
    command = sglang["command"]
    assert command[:3] == ["python3", "-m", "sglang.launch_server"]
    assert flag(command, "--model-path") == DEFAULT_MODEL
    assert flag(command, "--served-model-name") == DEFAULT_MODEL
    assert (flag(command, "--host"), flag(command, "--port")) == ("0.0.0.0", "30000")
    assert (flag(command, "--tp-size"), flag(command, "--dp-size")) == ("1", "1")
    assert 0 < float(flag(command, "--mem-fraction-static") or 0) < 1
    assert flag(command, "--tool-call-parser") == "qwen25"
    assert "--enable-metrics" in command
    for unset in ("--api-key", "--context-length", "--reasoning-parser"):
        assert unset not in command, f"{unset} is passed only when its variable is set"

    [device] = sglang["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == -1  # "all"
    assert sglang.get("ipc") == "host" or int(sglang.get("shm_size") or 0) >= 8 * 2**30

    [cache] = sglang["volumes"]
    assert (cache["type"], cache["source"], cache["target"]) == (
        "volume",
        "hf-cache",
        "/root/.cache/huggingface",
    )
    assert "hf-cache" in config["volumes"]
    assert "HF_TOKEN" in sglang["environment"]

    health = sglang["healthcheck"]
    assert health["test"][0] == "CMD" and "http://127.0.0.1:30000/health" in health["test"][-1]
    assert seconds(health["start_period"]) >= 10 * 60, "model download and loading take minutes"
    assert not sglang.get("ports")
    assert sglang["restart"] == "unless-stopped"


def test_the_sglang_image_is_a_pinned_release_by_default_and_in_the_example_env() -> None:
    for image in (
        services("gpu")["sglang"]["image"],
        services("gpu", env_file=ENV_EXAMPLE)["sglang"]["image"],
    ):
        name, _, tag = image.partition(":")
        assert name == "lmsysorg/sglang" and re.fullmatch(r"v\d+\.\d+\.\d+(\.post\d+)?-cu\d+-\w+", tag), image


def test_sglang_and_the_workers_follow_the_llm_variables() -> None:
    gpu = services("gpu", env={**CUSTOM_LLM, "LLM_GPUS": "4", "HF_TOKEN": "hf_x", "HF_CACHE": "/srv/hf"})
    command = gpu["sglang"]["command"]
    assert flag(command, "--model-path") == "Qwen/Qwen2.5-14B-Instruct"
    assert flag(command, "--served-model-name") == "qwen14"
    assert flag(command, "--port") == "31000"
    assert (flag(command, "--tp-size"), flag(command, "--dp-size")) == ("2", "2")
    assert flag(command, "--mem-fraction-static") == "0.8"
    assert flag(command, "--context-length") == "16384"
    assert flag(command, "--reasoning-parser") == "qwen3"
    assert flag(command, "--tool-call-parser") == "hermes"
    assert flag(command, "--api-key") == "sk-local"
    assert command[-3:] == ["--max-running-requests", "128", "--log-requests"]
    assert gpu["sglang"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4
    assert gpu["sglang"]["environment"]["HF_TOKEN"] == "hf_x"
    assert (
        gpu["sglang"]["volumes"][0]["type"] == "bind" and gpu["sglang"]["volumes"][0]["source"] == "/srv/hf"
    )
    assert "127.0.0.1:31000/health" in gpu["sglang"]["healthcheck"]["test"][-1]

    for name in ("worker", "llm-check"):
        env = gpu[name]["environment"]
        assert env["ARK_LLM__BASE_URL"] == "http://llm:31000/v1"
        assert env["ARK_LLM__MODEL_NAME"] == "qwen14"
        assert env["ARK_LLM__API_KEY"] == "sk-local"

    fake = services("cpu", env=CUSTOM_LLM)["fake-llm"]["command"]
    assert (flag(fake, "--port"), flag(fake, "--model")) == ("31000", "qwen14")
    assert (flag(fake, "--context-length"), flag(fake, "--api-key")) == ("16384", "sk-local")


def _launch_argv(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The command sglang/launch.sh execs, caught by a stand-in interpreter."""
    stand_in = tmp_path / "python3"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\0" "$@"\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    environ = {"PATH": os.environ["PATH"], "PYTHON": str(stand_in), **env}
    done = subprocess.run(["bash", str(LAUNCH_SCRIPT)], env=environ, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize(
    "env",
    [{}, CUSTOM_LLM, {"LLM_API_KEY": "k", "LLM_CONTEXT_LENGTH": "", "LLM_SERVED_MODEL_NAME": ""}],
    ids=["defaults", "custom", "empty-values"],
)
def test_launch_script_runs_the_same_server_as_the_compose_service(
    tmp_path: Path, env: dict[str, str]
) -> None:
    in_compose = services("gpu", env=env)["sglang"]["command"]
    assert ["python3", *_launch_argv(tmp_path, env)] == in_compose


def test_launch_script_is_executable_bash_that_execs_the_server() -> None:
    text = LAUNCH_SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert re.search(r'^exec "\$\{PYTHON:-python3\}" -m sglang.launch_server ', text, re.MULTILINE)
    assert os.access(LAUNCH_SCRIPT, os.X_OK)
    assert not (ROOT / "sglang" / "__init__.py").exists(), "sglang/ must not shadow the sglang package"
    done = subprocess.run(["bash", "-n", str(LAUNCH_SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# -- the arkq image services -----------------------------------------------------------------------------


def test_the_arkq_services_build_the_project_image() -> None:
    everything = services("*")
    for name in ARKQ_SERVICES:
        build = everything[name]["build"]
        assert (Path(build["context"]), build["dockerfile"]) == (ROOT, "Dockerfile")
        assert everything[name]["image"] == "arkq:latest"


def test_fake_llm_is_the_emulator_on_the_sglang_port() -> None:
    fake = services("cpu")["fake-llm"]
    assert fake["profiles"] == ["cpu"]
    assert fake["command"][:2] == ["arkq", "fake-llm"]
    assert (flag(fake["command"], "--host"), flag(fake["command"], "--port")) == ("0.0.0.0", "30000")
    assert flag(fake["command"], "--model") == DEFAULT_MODEL  # the name the workers send
    assert "http://127.0.0.1:30000/health" in fake["healthcheck"]["test"][-1]
    assert not fake.get("ports")


def test_worker_is_scalable_and_waits_for_redis_and_the_llm_server() -> None:
    worker = services("*")["worker"]
    assert worker["command"] == ["arq", "worker.WorkerSettings"]
    for fixed in ("container_name", "ports", "hostname", "mac_address"):
        assert not worker.get(fixed), f"{fixed} would stop `--scale worker=N`"
    assert worker["restart"] == "unless-stopped"
    assert worker.get("init") is True  # SIGTERM reaches arq; no zombie processes
    depends = worker["depends_on"]
    assert depends["redis"] == {"condition": "service_healthy", "required": True}
    # Only one of the two LLM services exists in a run: each is optional, both are waited for.
    assert depends["sglang"] == {"condition": "service_healthy", "required": False}
    assert depends["fake-llm"] == {"condition": "service_healthy", "required": False}
    assert depends["llm-check"] == {"condition": "service_completed_successfully", "required": True}
    check = services("*")["llm-check"]["depends_on"]
    assert check["sglang"]["required"] is False and check["fake-llm"]["required"] is False


def test_worker_healthcheck_is_arq_check_on_a_key_written_often_enough() -> None:
    worker = services()["worker"]
    health = worker["healthcheck"]
    assert health["test"] == ["CMD", "arq", "--check", "worker.WorkerSettings"]
    assert seconds(health["start_period"]) > 0
    key_interval = float(worker["environment"]["ARK_WORKER__HEALTH_CHECK_INTERVAL_S"])
    # arq rewrites the key every key_interval seconds and lets it live 1 s longer: a stuck worker is
    # reported within one check after that.
    assert key_interval + 1 <= seconds(health["interval"])
    assert seconds(health["timeout"]) >= 5  # `arq --check` imports the worker first


@pytest.mark.parametrize("grace", [None, "0", "2.5", "90"])
def test_worker_stop_grace_period_is_the_shutdown_grace_plus_a_margin(grace: str | None) -> None:
    worker = services(env={"ARK_WORKER__SHUTDOWN_GRACE_S": grace} if grace else {})["worker"]
    shutdown_grace = float(worker["environment"]["ARK_WORKER__SHUTDOWN_GRACE_S"])
    assert shutdown_grace == float(grace or 25)
    stop_grace = seconds(worker["stop_grace_period"])
    assert shutdown_grace + 5 <= stop_grace <= shutdown_grace + 30


# -- every ARK_* variable is a real setting ------------------------------------------------------------

ENV_CASES = {
    "defaults": {},
    "custom": {
        **CUSTOM_LLM,
        "ARK_REDIS__URL": "redis://:secret@cache:6380/2",
        "ARK_LLM__BASE_URL": "http://router:30000/v1",
        "ARK_WORKER__MAX_JOBS": "128",
        "ARK_WORKER__JOB_TIMEOUT_S": "600",
        "ARK_WORKER__SHUTDOWN_GRACE_S": "40",
        "ARK_WORKER__HEALTH_CHECK_INTERVAL_S": "5",
    },
}


@pytest.mark.parametrize("case", ENV_CASES)
@pytest.mark.parametrize("name", ["worker", "llm-check"])
def test_every_ark_variable_is_a_setting_and_parses(name: str, case: str) -> None:
    env = services("*", env=ENV_CASES[case])[name]["environment"]
    assert env and all(key.startswith("ARK_") for key in env), "configured by arkq settings only"
    assert unknown_env_keys(env) == []
    config = load_config(env)  # raises ConfigError on an unknown key or a value that does not parse
    for key, value in env.items():
        section, setting = key.removeprefix("ARK_").lower().split("__")
        loaded = config.get(f"{section}.{setting}")
        if value == "":
            assert loaded in (None, ""), key  # an empty API key is no key
        elif isinstance(loaded, int | float):
            assert loaded == float(value), key
        else:
            assert loaded == value, key
    if case == "custom":
        assert config.redis.url == "redis://:secret@cache:6380/2"
        assert (config.llm.base_url, config.llm.model_name) == ("http://router:30000/v1", "qwen14")
        assert config.llm.api_key is not None and config.llm.api_key.get_secret_value() == "sk-local"
    if case == "custom" and name == "worker":
        assert (config.worker.max_jobs, config.worker.job_timeout_s) == (128, 600)
        assert (config.worker.shutdown_grace_s, config.worker.health_check_interval_s) == (40, 5)


# -- .env.example documents the file ------------------------------------------------------------------


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    active, commented = env_example_variables()
    documented = set(active) | commented
    assert compose_variables() - documented == set()
    unused = set(active) - compose_variables() - {"COMPOSE_PROFILES"}
    assert unused == set(), f"set in .env.example but never read: {unused}"
    launch_only = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", LAUNCH_SCRIPT.read_text())) - compose_variables()
    assert launch_only <= {"LLM_HOST", "PYTHON"}


def test_env_example_values_are_the_compose_defaults() -> None:
    """Copying .env.example to .env changes nothing but selecting the gpu profile."""
    assert compose_config(env_file=ENV_EXAMPLE) == compose_config("gpu")
    assert compose_config("cpu", env_file=ENV_EXAMPLE) == compose_config("cpu")
