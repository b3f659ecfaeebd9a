"""The operations files (docs/ops/) and the metrics reference (docs/operations.md) against what a
running service and a codec link end export: every metric an alert or a dashboard panel uses
exists, and the reference lists every exported family."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from service_client import local_service_config

from stream.paths.codec.link import LinkStats, _LinkCollector
from stream.service import Service

DOCS = Path(__file__).resolve().parents[2] / "docs"
_METRIC = re.compile(r"\bsigstream_[a-z_]+")


def _families(exposition: str) -> dict[str, str]:
    """Family name -> type, from the ``# TYPE`` lines of a scrape."""
    return {m.group(1): m.group(2)
            for m in re.finditer(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE)}


def _series(families: dict[str, str]) -> set[str]:
    """The series names a query can use: a histogram's ``_bucket``, ``_sum`` and ``_count``."""
    names = set()
    for name, kind in families.items():
        names |= ({f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram"
                  else {name})
    return names


@pytest.fixture(scope="module")
def exported(weights: Path) -> dict[str, str]:
    """Every family of a running service's /metrics and of both codec link ends."""
    from prometheus_client import CollectorRegistry, generate_latest

    config = local_service_config(weights, metrics_port=0, metrics_addr="127.0.0.1")
    with Service(config) as service:
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            families = _families(response.read().decode())
    for role in ("tx", "rx"):
        registry = CollectorRegistry()
        registry.register(_LinkCollector(LinkStats(role), threading.Lock()))
        families |= _families(generate_latest(registry).decode())
    return families


def _queries() -> dict[str, str]:
    """Where each query of the ops files comes from -> the query."""
    rules = yaml.safe_load((DOCS / "ops" / "alerts.yml").read_text())
    out = {f"alert {r['alert']}": r["expr"] for g in rules["groups"] for r in g["rules"]}
    dashboard = json.loads((DOCS / "ops" / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return out


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(exported) -> None:
    known = _series(exported)
    queries = _queries()
    assert len(queries) >= 15
    unknown = {where: sorted(set(_METRIC.findall(expr)) - known)
               for where, expr in queries.items()}
    assert not {where: names for where, names in unknown.items() if names}


def test_the_reference_lists_every_exported_family(exported) -> None:
    table = (DOCS / "operations.md").read_text()
    listed = set(re.findall(r"^\| `(sigstream_[a-z_]+)` \| (\w+) \|", table, re.MULTILINE))
    assert listed == set(exported.items())
