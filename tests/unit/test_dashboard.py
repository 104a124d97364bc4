"""The Grafana dashboard imports cleanly into a stock Grafana and asks only for what the service exports.

Checked without a Grafana: the JSON's shape (ids, positions, variables), its data
sources (one variable, no fixed uid), and every PromQL expression (known metric
names, the application filter, ``$__rate_interval`` in every range).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import REPO
from tests.unit.test_deploy import exported_names

PATH = REPO / "deploy" / "grafana" / "dashboards" / "sessionizer.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(PATH.read_text())


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside a collapsed row included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in the JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def test_it_is_a_current_dashboard_with_unique_ids_and_positions(dashboard):
    assert dashboard["uid"] == "sessionizer"  # the provisioned home dashboard (docker-compose.yml)
    assert dashboard["schemaVersion"] >= 39
    panels = list(all_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), panel["title"]
        assert grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["title"] and panel["type"]


def test_panels_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                assert (row, column) not in cells, (panel["title"], cells.get((row, column)))
                cells[(row, column)] = panel["title"]


def test_every_panel_and_query_uses_the_data_source_variable(dashboard):
    for panel in all_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, panel["title"]
    # and no fixed uid anywhere: a stock Grafana has no data source named "prometheus"
    for key, value in walk(dashboard):
        if key == "datasource" and isinstance(value, dict):
            assert value.get("uid") == "${datasource}", value


def test_variables_pick_the_data_source_application_instance_and_pipeline(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "app", "instance", "pipeline"}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for name, label in (("app", "app_id"), ("instance", "instance"), ("pipeline", "pipeline")):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert re.fullmatch(rf"label_values\((sessionizer_\w+)(\{{[^}}]*\}})?, {label}\)", variable["definition"]), variable
        assert variable["query"]["query"] == variable["definition"]
        assert variable["includeAll"] and variable["multi"]
        metric = re.match(r"label_values\((\w+)", variable["definition"]).group(1)
        assert metric in exported_names(), metric
    for name in ("instance", "pipeline"):
        assert 'app_id=~"$app"' in variables[name]["definition"]


def test_a_row_per_pipeline_and_a_restore_row(dashboard):
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    (per_pipeline,) = [row for row in rows if row.get("repeat")]
    assert per_pipeline["repeat"] == "pipeline" and "$pipeline" in per_pipeline["title"]
    restore = next(i for i, panel in enumerate(dashboard["panels"]) if panel["type"] == "row" and panel["title"] == "Restore")
    in_restore = []
    for panel in dashboard["panels"][restore + 1 :]:
        if panel["type"] == "row":
            break
        in_restore += [target["expr"] for target in panel["targets"]]
    for metric in ("sessionizer_restore_remaining_records", "sessionizer_restored_records_total", "sessionizer_tasks"):
        assert any(metric in expr for expr in in_restore), metric


def test_the_new_signals_have_panels(dashboard):
    text = "\n".join(expressions(dashboard))
    for metric in (
        "sessionizer_event_time_lag_seconds",
        "sessionizer_source_watermark_seconds",
        "sessionizer_kafka_producer_errors_total",
        "sessionizer_kafka_transaction_state",
    ):
        assert metric in text, metric
    assert re.search(r"sum by \([^)]*reason[^)]*\) \(rate\(sessionizer_late_events_total", text)
    assert re.search(r"sum by \([^)]*reason[^)]*\) \(rate\(sessionizer_dead_letter_records_total", text)


def test_every_expression_asks_for_exported_metrics_of_the_chosen_application(dashboard):
    exported = exported_names()
    found = expressions(dashboard)
    assert len(found) >= 25
    for expr in found:
        names = re.findall(r"\b(sessionizer_\w+)", expr)
        assert names, expr
        assert set(names) <= exported, (expr, set(names) - exported)
        # every selector of ours is filtered to the chosen application (and instance)
        for selector in re.finditer(r"\b(sessionizer_\w+)(\{[^}]*\})?", expr):
            labels = selector.group(2) or ""
            assert 'app_id=~"$app"' in labels, (expr, selector.group(0))
            assert 'instance=~"$instance"' in labels, (expr, selector.group(0))


def test_every_range_is_the_rate_interval(dashboard):
    for expr in expressions(dashboard):
        windows = re.findall(r"\[[^\]]*\]", expr)
        assert all(window == "[$__rate_interval]" for window in windows), expr
        # each rate and increase has its range, and nothing else has one
        assert len(windows) == len(re.findall(r"\b(?:rate|irate|increase)\(", expr)), expr
