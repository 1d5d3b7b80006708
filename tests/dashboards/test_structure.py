"""Static checks of the dashboards, provisioning files and alert rules: the things Grafana would
reject or silently break on (duplicate uids, overlapping panels, an undefined variable, a
datasource referenced by name) without a Grafana to load them into."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

from tests.dashboards import grafana as g

DASHES = g.load_dashboards()
DS_UID = g.datasource_uid()
BUILTIN_DS = {"-- Grafana --", "__expr__"}


def _generator():
    spec = importlib.util.spec_from_file_location("vp_dash_generate", g.DASHBOARDS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_three_dashboards_exist():
    assert set(DASHES) == {"availability.json", "load-run.json", "comparison.json"}


def test_committed_files_are_the_generator_output():
    gen = _generator()
    for name, text in gen.render().items():
        assert (g.DASHBOARDS / name).read_text() == text, f"{name} is stale: run dashboards/generate.py"
    assert (g.DASHBOARDS / gen.RULES_FILE).read_text() == gen.render_rules()


def test_uids_fixed_and_unique():
    uids = [d["uid"] for d in DASHES.values()]
    assert all(isinstance(u, str) and 0 < len(u) <= 40 for u in uids)
    assert len(set(uids)) == len(uids)
    rule_uids = [r["uid"] for _, r, _ in g.rule_queries()]
    assert len(set(rule_uids)) == len(rule_uids) and all(len(u) <= 40 for u in rule_uids)
    for d in DASHES.values():
        assert "id" not in d or d["id"] is None  # a fixed id would clash across Grafana instances


def _datasources(obj):
    """Every `datasource` value anywhere in a document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "datasource":
                yield v
            else:
                yield from _datasources(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _datasources(v)


@pytest.mark.parametrize("name", sorted(DASHES))
def test_datasource_referenced_by_uid(name):
    refs = list(_datasources(DASHES[name]))
    assert refs
    for ref in refs:
        assert isinstance(ref, dict), f"{name}: datasource by name ({ref!r}), not by uid"
        assert ref["uid"] == DS_UID or ref["uid"] in BUILTIN_DS, ref


def test_alert_rules_reference_the_datasource_by_uid():
    for title, rule, queries in g.rule_queries():
        assert queries, title
        for q in queries:
            assert q["datasourceUid"] == DS_UID, title
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs, title


@pytest.mark.parametrize("name", sorted(DASHES))
def test_panel_ids_unique(name):
    ids = [p["id"] for p in g.all_panels(DASHES[name])]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", sorted(DASHES))
def test_grid_rectangles_inside_24_columns_and_not_overlapping(name):
    rects = []
    for p in g.all_panels(DASHES[name]):
        r = p["gridPos"]
        assert r["w"] > 0 and r["h"] > 0 and r["x"] >= 0 and r["y"] >= 0
        assert r["x"] + r["w"] <= 24, p["title"]
        rects.append((p["title"], r))
    for (ta, a), (tb, b) in itertools.combinations(rects, 2):
        overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                   and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
        assert not overlap, f"{name}: {ta!r} overlaps {tb!r}"


def test_grid_overlap_check_catches_an_overlap():
    """The overlap predicate above is not vacuous: a shifted copy of a panel overlaps it."""
    a = {"x": 0, "y": 0, "w": 12, "h": 8}
    b = {"x": 11, "y": 7, "w": 12, "h": 8}
    assert a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"]


@pytest.mark.parametrize("name", sorted(DASHES))
def test_every_template_variable_used_is_defined(name):
    d = DASHES[name]
    defined = {v["name"] for v in d["templating"]["list"]}
    texts = [p.get("title", "") + " " + p.get("description", "") for p in g.all_panels(d)]
    texts += [t["query"] + " " + t.get("alias", "") for p in g.all_panels(d) for t in p.get("targets", [])]
    texts += [v.get("query", "") for v in d["templating"]["list"]]
    texts += [a.get("query", "") for a in d["annotations"]["list"]]
    used = set().union(*(g.used_variables(t) for t in texts))
    assert used, "no variables used at all"
    assert used <= defined, f"{name}: used but not defined: {sorted(used - defined)}"
    # and each defined variable is used somewhere (no dead pickers)
    assert defined <= used, f"{name}: defined but unused: {sorted(defined - used)}"


def test_used_variables_sees_every_syntax():
    assert g.used_variables("$a ${b} ${c:regex} [[d]] $timeFilter $tag_target $__interval") == {
        "a", "b", "c", "d"}


@pytest.mark.parametrize("name", sorted(DASHES))
def test_queries_are_raw_influxql_with_a_time_filter(name):
    for p in g.all_panels(DASHES[name]):
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        assert p.get("description"), f"{p['title']}: say what to read from it"
        for t in p["targets"]:
            assert t["rawQuery"] is True
            assert t["query"].startswith("SELECT ") and "$timeFilter" in t["query"], t["query"]
            # percentiles are never averaged (docs/design.md): no mean()/median() of a stored pXX
            assert "mean(\"p" not in t["query"] and "median(\"p" not in t["query"], t["query"]


def test_required_variables_per_dashboard():
    names = {n: {v["name"] for v in d["templating"]["list"]} for n, d in DASHES.items()}
    assert {"provider", "target", "model", "kind", "agent"} <= names["availability.json"]
    assert {"run_id", "target"} <= names["load-run.json"]
    assert {"provider", "target", "model", "kind", "agent"} <= names["comparison.json"]


@pytest.mark.parametrize("name", sorted(DASHES))
def test_alert_annotations_come_from_the_alert_measurement(name):
    annos = [a for a in DASHES[name]["annotations"]["list"] if not a.get("builtIn")]
    assert any('FROM "alert"' in a["query"] for a in annos)


def test_provisioning_files():
    ds = g.load_yaml(g.PROVISIONING / "datasources" / "influxdb.yaml")
    assert ds["apiVersion"] == 1
    (d,) = ds["datasources"]
    assert d["type"] == "influxdb" and d["jsonData"]["version"] == "InfluxQL"
    assert d["jsonData"]["httpHeaderName1"] == "Authorization"
    assert d["secureJsonData"]["httpHeaderValue1"].startswith("Token ${")  # from the environment
    text = (g.PROVISIONING / "datasources" / "influxdb.yaml").read_text()
    assert "InfluxDB 1.x" in text and "InfluxDB 3.x" in text  # the documented variants
    prov = g.load_yaml(g.PROVISIONING / "dashboards" / "voicepulse.yaml")
    (p,) = prov["providers"]
    assert p["type"] == "file" and p["options"]["path"] == "/var/lib/grafana/dashboards"
    cp = g.load_yaml(g.PROVISIONING / "alerting" / "contact-points.yaml")
    (rcv,) = cp["contactPoints"][0]["receivers"]
    assert rcv["settings"]["url"].startswith("${")  # the webhook URL is a secret from env
    assert cp["policies"][0]["receiver"] == cp["contactPoints"][0]["name"]


def test_alert_rules_mirror_the_default_slos():
    titles = [t for t, _, _ in g.rule_queries()]
    for slo in ("availability", "ttfa"):
        for factor in ("14.4x", "6x", "1x"):
            assert any(slo in t and factor in t for t in titles), (slo, factor)
    windows = {r["uid"]: [q["relativeTimeRange"]["from"] for q in qs] for _, r, qs in g.rule_queries()}
    assert windows["vp-availability-burn-fast"] == [3600, 300]
    assert windows["vp-availability-burn-slow"] == [21600, 1800]
    assert windows["vp-availability-burn-ticket"] == [259200, 21600]
