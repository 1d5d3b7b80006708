"""telemetry.schema is the one home of the stored names: every dashboard query, provisioned
Grafana alert rule, alert rule of the probe service (presets, defaults, the deploy/ config) and
query-layer read names only what it declares, and the writers write only what it declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from probes.results import TURN_METRICS, TurnResult
from telemetry import schema
from telemetry.points import build_point, session_points
from telemetry.query import Query
from tests.dashboards import grafana as g

from .helpers import make_result

ROOT = Path(__file__).resolve().parents[2]
LATENCY_NAMES = {m.name for m in schema.LATENCY_METRICS}


def undeclared(query: str) -> list[str]:
    """What an InfluxQL query names that telemetry.schema does not declare: a measurement; a
    quoted tag or field of its measurement (AS aliases and subquery columns excepted); a GROUP
    BY or SHOW TAG VALUES key that is not a tag; a `latency` metric tag value not in the metric
    set."""
    froms = re.findall(r'\bFROM\s+"([^"]+)"', query)
    bad = [f"measurement {m}" for m in froms if m not in schema.MEASUREMENTS]
    ms = [schema.MEASUREMENTS[m] for m in froms if m in schema.MEASUREMENTS]
    if not ms:
        return bad or [f"no measurement in {query!r}"]
    aliases = set(re.findall(r'\bAS\s+"([^"]+)"', query, re.IGNORECASE))
    for name in re.findall(r'"([^"]+)"', query):
        if name in aliases or name in froms:
            continue
        if not any(m.declares(name) for m in ms):
            bad.append(f"{'/'.join(m.name for m in ms)} has no {name}")
    keys = re.findall(r'WITH KEY\s*=\s*"([^"]+)"', query)
    if "GROUP BY" in query:
        keys += re.findall(r'"([^"]+)"', query.rsplit("GROUP BY", 1)[1].split(" fill(")[0])
    bad += [f"{k} is not a tag" for k in keys
            if k not in aliases and not any(k in m.tags for m in ms)]
    bad += [f"latency metric {v}" for v in re.findall(r'"metric"\s*=\s*\'([^\']+)\'', query)
            if v not in LATENCY_NAMES]
    return bad


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for name, dash in g.load_dashboards().items():
        out += [(q.where, q.query) for q in g.panel_queries(name, dash)]
        out += [(q.where, q.query) for q in g.annotation_queries(name, dash)]
        out += [(f"{name} / variable {v['name']}", v["query"]) for v in g.variable_queries(dash)]
    for title, _rule, qs in g.rule_queries():
        out += [(f"alert rule {title} / {q['refId']}", q["model"]["query"]) for q in qs]
    return out


QUERIES = dashboard_queries()


def test_there_are_queries_to_check():
    assert len(QUERIES) > 40
    assert any(w.startswith("alert rule") for w, _ in QUERIES)
    assert any("variable" in w for w, _ in QUERIES)


@pytest.mark.parametrize("where,query", QUERIES, ids=[w for w, _ in QUERIES])
def test_dashboard_and_grafana_rule_queries_name_only_declared_names(where, query):
    assert undeclared(query) == [], where


def test_the_check_finds_a_renamed_field_tag_metric_or_measurement():
    ok = ('SELECT max("p95") AS "ttfa p95" FROM "latency" WHERE "metric" = \'ttfa_ms\' '
          'GROUP BY time(10s), "target" fill(none)')
    assert undeclared(ok) == []
    assert undeclared(ok.replace('"p95"', '"p96"')) == ["latency has no p96"]
    assert undeclared(ok.replace("'ttfa_ms'", "'ttfa'")) == ["latency metric ttfa"]
    assert undeclared(ok.replace('"target" fill', '"count" fill')) == ["count is not a tag"]
    assert undeclared(ok.replace('"latency"', '"latencies"')) == ["measurement latencies"]
    assert undeclared('SHOW TAG VALUES FROM "turn" WITH KEY = "ttfa_ms"') == [
        "ttfa_ms is not a tag"]
    sub = ('SELECT mean("slow") FROM (SELECT ceil(("ttfa_ms" - 800) / 1e9) AS "slow" FROM "turn" '
           'GROUP BY "target") GROUP BY "target"')
    assert undeclared(sub) == []
    assert undeclared(sub.replace('"ttfa_ms"', '"ttfa"')) == ["turn has no ttfa"]


# -- the probe service's alert rules ---------------------------------------------------------


def _rule_metrics(cfg) -> list[tuple[str, str]]:
    rules = [*cfg.slos, *cfg.thresholds, *cfg.regressions]
    return [(r.name, r.metric) for r in rules
            if getattr(r, "kind", "latency") == "latency" and r.metric != "error_rate"]


def _service_configs():
    from scheduler.config import RegressionRule, Slo, ThresholdRule
    from scheduler.presets import demo_service_config
    from voicepulse.config import load_config

    yield "scheduler.presets.demo_service_config", demo_service_config(["sim-fast"], 60.0)
    yield "deploy/voicepulse.yaml", load_config(ROOT / "deploy" / "voicepulse.yaml").service

    class Defaults:  # the rule classes' default metrics
        slos = [Slo("slo", "t", "latency", 0.99)]
        thresholds = [ThresholdRule("th", "t", "ttfa_ms", "p95", ">", 1.0)]
        regressions = [RegressionRule("reg", "t")]

    yield "scheduler.config defaults", Defaults


@pytest.mark.parametrize("where,cfg", list(_service_configs()), ids=lambda x: x if isinstance(
    x, str) else "")
def test_service_alert_rules_read_declared_turn_fields(where, cfg):
    metrics = _rule_metrics(cfg)
    assert metrics, where  # each source really has latency rules to check
    for rule, metric in metrics:
        assert schema.TURN.declares(metric) and metric not in schema.TURN.tags, (where, rule)


# -- the query layer and the writers ----------------------------------------------------------


class Recording(Query):
    """A backend that answers nothing and remembers what was asked of it."""

    def __init__(self):
        self.asked: list[tuple[str, tuple, dict]] = []

    def _select(self, measurement, columns, start_ns, end_ns, filters):
        self.asked.append((measurement, tuple(columns), dict(filters)))
        return []

    def _field_names(self, measurement):
        return []


def test_the_query_layer_reads_only_declared_names():
    q = Recording()
    q.summary(), q.scenario_summary(), q.merged_series("ttfa_ms"), q.success_ratio()
    q.percentiles_over_time("send_lag_ms", 10), q.error_counts(), q.count_below("ttfa_ms", 1.0)
    q.alerts(), q.loadgen(), q.turn_values("ttfa_ms")
    assert {m for m, _, _ in q.asked} == {"turn", "session", "latency", "alert", "loadgen"}
    for measurement, columns, filters in q.asked:
        m = schema.MEASUREMENTS[measurement]
        assert [c for c in (*columns, *filters) if not m.declares(c)] == [], measurement


def test_an_unknown_scope_key_is_refused():
    with pytest.raises(TypeError, match="target"):
        Recording().summary(target="typo")  # type: ignore[call-arg]


def test_send_lag_reads_its_old_probe_name_too():
    q = Recording()
    q.merged_series("send_lag_ms")
    assert q.asked[-1][2]["metric"] == ["send_lag_ms", "send_lag_p99_ms"]
    q.merged_series("ttfa_ms")
    assert q.asked[-1][2]["metric"] == ["ttfa_ms"]


def test_writers_write_only_declared_names_and_builders_refuse_others():
    r = make_result(1, run_id="r1", agent="eu")
    r.turns[0].checks = {"reply_stopped": True}
    for p in session_points(r):
        m = schema.MEASUREMENTS[p.measurement]
        assert set(p.tags) <= set(m.tags)
        assert all(m.declares(f) for f in p.fields)
        assert all(isinstance(p.fields[f], int) for f in p.fields if m.is_int(f))
    with pytest.raises(ValueError, match="ttfa"):
        build_point("turn", {}, {"ttfa": 1.0}, 0)
    with pytest.raises(ValueError, match="run_id"):
        build_point("turn", {"run_id": "x"}, {"turn_index": 1}, 0)  # a field, never a tag


def test_turn_fields_and_latency_sources_come_from_probes_results():
    assert schema.TURN.fields[: len(TURN_METRICS)] == TURN_METRICS
    assert set(TurnResult(0).metrics()) <= set(TURN_METRICS)
    for m in schema.LATENCY_METRICS:
        if m.of == "turn":
            assert m.source in TURN_METRICS, m
    assert len(LATENCY_NAMES) == len(schema.LATENCY_METRICS)  # one name per quantity
