"""The Grafana dashboard and docs/metrics.md name only metrics the code registers,
and the docs name them all."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import dragonpy
from dragonpy._daemon._metrics import DaemonMetrics
from dragonpy._scheduler import Scheduler
from dragonpy._scheduler._metrics import SchedulerMetrics
from dragonpy._transport import open_server

ROOT = Path(__file__).parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dragonpy-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"
_NAME = re.compile(r"\bdragonpy_[a-z0-9_]+")
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def families(registry: CollectorRegistry) -> dict[str, str]:
    """Metric family names and their types, as the registry collects them."""
    return {family.name: family.type for family in registry.collect()}


@pytest.fixture
def registered(store: dragonpy.PieceStore) -> dict[str, str]:
    """Every family a daemon and a scheduler publish."""
    daemon = DaemonMetrics()
    daemon.watch_store(store)
    daemon.watch_uploads(open_server("tcp", store))
    daemon.watch_parents(lambda: 0)
    scheduler = SchedulerMetrics(Scheduler())
    return families(daemon.registry) | families(scheduler.registry)


def exposed(registered: dict[str, str]) -> set[str]:
    """The sample names Prometheus stores for those families."""
    return {
        name + suffix for name, kind in registered.items() for suffix in _SUFFIXES[kind]
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_every_dashboard_query_names_registered_metrics(
    registered: dict[str, str],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exposed(registered)

    expressions = [
        target["expr"] for panel in panels(dashboard) for target in panel["targets"]
    ]
    named = [set(_NAME.findall(expression)) for expression in expressions]

    assert expressions and all(named), "every query names a metric"
    assert set().union(*named) - known == set()


def test_the_dashboard_has_the_panels_operators_look_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in panels(dashboard)}

    assert {
        "Downloaded bytes by source",
        "Origin traffic",
        "P2P ratio (bytes from peers and seeds)",
        "Piece download latency",
        "Active tasks and peers",
        "Store usage",
        "Evictions",
        "Scheduler decisions",
        "Scheduler decision latency",
        "Back to source",
        "Failures by kind",
    } <= titles
    sources = {panel["datasource"]["uid"] for panel in panels(dashboard)}
    assert sources == {"${datasource}"}


def test_the_docs_name_every_metric_and_no_other(registered: dict[str, str]) -> None:
    documented = set(_NAME.findall(DOCS.read_text()))
    # Counters are documented as stored (with _total), histograms by family name.
    names = {
        name + ("_total" if kind == "counter" else "")
        for name, kind in registered.items()
    }

    assert names - documented == set()
    assert documented - names - exposed(registered) == set()
