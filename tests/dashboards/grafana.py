"""What Grafana does with our dashboards before a query reaches InfluxDB, done here so the queries
can be run against a real influxd: extract every query (panel targets, template variables,
annotations, alert rules), interpolate template variables the way Grafana's InfluxDB datasource
formats them, and expand its InfluxQL macros ($timeFilter, $__interval, $__interval_ms,
$__from/$__to).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"

#: Names Grafana provides itself (macros and per-series alias patterns), not template variables.
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "interval", "__from", "__to",
            "__timeFilter", "col", "m", "measurement", "__all", "__rate_interval",
            "__range", "__range_s", "__range_ms", "__dashboard", "__org", "__user"}
VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::[\w-]+)?\}|\[\[(\w+)\]\]")


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in dashboard_files()}


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def datasource_uid() -> str:
    doc = load_yaml(PROVISIONING / "datasources" / "influxdb.yaml")
    (ds,) = doc["datasources"]
    return ds["uid"]


def alert_rule_docs() -> list[dict]:
    return [load_yaml(p) for p in sorted((PROVISIONING / "alerting").glob("*.yaml"))]


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def used_variables(text: str) -> set[str]:
    names = set()
    for m in VAR_RE.finditer(text):
        name = m.group(1) or m.group(2) or m.group(3)
        if name.startswith("tag_") or name in BUILTINS:
            continue
        names.add(name)
    return names


# -- interpolation -----------------------------------------------------------------------------


def escape_regex(value: str) -> str:
    """Grafana's escapeRegex (lodash-like): backslash-escape regex metacharacters."""
    return re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda m: "\\" + m.group(0), value)


@dataclass
class Selection:
    """The value(s) chosen for one template variable, as the dashboard would hold them."""

    values: list[str]
    all: bool = False


def format_variable(var: dict, sel: Selection) -> str:
    """How the InfluxDB datasource renders a variable (interpolateQueryExpr): the custom
    all-value as is; for multi/include-all variables, regex-escaped values, several as (a|b);
    otherwise the raw value."""
    if sel.all and var.get("allValue") is not None:
        return var["allValue"]
    values = sel.values
    if not (var.get("multi") or var.get("includeAll")):
        return values[0]
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


INTERVALS = [  # Grafana's rangeutil.roundInterval thresholds (ms -> rounded ms)
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
]


def round_interval(ms: float) -> int:
    for limit, rounded in INTERVALS:
        if ms < limit:
            return rounded
    return 31536000000


def interval_text(ms: int) -> str:
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip().lstrip(">"))
    assert m, f"not a Grafana interval: {text!r}"
    return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}[m.group(2)]


def panel_interval_ms(from_ms: int, to_ms: int, min_interval: str | None, max_points: int = 1000) -> int:
    """$__interval: range / max data points (about the panel's width in pixels), rounded like
    Grafana, never below the panel's (or datasource's) minimum interval."""
    ms = round_interval((to_ms - from_ms) / max_points)
    if min_interval:
        ms = max(ms, parse_duration_ms(min_interval))
    return ms


@dataclass
class Context:
    from_ms: int
    to_ms: int
    variables: dict[str, dict] = field(default_factory=dict)  # name -> variable definition
    selections: dict[str, Selection] = field(default_factory=dict)
    min_interval: str | None = "10s"

    def expand(self, query: str, min_interval: str | None = None) -> str:
        iv = panel_interval_ms(self.from_ms, self.to_ms, min_interval or self.min_interval)
        macros = {
            "timeFilter": f"time >= {self.from_ms}ms and time <= {self.to_ms}ms",
            "__interval_ms": str(iv),
            "__interval": interval_text(iv),
            "interval": interval_text(iv),
            "__from": str(self.from_ms),
            "__to": str(self.to_ms),
        }

        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(2) or m.group(3)
            if name in macros:
                return macros[name]
            if name in self.selections:
                return format_variable(self.variables[name], self.selections[name])
            return m.group(0)  # $tag_x / $col are alias patterns, left alone

        return VAR_RE.sub(sub, query)


# -- extracting queries --------------------------------------------------------------------------


@dataclass
class PanelQuery:
    where: str  # "dashboard.json / panel title / refId A"
    query: str
    fmt: str
    columns: list[str]  # value columns the panel reads
    tags: list[str]  # tags the panel reads from GROUP BY (alias $tag_x, join/x fields)
    min_interval: str | None = None


def select_columns(query: str) -> list[str]:
    """The value columns a SELECT returns: its AS names, else the function name (InfluxQL's
    default column name), else the bare field names."""
    head = query.split(" FROM ", 1)[0]
    head = head[len("SELECT "):] if head.upper().startswith("SELECT ") else head
    aliases = re.findall(r'\bAS\s+"([^"]+)"', head, re.IGNORECASE)
    if aliases:
        return aliases
    fn = re.match(r"\s*[\d\s.*/+()-]*(\w+)\(", head)
    if fn:
        return [fn.group(1)]
    return re.findall(r'"([^"]+)"', head)


def group_by_tags(query: str) -> list[str]:
    """Tags of the outermost GROUP BY (the last one in the text)."""
    if "GROUP BY" not in query:
        return []
    tail = query.rsplit("GROUP BY", 1)[1].split(" fill(")[0]
    return re.findall(r'"(\w+)"', tail)


def panel_queries(name: str, dash: dict) -> list[PanelQuery]:
    out = []
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        reads_tags = set()
        for t in p.get("transformations", []):
            by = t.get("options", {}).get("byField")
            if by:
                reads_tags.add(by)
        x = p.get("options", {}).get("xField")
        if x:
            reads_tags.add(x)
        for t in p["targets"]:
            q = t["query"]
            alias_tags = set(re.findall(r"\$tag_(\w+)", t.get("alias", "")))
            tags = sorted(alias_tags | reads_tags)
            out.append(PanelQuery(f"{name} / {p['title']} / {t['refId']}", q,
                                  t.get("resultFormat", "time_series"), select_columns(q), tags,
                                  p.get("interval")))
    return out


def annotation_queries(name: str, dash: dict) -> list[PanelQuery]:
    out = []
    for a in dash["annotations"]["list"]:
        if a.get("builtIn"):
            continue
        q = a.get("target", {}).get("query") or a["query"]
        cols = [a["textColumn"], *a.get("tagsColumn", "").split(",")]
        out.append(PanelQuery(f"{name} / annotation {a['name']}", q, "table",
                              [c for c in cols if c], []))
    return out


def variable_queries(dash: dict) -> list[dict]:
    return [v for v in dash["templating"]["list"] if v["type"] == "query"]


def rule_queries() -> list[tuple[str, dict, list[dict]]]:
    """(rule title, rule, its datasource queries) for every provisioned alert rule."""
    out = []
    for doc in alert_rule_docs():
        for g in doc.get("groups", []):
            for r in g["rules"]:
                qs = [d for d in r["data"] if d["datasourceUid"] != "__expr__"]
                out.append((r["title"], r, qs))
    return out
