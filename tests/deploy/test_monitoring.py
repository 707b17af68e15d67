"""The monitoring profile: Prometheus and Grafana in compose, Prometheus's scrape configuration and the
Grafana dashboard. Offline: compose and promtool read the files, and the names the dashboard queries are
checked against what arkq's worker and gateway and the SGLang emulator actually serve on /metrics
(scraped from real processes, so a renamed metric breaks this test, not the dashboard in production)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.helpers import ENV_EXAMPLE, ROOT, compose_config, run_compose
from tests.servers import Process, WorkerFleet, ark_env, free_port, start_fake_llm, start_gateway

MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "arkq.json"
DATASOURCE_UID = "arkq-prometheus"
GATEWAY_KEY = "sk-monitoring-test"

#: The figures the dashboard exists to show, each by the metric that carries it.
SHOWN = {
    "queue depth": {"arkq_num_queue_reqs", "arkq_num_deferred_reqs", "arkq_num_running_reqs"},
    "time in arkq's queue vs SGLang's": {
        "arkq_queue_time_seconds_bucket",
        "sglang:queue_time_seconds_bucket",
    },
    "time to first token, arkq vs SGLang": {
        "arkq_time_to_first_token_seconds_bucket",
        "sglang:time_to_first_token_seconds_bucket",
    },
    "tokens/s": {"arkq_generation_tokens_total", "sglang:generation_tokens_total"},
    "inter-token latency": {
        "arkq_inter_token_latency_seconds_bucket",
        "sglang:inter_token_latency_seconds_bucket",
    },
    "errors by kind, attempts, takeovers": {
        "arkq_jobs_total",
        "arkq_attempts_total",
        "arkq_lease_takeovers_total",
    },
    "fleet": {"arkq_workers_alive", "arkq_worker_running_jobs", "arkq_llm_requests_total"},
    "gateway": {
        "arkq_http_requests_total",
        "arkq_http_request_duration_seconds_bucket",
        "arkq_sse_streams_open",
    },
    "redis errors": {"arkq_redis_errors_total"},
}


def services(*profiles: str, **kwargs: Any) -> dict[str, Any]:
    return compose_config(*profiles, **kwargs)["services"]


def command(name: str) -> Path:
    """A system command the tests need (CI installs them: .ci/run)."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `apt-get install prometheus` (it brings {name}; CI does this)")
    return Path(found)


# -- compose ----------------------------------------------------------------------------------------------


PROFILE_SETS = (("monitoring",), ("cpu", "monitoring"), ("gpu", "gateway", "monitoring"))


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids="+".join)
def test_the_monitoring_profile_is_valid(profiles: tuple[str, ...]) -> None:
    done = run_compose("config", "-q", profiles=profiles)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"compose warns: {done.stderr}"
    done = run_compose("config", "-q", profiles=profiles, env_file=ENV_EXAMPLE)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_prometheus_and_grafana_run_only_with_the_profile_and_publish_on_localhost() -> None:
    assert not {"prometheus", "grafana"} & set(services("cpu", "gateway"))
    monitoring = services("monitoring")
    assert {"prometheus", "grafana"} <= set(monitoring)
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        service = monitoring[name]
        assert service["profiles"] == ["monitoring"]
        [published] = service["ports"]
        assert (published["host_ip"], published["published"], published["target"]) == (
            "127.0.0.1",
            str(port),
            port,
        )
        image, _, tag = service["image"].partition(":")
        assert image in {"prom/prometheus", "grafana/grafana"}
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: a pinned release, not {tag or 'latest'}"
        assert service["restart"] == "unless-stopped"
        assert str(port) in service["healthcheck"]["test"][-1]
    moved = services("monitoring", env={"PROMETHEUS_PUBLISH_ADDRESS": "0.0.0.0", "GRAFANA_PORT": "3300"})
    assert moved["prometheus"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert moved["grafana"]["ports"][0]["published"] == "3300"


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts: container path -> path in this checkout."""
    return {m["target"]: Path(m["source"]) for m in service["volumes"] if m["type"] == "bind"}


def test_prometheus_reads_the_checked_in_configuration_and_keeps_its_data_in_a_volume() -> None:
    config = compose_config("monitoring")
    prometheus = config["services"]["prometheus"]
    argv = prometheus["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in argv
    assert mounts(prometheus) == {"/etc/prometheus/prometheus.yml": PROMETHEUS_CONFIG}
    assert all(m["read_only"] for m in prometheus["volumes"] if m["type"] == "bind")
    [data] = [m for m in prometheus["volumes"] if m["type"] == "volume"]
    assert f"--storage.tsdb.path={data['target']}" in argv and data["source"] in config["volumes"]


def test_grafana_is_provisioned_from_the_checkout() -> None:
    grafana = services("monitoring")["grafana"]
    bound = mounts(grafana)
    assert bound["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    dashboards_dir = next(target for target, source in bound.items() if source == GRAFANA / "dashboards")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_dir}/arkq.json"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin"  # Grafana asks to change it

    [datasources] = (GRAFANA / "provisioning" / "datasources").glob("*.yml")
    [source] = yaml.safe_load(datasources.read_text())["datasources"]
    assert (source["type"], source["uid"], source["url"]) == (
        "prometheus",
        DATASOURCE_UID,
        "http://prometheus:9090",
    )
    [providers] = (GRAFANA / "provisioning" / "dashboards").glob("*.yml")
    [provider] = yaml.safe_load(providers.read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == dashboards_dir


def test_every_worker_serves_metrics_on_the_port_prometheus_scrapes() -> None:
    every = services("*")
    worker_port = int(every["worker"]["environment"]["ARK_WORKER__METRICS_PORT"])
    gateway_port = int(every["gateway"]["command"][-1])
    llm_port = int(every["fake-llm"]["command"][every["fake-llm"]["command"].index("--port") + 1])
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert set(jobs) == {"arkq-worker", "arkq-gateway", "sglang"}
    scraped = (("arkq-worker", "worker", worker_port), ("arkq-gateway", "gateway", gateway_port))
    for name, service, port in scraped:
        [discovery] = jobs[name]["dns_sd_configs"]  # every container of `--scale SERVICE=N`, not a list
        assert (discovery["names"], discovery["type"], discovery["port"]) == ([service], "A", port)
    assert jobs["sglang"]["static_configs"] == [{"targets": [f"llm:{llm_port}"]}]
    for llm in ("sglang", "fake-llm"):  # whichever answers as `llm`
        assert every[llm]["networks"]["default"]["aliases"] == ["llm"]
    assert "--enable-metrics" in every["sglang"]["command"]
    assert not every["worker"].get("ports"), "metrics stay inside the network"


def test_prometheus_accepts_its_configuration() -> None:
    done = subprocess.run(
        [command("promtool"), "check", "config", PROMETHEUS_CONFIG],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "5s"


# -- the dashboard ------------------------------------------------------------------------------------------

#: Words in PromQL that are not metric names.
PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"})
PROMQL_KEYWORDS |= {"unless", "offset", "bool", "inf", "nan"}
#: Grafana's variables, as they are replaced before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "30m", "$model": ".*"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, with Grafana's variables replaced."""
    found = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: an unknown variable in {expr}"
            found.append((panel["title"], expr))
    return found


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not its functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match[0].lower() not in PROMQL_KEYWORDS:
            names.add(match[0])
    return names


def test_the_dashboard_is_grafana_json_on_the_provisioned_data_source() -> None:
    board = dashboard()
    assert board["uid"] == "arkq" and board["title"] and board["schemaVersion"] >= 36
    assert board["id"] is None, "an export for sharing has no database id"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    [model] = board["templating"]["list"]
    assert model["datasource"]["uid"] == DATASOURCE_UID and model["allValue"] == ".*"


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression: a syntax error fails here."""
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [command("promtool"), "check", "rules", path], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_histogram_quantiles_read_buckets_by_le() -> None:
    for title, expr in expressions():
        for quantile in re.finditer(r"histogram_quantile\(", expr):
            inner = expr[quantile.end() :]
            assert re.search(r"sum by \((?:[\w, ]*\b)?le\b", inner), f"{title}: {expr}"
            assert metric_names(inner) and all(n.endswith("_bucket") for n in metric_names(inner)), title


def test_the_dashboard_shows_what_it_is_for() -> None:
    used = set().union(*(metric_names(expr) for _, expr in expressions()))
    for figure, names in SHOWN.items():
        assert names <= used, f"no panel shows {figure}: {names - used} unused"
    errors = [expr for _, expr in expressions() if 'outcome="error"' in expr and "by (kind)" in expr]
    assert errors, "errors are broken down by kind"


def test_the_name_extraction_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{route!="x", b="{c}"}[5m]))) '
        "/ on (route) group_left sum without (kind) (b_total offset 5m) + sglang:c_total + 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "sglang:c_total"}


# -- the names the dashboard uses are the names the processes serve -----------------------------------


def scrape(url: str, timeout: float = 30) -> dict[str, str]:
    """The metric families a /metrics endpoint serves: name -> type (families without samples too)."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read().decode()
            break
        except OSError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing serves {url} after {timeout} s: {error}") from None
            time.sleep(0.1)
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def series(families: dict[str, str]) -> set[str]:
    """The series names Prometheus stores for these families (a histogram's _bucket, _sum, _count ...)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    return {name + suffix for name, kind in families.items() for suffix in suffixes.get(kind, ("",))}


@pytest.fixture(scope="module")
def served(
    redis_server: tuple[Process, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, dict[str, str]]]:
    """What a worker, a gateway and the emulator serve on /metrics, each started as compose starts it."""
    log_dir = tmp_path_factory.mktemp("monitoring")
    redis_url = redis_server[1]
    emulator, base_url = start_fake_llm(log_dir, "--model", "Qwen/Qwen2.5-7B-Instruct")
    worker_port = free_port()
    env = ark_env(
        redis_url, base_url, worker__metrics_port=str(worker_port), worker__metrics_host="127.0.0.1"
    )
    workers = WorkerFleet(log_dir, env)
    gateway: Process | None = None
    try:
        workers.start(1)
        gateway_env = {**env, "ARK_GATEWAY__API_KEYS": json.dumps({"ops": GATEWAY_KEY})}
        gateway, gateway_url = start_gateway(log_dir, gateway_env)
        yield {
            "worker": scrape(f"http://127.0.0.1:{worker_port}/metrics"),
            "gateway": scrape(f"{gateway_url}/metrics"),
            "emulator": scrape(base_url.removesuffix("/v1") + "/metrics"),
        }
    finally:
        if gateway is not None:
            gateway.stop()
        workers.stop()
        emulator.stop()


def test_every_metric_the_dashboard_queries_is_served(served: dict[str, dict[str, str]]) -> None:
    arkq = series(served["worker"]) | series(served["gateway"])
    sglang = series(served["emulator"])
    assert all(name.startswith("sglang:") for name in served["emulator"])
    for title, expr in expressions():
        for name in metric_names(expr):
            exported = sglang if name.startswith("sglang:") else arkq
            assert name in exported, f"panel {title!r} queries {name}, which nothing serves: {expr}"


def test_rates_are_taken_of_counters_and_histograms_only(served: dict[str, dict[str, str]]) -> None:
    families = {**served["worker"], **served["gateway"], **served["emulator"]}
    cumulative = series({n: k for n, k in families.items() if k in {"counter", "histogram"}})
    for title, expr in expressions():
        for rate in re.finditer(r"\b(?:rate|increase|irate)\(([^\[]*)\[", expr):
            assert metric_names(rate[1]) <= cumulative, f"{title}: a rate of a gauge in {expr}"
