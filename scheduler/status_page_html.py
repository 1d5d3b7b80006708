"""The status page's one HTML file: inline CSS and vanilla JS, the page document inlined as JSON.

Nothing refers to another host (the CSP says so too: only `page.json` on the same origin may be
fetched), so the page works offline and from static hosting. The script draws every card from
the document with textContent (never innerHTML), so a target name cannot inject markup; served
live, it fetches `page.json` every `refresh_s` and swaps the cards in place (no reload).
Exact values sit in `data-v` attributes, for tests and for copy-paste.
"""

TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:">
<title>{{ title }}</title>
<style>
:root { --bg:#f6f7f9; --fg:#1d2330; --muted:#5d6675; --card:#fff; --line:#e2e5ea;
  --ok:#2e9e5b; --degraded:#e0a100; --down:#d64545; --none:#c9ced6; }
@media (prefers-color-scheme: dark) { :root { --bg:#14171c; --fg:#e6e9ee; --muted:#9aa3b1;
  --card:#1d2128; --line:#2c323c; --none:#3a414c; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width:1200px; margin:0 auto; padding:16px; }
header { display:flex; flex-wrap:wrap; align-items:baseline; gap:4px 16px; margin-bottom:12px; }
h1 { font-size:1.35rem; margin:0; }
.muted { color:var(--muted); font-size:.85rem; }
#cards { display:grid; gap:12px; grid-template-columns:repeat(auto-fill, minmax(min(100%, 360px), 1fr)); }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px;
  min-width:0; overflow-wrap:anywhere; }
.top { display:flex; justify-content:space-between; gap:8px; align-items:flex-start; }
.name { font-weight:600; font-size:1.05rem; }
.pill { flex:none; font-size:.75rem; font-weight:600; padding:2px 8px; border-radius:99px; color:#fff; }
.pill.ok { background:var(--ok); } .pill.degraded { background:var(--degraded); }
.pill.down { background:var(--down); } .pill.none { background:var(--none); color:var(--fg); }
.grid { display:grid; grid-template-columns:auto 1fr 1fr; gap:2px 10px; margin:10px 0 6px;
  font-variant-numeric:tabular-nums; }
.grid .h { color:var(--muted); font-size:.8rem; }
.row { margin:4px 0; }
.bad { color:var(--down); font-weight:600; }
.ups { display:grid; grid-template-columns:repeat(3, 1fr); gap:0 10px; margin-top:8px;
  font-variant-numeric:tabular-nums; }
.ups .h { color:var(--muted); font-size:.8rem; }
.bar { display:flex; gap:1px; height:26px; margin:8px 0 2px; }
.bar span { flex:1 1 0; min-width:0; border-radius:2px; background:var(--none); }
.bar span.ok { background:var(--ok); } .bar span.degraded { background:var(--degraded); }
.bar span.down { background:var(--down); }
.barlabel { display:flex; justify-content:space-between; }
.alerts { margin:8px 0 0; padding:6px 8px; border-radius:6px; background:rgba(214,69,69,.1); }
#service { margin-top:20px; }
#service h2 { font-size:1.1rem; margin:0 0 4px; }
.jobs { list-style:none; margin:8px 0 0; padding:0; font-size:.9rem; }
.jobs li { padding:6px 0; border-bottom:1px solid var(--line); overflow-wrap:anywhere; }
</style>
</head>
<body>
<main>
<header><h1 id="title"></h1><span class="muted" id="stamp"></span></header>
<noscript>This page draws its cards with JavaScript.</noscript>
<div id="cards"></div>
<section id="service"></section>
<p class="muted" id="rule"></p>
</main>
<script type="application/json" id="page-data">{{ data }}</script>
<script>
(function () {
  "use strict";
  var doc = JSON.parse(document.getElementById("page-data").textContent);
  var refreshes = 0, failures = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function num(tag, key, v, text) {  // a number shown rounded, its exact value in data-v
    var e = el(tag, "", text);
    e.dataset.k = key;
    e.dataset.v = v === null || v === undefined ? "" : String(v);
    return e;
  }
  function ms(v) { return v === null || v === undefined ? "\u2013" : v.toFixed(1) + " ms"; }
  function pct(u) { return !u || u.ratio === null ? "\u2013" : (100 * u.ratio).toFixed(2) + " %"; }
  function utc(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, " UTC") : "\u2013"; }
  function hm(t_ns) {  // to the second when an interval is under a minute
    return new Date(t_ns / 1e6).toISOString().slice(11, doc.bar.span_s / doc.bar.intervals < 60 ? 19 : 16);
  }
  function ago(iso) {
    if (!iso) return "";
    var s = (Date.parse(doc.window.end) - Date.parse(iso)) / 1000;
    if (s < 90) return Math.max(0, Math.round(s)) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function state(c) {
    if (!c.runs) return ["none", "no runs yet"];
    if (!c.runs_failed) return ["ok", "operational"];
    return 2 * c.runs_failed > c.runs ? ["down", "down"] : ["degraded", "degraded"];
  }

  function card(c) {
    var root = el("section", "card");
    root.dataset.target = c.target;
    var top = el("div", "top"), who = el("div");
    who.appendChild(el("div", "name", c.target));
    who.appendChild(el("div", "muted", [c.provider, c.model].filter(Boolean).join(" \u00b7 ") || "\u2013"));
    var st = state(c), pill = el("span", "pill " + st[0], st[1]);
    pill.dataset.state = st[0];
    top.appendChild(who); top.appendChild(pill); root.appendChild(top);

    var g = el("div", "grid");
    g.appendChild(el("span", "h", "TTFA"));
    g.appendChild(el("span", "h", "last " + c.runs + " run" + (c.runs === 1 ? "" : "s")));
    g.appendChild(el("span", "h", "24 h"));
    [["P50", "50"], ["P95", "95"]].forEach(function (p) {
      g.appendChild(el("span", "", p[0]));
      g.appendChild(num("span", "runs_ttfa_p" + p[1] + "_ms", c["runs_ttfa_p" + p[1] + "_ms"],
                        ms(c["runs_ttfa_p" + p[1] + "_ms"])));
      g.appendChild(num("span", "window_ttfa_p" + p[1] + "_ms", c["window_ttfa_p" + p[1] + "_ms"],
                        ms(c["window_ttfa_p" + p[1] + "_ms"])));
    });
    root.appendChild(g);

    var errs = el("div", "row");
    errs.appendChild(el("span", "muted", "Errors "));
    var x = num("span", "runs_failed", c.runs_failed, c.runs_failed + " / " + c.runs + " runs");
    x.dataset.runs = String(c.runs);
    if (c.runs_failed) x.className = "bad";
    errs.appendChild(x);
    var classes = Object.keys(c.runs_errors).map(function (k) { return k + " \u00d7" + c.runs_errors[k]; });
    if (classes.length) errs.appendChild(num("span", "runs_errors", JSON.stringify(c.runs_errors),
                                             " (" + classes.join(", ") + ")"));
    root.appendChild(errs);

    var last = el("div", "row");
    last.appendChild(el("span", "muted", "Last test "));
    last.appendChild(num("span", "last_at", c.last_at, utc(c.last_at)));
    if (c.last_at) {
      last.appendChild(document.createTextNode(" \u00b7 "));
      var out = num("span", "last_outcome", c.last_outcome, c.last_outcome);
      if (c.last_outcome !== "ok") out.className = "bad";
      last.appendChild(out);
      last.appendChild(el("span", "muted", " (" + ago(c.last_at) + ")"));
    }
    root.appendChild(last);

    var ups = el("div", "ups"), keys = Object.keys(c.uptime);
    keys.forEach(function (k) { ups.appendChild(el("span", "h", "uptime " + k)); });
    keys.forEach(function (k) {
      var v = num("strong", "uptime_" + k, c.uptime[k].ratio, pct(c.uptime[k]));
      v.dataset.runs = String(c.uptime[k].runs);
      ups.appendChild(v);
    });
    root.appendChild(ups);

    var bar = el("div", "bar");
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", "uptime over the last " + doc.bar.intervals + " intervals");
    c.bar.forEach(function (i) {
      var s = el("span", i.state);
      s.dataset.state = i.state;
      s.title = hm(i.start_ns) + "\u2013" + hm(i.end_ns) + " UTC: " + (i.runs
        ? i.runs + " run" + (i.runs === 1 ? "" : "s") + ", " + (i.runs - i.ok) + " failed"
        : "no runs");
      bar.appendChild(s);
    });
    root.appendChild(bar);
    var bl = el("div", "barlabel muted");
    bl.appendChild(el("span", "", span(doc.bar.span_s) + " ago"));
    bl.appendChild(el("span", "", "now"));
    root.appendChild(bl);

    if (c.alerts.length) {
      var a = el("div", "alerts");
      a.dataset.k = "alerts";
      a.appendChild(el("strong", "", "Firing: "));
      a.appendChild(document.createTextNode(c.alerts.map(function (x) {
        return x.rule + " (" + x.severity + ")";
      }).join(", ")));
      root.appendChild(a);
    }
    return root;
  }
  function span(s) {
    return s % 86400 === 0 && s > 172800 ? s / 86400 + " d" : s % 3600 === 0 ? s / 3600 + " h"
      : s % 60 === 0 ? s / 60 + " min" : s + " s";
  }

  function service(s) {
    var box = document.getElementById("service");
    box.replaceChildren();
    if (!s) return;
    box.appendChild(el("h2", "", "Service"));
    var facts = ["agent " + s.agent];
    if (s.outbox && s.outbox.pending !== undefined) facts.push("outbox pending " + s.outbox.pending);
    if (s.write_errors !== undefined) facts.push("write errors " + s.write_errors);
    if (s.notifications_failed !== undefined) facts.push("notifications failed " + s.notifications_failed);
    box.appendChild(el("p", "muted", facts.join(" \u00b7 ")));
    var list = el("ul", "jobs");
    s.jobs.forEach(function (j) {
      var li = el("li");
      li.appendChild(el("strong", "", j.target));
      var bits = [j.scenario, j.schedule];
      if (j.next_run) bits.push("next " + new Date(j.next_run * 1000).toISOString().slice(11, 19) + " UTC");
      if (j.skips !== null && j.skips !== undefined) bits.push(j.skips + " skipped");
      li.appendChild(document.createTextNode(" \u00b7 " + bits.join(" \u00b7 ")));
      if (s.endpoints[j.target]) li.appendChild(el("div", "muted", s.endpoints[j.target]));
      list.appendChild(li);
    });
    box.appendChild(list);
  }

  function render() {
    document.title = doc.title;
    document.getElementById("title").textContent = doc.title;
    var b = document.body.dataset;
    b.end = doc.window.end; b.settled = doc.settled ? "1" : "0"; b.refreshes = String(refreshes);
    document.getElementById("stamp").textContent = (doc.live ? "updated " : "generated ") +
      utc(doc.window.end) + (failures ? " \u00b7 stale: the service did not answer" : "") +
      (doc.store_error ? " \u00b7 stale: " + doc.store_error : "");
    var frag = document.createDocumentFragment();
    doc.targets.forEach(function (c) { frag.appendChild(card(c)); });
    if (!doc.targets.length) frag.appendChild(el("p", "muted", "No probe results yet."));
    document.getElementById("cards").replaceChildren(frag);
    service(doc.service);
    document.getElementById("rule").textContent = "Percentiles: " + doc.percentile_rule +
      ". TTFA: time to first audio. Uptime: runs that succeeded / runs.";
  }

  function tick() {
    fetch("page.json", {cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (d) { doc = d; refreshes += 1; failures = 0; render(); },
            function () { failures += 1; render(); })
      .then(function () { setTimeout(tick, 1000 * doc.refresh_s); });
  }

  render();
  if (doc.live && /^https?:$/.test(location.protocol)) setTimeout(tick, 1000 * doc.refresh_s);
})();
</script>
</body>
</html>
"""
