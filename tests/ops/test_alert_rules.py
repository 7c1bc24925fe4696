"""The alert rules are valid Prometheus rules and each alert fires when it should (promtool).

``promtool check rules`` catches a rule Prometheus would refuse to load; ``promtool test rules``
runs deploy/prometheus/alerts.test.yml, which has a bad and a healthy series for every alert. A
test there for every alert in alerts.yml is checked here, so a new alert cannot ship untested.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.conftest import missing_service

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts.test.yml"


def promtool(*args: str) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        missing_service("promtool is not installed (make test-tools installs Debian's prometheus package)")
        return
    done = subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_rules() -> None:
    promtool("check", "rules", RULES.name)


def test_promtool_unit_tests_pass() -> None:
    promtool("test", "rules", RULE_TESTS.name)


def test_every_alert_has_a_firing_and_a_silent_promtool_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alert_names() - fires == set(), "alerts with no test that they fire"
    assert alert_names() - silent == set(), "alerts with no test that they stay silent"


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    root = PROMETHEUS.parents[1]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            runbook = rule["annotations"]["runbook_url"]
            assert runbook.startswith("docs/runbooks/") and (root / runbook).is_file(), (rule["alert"], runbook)
