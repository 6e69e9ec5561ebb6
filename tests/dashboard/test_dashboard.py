"""dashboard/, docker-compose.yml: promtool checks, alert unit tests, structure checks, and every
query of the dashboard and the alert rules run on a real Prometheus scraping `fakeweb run --realtime`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clips import moving_face_clip
from project_paths import ROOT
from rtsp_server import free_port

from stream.config import ServiceConfig

PROMETHEUS_DIR = ROOT / "dashboard" / "prometheus"
GRAFANA_DIR = ROOT / "dashboard" / "grafana"
DASHBOARD_JSON = GRAFANA_DIR / "dashboards" / "fakeweb.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "fakeweb.yml"
COMPOSE = ROOT / "docker-compose.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
# What Grafana would put in place of the dashboard's variables.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$stream": ".*", "$pod": ".*"}

needs_promtool = pytest.mark.skipif(
    not (shutil.which("promtool") and shutil.which("prometheus")), reason="needs Debian's prometheus (2.42+)"
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those nested in rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def raw_queries() -> dict[str, str]:
    """'panel title / refId' -> PromQL as the dashboard has it."""
    dashboard = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    }


def dashboard_queries() -> dict[str, str]:
    """'panel title / refId' -> PromQL with Grafana's variables substituted."""
    queries = {}
    for name, expr in raw_queries().items():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        queries[name] = expr
    return queries


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"] for rule in group["rules"]]


# -- promtool ------------------------------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize("check", [["config", "prometheus.yml"], ["rules", "alerts.yml"]])
def test_promtool_check(check: list[str]) -> None:
    done = subprocess.run(
        ["promtool", "check", *check], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def latency_series(stream: str, bucket: str) -> list[dict[str, str]]:
    """A stream whose 60 frames a minute all take between the bound below `bucket` and `bucket`."""
    bounds = ["0.033", "0.1", "0.2", "+Inf"]
    name = "fakeweb_end_to_end_latency_seconds_bucket"
    return [
        series(name, "0+60x30" if float(le) >= float(bucket) else "0x30", stream=stream, le=le)
        for le in bounds
    ]


ALERT_CASES: dict[str, tuple[list[dict[str, str]], dict[str, list[dict[str, str]]]]] = {
    # alert -> (input series at 1 m steps, {eval time: expected alert labels})
    "FakewebEndToEndLatencyHigh": (
        latency_series("slow", "0.2") + latency_series("fast", "0.033"),
        {"3m": [], "12m": [{"severity": "warning", "stream": "slow"}]},
    ),
    "FakewebFrameDropRatioHigh": (
        [
            series("fakeweb_frames_total", "0+100x30", stream="a", outcome="processed"),
            series("fakeweb_frames_total", "0+10x30", stream="a", outcome="dropped_overload"),
            series("fakeweb_frames_total", "0+100x30", stream="b", outcome="processed"),
            series("fakeweb_frames_total", "0+1x30", stream="b", outcome="dropped_stale"),
            series("fakeweb_frames_total", "0+50x30", stream="b", outcome="decode_error"),
        ],
        {"3m": [], "12m": [{"severity": "warning", "stream": "a"}]},
    ),
    "FakewebCameraOffline": (
        [
            series("fakeweb_streams", "0 0 1x20", state="reconnecting"),
            series("fakeweb_streams", "1x22", state="live"),
        ],
        {"2m": [], "5m": [{"severity": "critical"}]},
    ),
    "FakewebNoModelLoaded": (
        [series("fakeweb_model_loaded", "1 1 0x20", instance="app:8080")],
        {"3m": [], "6m": [{"severity": "critical", "instance": "app:8080"}]},
    ),
    "FakewebDown": (
        [series("up", "1 1 0x20", job="fakeweb", instance="app:8080")],
        {"2m": [], "5m": [{"severity": "critical", "job": "fakeweb", "instance": "app:8080"}]},
    ),
    "FakewebFalseAlarmsHigh": (
        [  # a review a minute, 3 of 4 of them "real"; the count reaches 5 after about 5 minutes
            series("fakeweb_event_reviews_total", "0+0.75x40", outcome="real"),
            series("fakeweb_event_reviews_total", "0+0.25x40", outcome="correct"),
        ],
        {"3m": [], "25m": [{"severity": "warning"}]},
    ),
}

HEALTHY = [
    *latency_series("cam", "0.033"),
    series("fakeweb_frames_total", "0+100x30", stream="cam", outcome="processed"),
    series("fakeweb_frames_total", "0+1x30", stream="cam", outcome="dropped_stale"),
    series("fakeweb_streams", "1x30", state="live"),
    series("fakeweb_streams", "0x30", state="offline"),
    series("fakeweb_model_loaded", "1x30", instance="app:8080"),
    series("up", "1x30", job="fakeweb", instance="app:8080"),
    series("fakeweb_event_reviews_total", "0+0.1x30", outcome="real"),
    series("fakeweb_event_reviews_total", "0+0.9x30", outcome="correct"),
]


@needs_promtool
def test_alerts_fire_when_they_should_and_not_otherwise(tmp_path: Path) -> None:
    """`promtool test rules` on the rules minus their annotations (`promtool check rules` checks those)."""
    rules = load_yaml(PROMETHEUS_DIR / "alerts.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    assert {rule["alert"] for rule in alert_rules()} == set(ALERT_CASES)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    tests = [
        {
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alert,
                    "exp_alerts": [{"exp_labels": labels} for labels in expected],
                }
                for at, expected in times.items()
            ],
        }
        for alert, (inputs, times) in ALERT_CASES.items()
    ]
    tests.append(
        {
            "interval": "1m",
            "input_series": HEALTHY,
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": alert, "exp_alerts": []} for alert in ALERT_CASES
            ],
        }
    )
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}),
        encoding="utf-8",
    )
    done = subprocess.run(
        ["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- Grafana -------------------------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus"
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} / {target['refId']} has no expr"
            assert target.get("datasource", panel["datasource"])["uid"] == datasource["uid"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == datasource["uid"]
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"stream", "pod"}
    for query in dashboard_queries().values():
        assert "$" not in query, f"unsubstituted variable in {query}"
    for name, panel_query in raw_queries().items():  # every replica's series, or the chosen ones
        selectors = re.findall(r"fakeweb_\w+(\{[^}]*\})?", panel_query)
        assert selectors and all('pod=~"$pod"' in selector for selector in selectors), name


def test_dashboard_covers_the_required_views() -> None:
    queries = " ".join(dashboard_queries().values())
    for needed in (
        "fakeweb_end_to_end_latency_seconds_bucket",
        "fakeweb_stage_duration_seconds_bucket",
        'outcome="processed"',
        "dropped_",
        "fakeweb_classifier_batch_size_bucket",
        "fakeweb_queue_depth",
        "fakeweb_streams",
        "fakeweb_faces_total",
        "fakeweb_model_info",
        "fakeweb_threads_pinned",
    ):
        assert needed in queries, needed
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (stage, le)" in queries
        assert f"histogram_quantile({quantile}, sum by (le) (rate(fakeweb_end_to_end" in queries


def test_every_metric_the_dashboard_queries_is_documented() -> None:
    """Queries ending in `or vector(0)` have data even when their metric is absent (RTSP out off): a misspelt
    name would pass the real-Prometheus test below, so every name must be one that docs/metrics.md lists (and
    tests/stream/outputs/test_metrics.py checks the list against what the service exports)."""
    documented = set(
        re.findall(r"`(fakeweb_\w+)`", (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8"))
    )
    queried = set(re.findall(r"fakeweb_\w+", " ".join(dashboard_queries().values())))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in queried}
    assert families <= documented, families - documented


# -- docker compose ------------------------------------------------------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (bind) or volume name, from short or long volume syntax."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def host_path(source: str) -> Path | None:
    """The host path of a bind mount source, None for a named volume."""
    return (ROOT / source).resolve() if source.startswith((".", "/")) else None


def in_container(service: dict[str, Any], path: str) -> Path | None:
    """Where a container path of a service lives on the host (through its bind mounts)."""
    for target, source in mounts(service).items():
        host = host_path(source)
        if host is not None and (path == target or path.startswith(target.rstrip("/") + "/")):
            return host / os.path.relpath(path, target)
    return None


def test_compose_builds_and_mounts_files_that_exist() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"app", "mediamtx", "prometheus", "grafana"}
    assert (ROOT / services["app"]["build"] / "Dockerfile").is_file()
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for target, source in mounts(service).items():
            host = host_path(source)
            if host is None:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
            else:
                assert host.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_compose_wiring() -> None:
    compose = load_yaml(COMPOSE)
    app, prometheus, grafana = (compose["services"][name] for name in ("app", "prometheus", "grafana"))
    assert "FAKEWEB_TOKEN" in app["environment"]
    assert "127.0.0.1:8080/healthz" in " ".join(app["healthcheck"]["test"])
    assert "8080:8080" in app["ports"]

    mediamtx = compose["services"]["mediamtx"]
    server = load_yaml(in_container(mediamtx, "/mediamtx.yml"))  # type: ignore[arg-type]
    rtsp_port = server["rtspAddress"].rsplit(":", 1)[1]
    assert server["rtsp"] is True and "all_others" in server["paths"]
    assert mediamtx["ports"] == [f"127.0.0.1:{rtsp_port}:{rtsp_port}"]  # loopback only by default
    assert server["apiAddress"].split(":")[1] in " ".join(mediamtx["healthcheck"]["test"])
    default_out = re.fullmatch(r"\$\{FAKEWEB_RTSP_OUT_URL-(.+)\}", app["environment"]["FAKEWEB_RTSP_OUT_URL"])
    assert default_out is not None and default_out.group(1) == f"rtsp://mediamtx:{rtsp_port}"
    assert ServiceConfig(rtsp_out_url=default_out.group(1)).rtsp_out() is not None

    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    config_path = in_container(prometheus, config_flag.split("=", 1)[1])
    assert config_path is not None and config_path == PROMETHEUS_DIR / "prometheus.yml"
    config = load_yaml(config_path)
    assert all((config_path.parent / rule_file).is_file() for rule_file in config["rule_files"])
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "fakeweb"]
    assert job["static_configs"][0]["targets"] == ["app:8080"]

    provisioning = in_container(grafana, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA_DIR / "provisioning"
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert in_container(grafana, provider["options"]["path"]) == DASHBOARD_JSON.parent
    home = in_container(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == DASHBOARD_JSON
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]


def test_compose_ports_are_documented() -> None:
    """The Dockerfiles and the image itself are checked in tests/test_images.py."""
    operations = OPERATIONS.read_text(encoding="utf-8")
    for service in load_yaml(COMPOSE)["services"].values():
        for port in service.get("ports", []):
            assert str(port).split(":")[-1] in operations, f"port {port} is not in docs/operations.md"


# -- the real thing ------------------------------------------------------------------------------------------


class PrometheusApi:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/"

    def get(self, path: str, **params: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body["status"] != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        return list(self.get("query", query=expr)["result"])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@needs_promtool
@pytest.mark.slow
def test_every_query_runs_on_prometheus_scraping_a_realtime_run(tmp_path: Path, tiny_package: Path) -> None:
    """Slow (about 15 s): Prometheus scrapes `fakeweb run --realtime --metrics-port` every second while a 12 s
    clip plays; every dashboard query must return data and every alert expression must be valid."""
    clip, _ = moving_face_clip(tmp_path, seconds=12.0)
    prometheus_port, metrics_port = free_port(), free_port()
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / rule_file) for rule_file in config["rule_files"]]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "fakeweb"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    config["scrape_configs"] = [job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

    with contextlib.ExitStack() as cleanup:
        prometheus_log = cleanup.enter_context((tmp_path / "prometheus.log").open("wb"))
        run_log = cleanup.enter_context((tmp_path / "run.log").open("wb"))
        config_file, tsdb, out = tmp_path / "prometheus.yml", tmp_path / "tsdb", tmp_path / "out.mp4"
        listen = f"--web.listen-address=127.0.0.1:{prometheus_port}"
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config_file}", f"--storage.tsdb.path={tsdb}", listen],
            stdout=prometheus_log,
            stderr=subprocess.STDOUT,
        )
        cleanup.callback(stop, prometheus)
        model = ["--model", str(tiny_package), "--device", "cpu"]
        metrics = ["--realtime", "--metrics-port", str(metrics_port)]
        run = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", str(clip), "-o", str(out), "-q", *model, *metrics],
            cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=run_log,
            stderr=subprocess.STDOUT,
        )
        cleanup.callback(stop, run)
        api = PrometheusApi(prometheus_port)

        pending = dashboard_queries()
        deadline = time.monotonic() + 60
        while pending and run.poll() is None and time.monotonic() < deadline:
            for name, expr in list(pending.items()):
                try:
                    if api.query(expr):
                        del pending[name]
                except (OSError, json.JSONDecodeError):
                    break  # Prometheus not listening yet
            time.sleep(0.5)
        log = (tmp_path / "run.log").read_text(errors="replace")[-3000:]
        assert run.poll() is None, (
            f"the run ended (code {run.returncode}) before every query had data:\n{log}"
        )
        assert not pending, f"no data for: {pending}\n{log}"

        for rule in alert_rules():
            api.query(rule["expr"])  # raises on an invalid expression
        streams = api.get("label/stream/values", **{"match[]": "fakeweb_frames_total"})
        assert streams == ["file"]
        groups = api.get("rules")["groups"]
        assert {rule["name"] for group in groups for rule in group["rules"]} == set(ALERT_CASES)
        assert all(rule["health"] != "err" for group in groups for rule in group["rules"]), groups
