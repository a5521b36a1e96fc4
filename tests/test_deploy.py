"""The dashboard and alert rules under deploy/: valid for promtool, tested, and naming only real metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devkit import samples
from devkit.procs import ROOT, wait_for
from tests.helpers import TOKEN, Pipeline, SandboxClient

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "rainbridge.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\brainbridge_[a-z_]+\b")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt install prometheus)")
    return found


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, check=False, timeout=60)


def test_the_alert_rules_are_valid_and_their_unit_tests_pass(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
    tested = run(promtool, "test", "rules", "alerts_test.yml", cwd=ALERTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a unit test, and every alert points at the README's runbook
    rules = [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    tests = yaml.safe_load((ALERTS.parent / "alerts_test.yml").read_text())["tests"]
    tested_names = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert {rule["alert"] for rule in rules} == tested_names
    # (GitHub's anchors: the heading in lower case, punctuation dropped, spaces as hyphens)
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
    for rule in rules:
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors, rule["alert"]


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: each query becomes a recording rule.
    recorded = [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(dashboard_queries())
    ]
    rules = {"groups": [{"name": "dashboard", "rules": recorded}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = run(promtool, "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_imports_as_is_and_shows_what_on_call_needs() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "rainbridge" and dashboard["schemaVersion"] >= 36
    # One datasource variable, no "__inputs" to fill in on import
    variables = dashboard["templating"]["list"]
    assert [(v["name"], v["type"], v["query"]) for v in variables] == [
        ("datasource", "datasource", "prometheus")
    ]
    assert "__inputs" not in dashboard
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queries = " ".join(dashboard_queries())
    for needed in (
        "rainbridge_receiver_pushes_total",  # pushes in
        'rainbridge_pushes_total{outcome="sent"}',  # events delivered
        "rainbridge_deadletters_total",  # dead letters by reason
        "rainbridge_queue_depth",
        "rainbridge_queue_oldest_age_seconds",
        "rainbridge_delivery_latency_seconds_bucket",  # delivery latency percentiles
        "rainbridge_aep_responses_total",
        "rainbridge_aep_paused",
        "rainbridge_aep_token_expires_in_seconds",
        "rainbridge_drain_last_run_age_seconds",
    ):
        assert needed in queries, needed


def sample_names(text: str) -> set[str]:
    """Every series name a scrape can have, from its families (a counter is ``_total``, and so on)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


@pytest.mark.slow
def test_every_metric_the_dashboard_and_alerts_name_is_in_a_live_scrape(
    receiver_url: str, pipeline: Pipeline, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    # Given real traffic: delivered pushes and one dead letter
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with requests.Session() as http:
        for push in [samples.push() for _ in range(5)] + [samples.push(timestamp="soon")]:
            assert (
                http.post(f"{receiver_url}/v1/pushes", json=push, headers=auth, timeout=5).status_code == 202
            )
    sandbox.wait_for_events(5)
    text = wait_for(
        lambda: (
            (t := requests.get(f"{receiver_url}/metrics", timeout=5).text)
            and "rainbridge_delivery_latency_seconds_count 5.0" in t
            and t
        ),
        timeout=20,
        what="the workers' counts in /metrics",
    )

    scraped = sample_names(text)

    named = {name for query in dashboard_queries() + rule_queries() for name in METRIC.findall(query)}
    assert named, "no metric names found"
    assert sorted(named - scraped) == []
