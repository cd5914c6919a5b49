"""deploy/'s Prometheus rules and scrape config and its Grafana dashboard name only the
metrics docs/monitoring.md documents, with the labels it gives them, and are well formed.

No network: the files are parsed here; where ``promtool`` is installed, it checks the rules,
the config and every dashboard query as well."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "monitoring.md"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "corral-dashboard.json"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus gives every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# The coordinator's gauges that are its own process's; every other coordinator gauge is read
# from the database, the same on every coordinator: summed across them it counts double.
PER_PROCESS_GAUGES = frozenset({"corral_build_info", "corral_workers_streams_open"})
SEVERITIES = frozenset({"info", "warning", "critical"})

_NAME = re.compile(r"\b(?:corral|worker)_\w+")
_SELECTOR = re.compile(r"\b((?:corral|worker)_\w+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_RATE_OF = re.compile(r"\b(rate|irate|increase)\s*\(\s*(\w+)")
_GAUGE_FN_OF = re.compile(r"\b(deriv|delta|idelta|predict_linear)\s*\(\s*(\w+)")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # gauge, counter, histogram
    labels: frozenset[str]
    component: str  # coordinator or worker


def documented() -> dict[str, Metric]:
    """The metrics of docs/monitoring.md's tables: name, type and labels in backticks."""
    found: dict[str, Metric] = {}
    component = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            component = "worker" if "worker" in line.lower() else "coordinator"
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        name = re.fullmatch(r"`(\w+)`", cells[0])
        if name is None:
            continue
        kind = cells[1].split()[0]
        labels = frozenset(re.findall(r"`(\w+)`", cells[2]))
        found[name.group(1)] = Metric(name.group(1), kind, labels, component)
    return found


METRICS = documented()


def series_metric(series: str) -> Metric | None:
    """The documented metric a series name belongs to (a histogram's _bucket/_sum/_count)."""
    if series in METRICS and METRICS[series].kind != "histogram":
        return METRICS[series]
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and base in METRICS and METRICS[base].kind == "histogram":
            return METRICS[base]
    return None


def problems(expr: str) -> list[str]:
    """What is wrong with one PromQL expression against the documented metrics."""
    out: list[str] = []
    named: list[Metric] = []
    for series in _NAME.findall(expr):
        metric = series_metric(series)
        if metric is None:
            hint = " (a histogram is read through _bucket/_sum/_count)" if series in METRICS else ""
            out.append(f"{series} is not a documented series{hint}")
        else:
            named.append(metric)
    for series, matchers in _SELECTOR.findall(expr):
        metric = series_metric(series)
        if metric is None:
            continue
        allowed = metric.labels | TARGET_LABELS | ({"le"} if series.endswith("_bucket") else set())
        for label in _MATCHER.findall(matchers):
            if label not in allowed:
                out.append(f"{series} has no label {label!r} (documented: {sorted(metric.labels)})")
    allowed = set(TARGET_LABELS).union(*(m.labels for m in named))
    if "_bucket" in expr:
        allowed.add("le")
    for group in _GROUPING.findall(expr):
        for label in filter(None, (s.strip() for s in group.split(","))):
            if label not in allowed:
                out.append(f"grouping by {label!r}: none of its metrics has that label")
    for fn, series in _RATE_OF.findall(expr):
        metric = series_metric(series)
        if metric is not None and metric.kind == "gauge":
            out.append(f"{fn}() of the gauge {series}: it is for counters")
    for fn, series in _GAUGE_FN_OF.findall(expr):
        metric = series_metric(series)
        if metric is not None and metric.kind != "gauge":
            out.append(f"{fn}() of the {metric.kind} {series}: it is for gauges")
    for name, metric in METRICS.items():
        if metric.kind != "gauge" or metric.component != "coordinator":
            continue
        if name in PER_PROCESS_GAUGES:
            continue
        summed = rf"\bsum\b(?:\s*(?:by|without)\s*\([^)]*\))?\s*\(\s*(?:\w+\s*\(\s*)?{name}\b"
        if re.search(summed, expr):
            out.append(f"sum of {name} across coordinators: each serves the database's value")
    if "histogram_quantile" in expr:
        if "_bucket" not in expr:
            out.append("histogram_quantile() without a _bucket series")
        elif not any("le" in [s.strip() for s in g.split(",")] for g in _GROUPING.findall(expr)):
            out.append("histogram_quantile() over buckets not kept by le")
    return out


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside a (collapsed) row included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in all_panels(dash["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for var in dash["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]
            yield f"variable {var['name']!r}", query["query"] if isinstance(query, dict) else query


def as_promql(query: str) -> str:
    """A Grafana query as plain PromQL: variables replaced, label_values() as its selector."""
    query = re.sub(r"\$\{?\w+\}?", ".*", query)
    values = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
    return values.group(1) if values else query


# The documentation


def test_the_documented_metrics_are_read() -> None:
    assert len(METRICS) >= 20
    assert METRICS["corral_queue_depth_jobs"] == Metric(
        "corral_queue_depth_jobs", "gauge", frozenset({"tenant"}), "coordinator"
    )
    assert METRICS["corral_dispatch_latency_seconds"].kind == "histogram"
    assert METRICS["worker_gpu_utilization_percent"].component == "worker"
    for metric in METRICS.values():
        assert metric.kind in {"gauge", "counter", "histogram"}, metric
        # _total is a counter's, and only a counter's (a gauge so named reads as one)
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric


def test_the_checks_catch_a_wrong_name_label_or_aggregation() -> None:
    assert problems("sum(rate(corral_jobs_retries_total[5m]))") == []
    assert problems("sum(rate(corral_job_retries_total[5m]))") != []  # misspelt
    assert problems("histogram_quantile(0.9, sum by (le) (rate(corral_job_duration_seconds[5m])))")
    assert problems("max by (tennant) (corral_queue_depth_jobs)") != []
    assert problems('corral_queue_depth_jobs{tennant="a"}') != []
    assert problems("sum(corral_gpus_online)") != []
    assert problems("sum by (tenant) (deriv(corral_queue_depth_jobs[10m]))") != []
    assert problems("rate(corral_gpus_in_use[5m])") != []
    assert problems("histogram_quantile(0.5, sum by (route) (rate(x_bucket[5m])))") != []
    assert problems("sum(max by (tenant) (corral_queue_depth_jobs))") == []


# The alerting rules


def test_every_rule_is_a_complete_alert() -> None:
    found = rules()
    assert found
    names = [rule.get("alert") for rule in found]
    assert len(names) == len(set(names)), names
    for rule in found:
        where = rule.get("alert", rule)
        assert isinstance(rule.get("alert"), str) and rule["alert"], where
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), where
        assert re.fullmatch(r"\d+[smhd]", str(rule.get("for", ""))), where
        assert rule.get("labels", {}).get("severity") in SEVERITIES, where
        assert rule.get("annotations", {}).get("summary"), where
        assert rule.get("annotations", {}).get("description"), where


def test_every_rule_names_documented_metrics_soundly() -> None:
    wrong = {rule["alert"]: problems(rule["expr"]) for rule in rules()}
    assert {alert: found for alert, found in wrong.items() if found} == {}


@pytest.mark.parametrize(
    "needed",
    [
        "corral_queue_depth_jobs",
        "corral_queue_oldest_age_seconds",
        'corral_changes_total{kind="worker.offline"}',
        "corral_jobs_retries_total",
        "corral_workers_heartbeats_total",
        'corral_attempts_ended_total{outcome="lost"}',
        'up{job="corral-coordinator"} == 0',
        'up{job="corral-worker"} == 0',
    ],
)
def test_the_rules_watch(needed: str) -> None:
    assert any(needed in rule["expr"] for rule in rules())


def test_the_queue_alert_needs_idle_gpus_and_a_growing_queue() -> None:
    (rule,) = [r for r in rules() if "corral_gpus_in_use" in r["expr"]]
    assert "corral_queue_depth_jobs" in rule["expr"]
    assert re.search(r"\b(deriv|delta)\(corral_queue_depth_jobs\[10m\]\)", rule["expr"])


def test_the_rules_own_tests_feed_documented_series() -> None:
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == ["alerts.yml"]
    alerts = {rule["alert"] for rule in rules()}
    wrong = []
    for case in tests["tests"]:
        for series in case["input_series"]:
            wrong += problems(series["series"])
        wrong += [t["alertname"] for t in case["alert_rule_test"] if t["alertname"] not in alerts]
    assert wrong == []


# The scrape config


def test_the_scrape_config_loads_the_rules_and_scrapes_both() -> None:
    config = load_yaml(PROMETHEUS)
    assert (PROMETHEUS.parent / "alerts.yml").resolve() in [
        (PROMETHEUS.parent / f).resolve() for f in config["rule_files"]
    ]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    coordinator, worker = jobs["corral-coordinator"], jobs["corral-worker"]
    assert coordinator.get("metrics_path", "/metrics") == "/metrics"
    assert coordinator["authorization"]["credentials_file"]
    assert coordinator["authorization"].get("type", "Bearer") == "Bearer"
    assert "credentials" not in coordinator["authorization"]  # never the secret itself
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in worker["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":2112") for t in targets), targets


# The dashboard


def test_the_dashboard_is_an_importable_dashboard() -> None:
    dash = dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    assert [i["name"] for i in dash["__inputs"] if i["type"] == "datasource"] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"


def test_every_panel_has_a_datasource_a_target_and_its_own_id() -> None:
    panels = list(all_panels(dashboard()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), sorted(ids)
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel.get("title")
        assert title, panel["id"]
        assert panel.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", title
        assert panel.get("targets"), title
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), title
            assert target.get("datasource", panel["datasource"])["uid"] == "${DS_PROMETHEUS}"


def test_every_dashboard_query_names_documented_metrics_soundly() -> None:
    wrong = {where: problems(expr) for where, expr in queries(dashboard())}
    assert {where: found for where, found in wrong.items() if found} == {}


def test_the_dashboard_shows_every_documented_metric() -> None:
    named = {
        m.name
        for _, expr in queries(dashboard())
        for s in _NAME.findall(expr)
        if (m := series_metric(s)) is not None
    }
    assert set(METRICS) - named == set()


# promtool, where it is installed


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool is not installed (Debian: apt-get install prometheus); the structural"
            " checks above still ran"
        )
    return found


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_checks_the_rules() -> None:
    _run(_promtool(), "check", "rules", str(ALERTS))


def test_promtool_runs_the_rules_own_tests() -> None:
    _run(_promtool(), "test", "rules", str(ALERTS_TEST))


def test_promtool_checks_the_config(tmp_path: Path) -> None:
    promtool = _promtool()
    # promtool opens the credentials file: point it at a stand-in next to a copy.
    config = load_yaml(PROMETHEUS)
    key = tmp_path / "scrape-key"
    key.write_text("ck_stand-in\n", encoding="utf-8")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    _run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    promtool = _promtool()
    recorded = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": recorded}]}), "utf-8")
    _run(promtool, "check", "rules", str(path))
