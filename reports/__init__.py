"""Self-contained HTML reports from the store (embedded or InfluxDB, through telemetry.query).

    from telemetry.query import open_query
    from reports import build_report
    q = open_query(store_path="voicepulse.db")
    build_report(q, "report.html", start_ns=t0, end_ns=t1)
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["build_report", "load_summary_extras"]


def build_report(
    query,
    out_path: str | os.PathLike,
    *,
    start_ns: int,
    end_ns: int,
    targets: Sequence[str] | None = None,
    run_id: str | None = None,
    title: str | None = None,
    params: Mapping[str, object] | None = None,
    thresholds: Sequence[str] | None = None,
    bucket_s: int | None = None,
    judged: Sequence[Mapping] | None = None,
    warnings: Sequence[str] | None = None,
    capacity: Mapping | None = None,
) -> Path:
    """Write one self-contained HTML report of [start_ns, end_ns) to `out_path` and return its
    path. `query` is a `telemetry.query.Query` (`open_query(...)`). `run_id` narrows it to one
    load run; `params` are run parameters to show (secrets are hidden, URLs lose credentials and
    query strings); `thresholds` (e.g. "ttfa_ms.p95<800", "error_rate<0.01") feed the verdict;
    `bucket_s` fixes the time bucket of the plots over time (default: a round size giving at
    most 80 buckets, never finer than the interval the `latency` points were written at).
    `judged` are thresholds the run judged itself ({"expr", "ok", "actual"}, as in a load
    summary) and `warnings` lines for the verdict (e.g. the generator was overloaded); see
    `load_summary_extras` to take all three from a `voicepulse load` summary.
    `capacity` is a `voicepulse load --find-capacity` search's result (its `to_dict()`): the
    report then has a capacity section (reports/capacity.py).
    The file is written atomically (a temp file renamed into place)."""
    from .collect import collect
    from .html import render_html
    from .verdict import evaluate
    data = collect(query, start_ns=int(start_ns), end_ns=int(end_ns), targets=targets,
                   run_id=run_id, title=title, params=dict(params or {}),
                   thresholds=thresholds, bucket_s=bucket_s,
                   judged=[dict(j) for j in judged or ()], warnings=warnings)
    data.capacity = dict(capacity) if capacity else None
    verdict = evaluate(data, query)
    text = render_html(data, verdict, time.time_ns())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the report from others
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def load_summary_extras(summary) -> dict:
    """`params`, `judged` and `warnings` for build_report from a load run's summary
    (loadtests' LoadSummary or its to_dict(); read by attribute or key, nothing imported):

        s = run_load(plan)
        build_report(query, "run.html", start_ns=..., end_ns=..., run_id=s.run_id,
                     **load_summary_extras(s))
    """
    d = summary if isinstance(summary, Mapping) else summary.to_dict()
    c = d.get("counters") or {}
    level = d.get("level")
    params: dict[str, object] = {
        "load model": (f"open, {level:g} sessions/s ({d.get('arrivals', '')})"
                       if d.get("load_model") == "open" else f"closed, {level:g} users")
        if level is not None else d.get("load_model", ""),
        "duration": f"{d.get('duration_s', 0):.1f} s",
        "slots / workers": f"{d.get('slots', '')} / {d.get('workers', '')}",
        "arrivals": (f"due {c.get('arrivals_due', 0)}, started {c.get('arrivals_started', 0)}, "
                     f"late {c.get('late_starts', 0)}, no slot {c.get('no_slot', 0)}, "
                     f"dropped {c.get('dropped', 0)}"),
    }
    if d.get("achieved_rate") is not None:
        params["achieved rate"] = f"{d['achieved_rate']:.2f} sessions/s"
    warnings = []
    if d.get("overloaded"):
        warnings.append(d.get("overload_message") or
                        "the load generator was overloaded: its latencies may be distorted")
    if d.get("aborted"):
        warnings.append(f"the run was aborted: threshold {d['aborted']} failed")
    if d.get("complete") is False:
        warnings.append("not every worker sent its final report; counts may be short")
    judged = [{"expr": t.get("expr"), "ok": t.get("ok"), "actual": t.get("actual")}
              for t in d.get("thresholds") or ()]
    return {"params": params, "judged": judged, "warnings": warnings}
