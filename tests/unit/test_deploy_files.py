"""deploy/: the Prometheus alert rules (checked and unit-tested by promtool when it is installed)
and the Grafana dashboard, whose queries may name only metrics that runlane exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from app.observability import metrics
from app.web.metrics import Gauges, Metrics
from tests.helpers import ROOT
from workers.webhook_metrics import WebhookMetrics

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "runlane.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
NAME = re.compile(r"\brunlane_[a-z_]+\b")


def exposed_names() -> set[str]:
    """Every sample name runlane's processes expose: the metric classes of each process kind,
    and the gauges the web reads at a scrape."""
    registry = CollectorRegistry()
    metrics.WorkerMetrics(registry)
    metrics.RelayMetrics(registry)
    WebhookMetrics(registry)
    scheduler = CollectorRegistry()  # it defines runs_finished too
    metrics.SchedulerMetrics(scheduler)
    web = Metrics()
    families = {(m.name, m.type) for r in (registry, scheduler) for m in r.collect()}
    assert web.registry is not None  # no multiprocess folder in unit tests
    families |= {(m.name, m.type) for m in web.registry.collect()}
    gauges = Gauges(held=[("t", "q", "rate_limited", 1)], depths=[("q", 2, 1)], workers={"q": 1})
    text = web.exposition(gauges).get_data(as_text=True)
    families |= {(n, "gauge") for n in re.findall(r"^# TYPE (\S+) gauge$", text, re.M)}
    return {name + suffix for name, kind in families for suffix in SUFFIXES.get(kind, ("",))}


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    exprs += [v["definition"] for v in doc["templating"]["list"]]
    return exprs


def alert_rules() -> list[dict[str, str]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_dashboard_and_alerts_name_only_exposed_metrics() -> None:
    exposed = exposed_names()
    used = {name for expr in dashboard_queries() for name in NAME.findall(expr)}
    used |= {name for rule in alert_rules() for name in NAME.findall(rule["expr"])}
    assert used, "no runlane metric found in the queries"
    assert used <= exposed, sorted(used - exposed)
    # the panels the dashboard promises
    for needed in (
        "runlane_queue_wait_seconds_bucket", "runlane_attempt_duration_seconds_bucket",
        "runlane_relay_lag_seconds_bucket", "runlane_tail_delivery_lag_seconds_bucket",
        "runlane_runs_finished_total", "runlane_stalls_found_total", "runlane_workers_live",
        "runlane_webhook_deliveries_total",
    ):  # fmt: skip
        assert needed in used, needed
    assert {rule["alert"] for rule in alert_rules()} == {
        "RunlaneQueueWithoutWorkers", "RunlaneRelayLagHigh", "RunlaneWebhookFailuresRising",
        "RunlaneStallsRising",
    }  # fmt: skip


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def test_promtool_checks_the_alert_rules_and_their_unit_tests() -> None:
    promtool = _promtool()
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel's query as a recording rule, Grafana's variables filled in as it would."""
    promtool = _promtool()
    rules = [
        {"record": f"runlane:dashboard:{i}", "expr": _filled(expr)}
        for i, expr in enumerate(dashboard_queries())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _filled(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$queue", ".*")
