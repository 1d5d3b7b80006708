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

__all__ = ["build_report"]


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
) -> Path:
    """Write one self-contained HTML report of [start_ns, end_ns) to `out_path` and return its
    path. `query` is a `telemetry.query.Query` (`open_query(...)`). `run_id` narrows it to one
    load run; `params` are run parameters to show (secrets are hidden, URLs lose credentials and
    query strings); `thresholds` (e.g. "ttfa_ms.p95<800", "error_rate<0.01") feed the verdict;
    `bucket_s` fixes the time bucket of the plots over time (default: a round size giving at
    most 80 buckets, never finer than the interval the `latency` points were written at).
    The file is written atomically (a temp file renamed into place)."""
    from .collect import collect
    from .html import render_html
    from .verdict import evaluate
    data = collect(query, start_ns=int(start_ns), end_ns=int(end_ns), targets=targets,
                   run_id=run_id, title=title, params=dict(params or {}),
                   thresholds=thresholds, bucket_s=bucket_s)
    verdict = evaluate(data, query)
    text = render_html(data, verdict, time.time_ns())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
