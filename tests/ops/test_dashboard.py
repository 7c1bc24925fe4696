"""The Grafana dashboard (deploy/grafana/portcullis.json) queries only what the gateway exports,
and every query is PromQL Prometheus accepts.

A panel on a renamed metric shows "No data", which reads like a quiet system. Each expression is
checked like the alert rules (names and labels against a real gateway's /metrics and registry),
then handed to ``promtool check rules`` as a recording rule, which parses it as Prometheus would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import GatewayFactory, UpstreamServer, missing_service
from tests.ops.exported_metrics import TARGET_LABELS, exported_metrics, metric_names_in, selectors_in

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD: dict[str, Any] = json.loads((ROOT / "deploy" / "grafana" / "portcullis.json").read_text())
PROVISIONING: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "grafana" / "dashboards.yml").read_text())


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def expressions() -> list[str]:
    found = [target["expr"] for panel in panels(DASHBOARD["panels"]) for target in panel.get("targets", [])]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["definition"])
    return found


EXPRESSIONS = expressions()


def test_the_dashboard_is_provisionable() -> None:
    assert DASHBOARD["uid"] == "portcullis" and DASHBOARD["title"]
    ids = [panel["id"] for panel in panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(DASHBOARD["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    assert PROVISIONING["providers"][0]["type"] == "file"


async def test_every_dashboard_query_uses_exported_metrics_and_labels(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    metrics = await exported_metrics(make_gateway, upstream)
    text = "\n".join(EXPRESSIONS)
    assert len(metric_names_in(text)) >= 15
    assert metric_names_in(text) - metrics.names == set()
    for name, used in selectors_in(text):
        if name in metrics.scraped:
            assert used - metrics.scraped[name] - TARGET_LABELS == set(), name


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        missing_service("promtool is not installed (make test-tools installs Debian's prometheus package)")
        return
    queries = [e.replace("$instance", ".*") for e in EXPRESSIONS if not e.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": query} for i, query in enumerate(queries)
    ]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"promtool rejected a dashboard query:\n{done.stdout}\n{done.stderr}")
