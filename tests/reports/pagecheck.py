"""What a rendered report page shows, read in the browser: plots, their traces and points, and
the per-target table's cells."""

from __future__ import annotations

from pathlib import Path

from .chrome import Chrome

#: per plot: traces and data points in plotly's data (gd.data) and SVG elements actually drawn
PLOTS_JS = r"""
(() => Array.from(document.querySelectorAll('div.plot[data-plot]')).map(gd => {
  const data = gd.data || [];
  const pts = data.reduce((n, t) => n + ((t.x || []).length), 0);
  return {
    id: gd.dataset.plot,
    rendered: !!gd._fullLayout && !!gd.querySelector('svg.main-svg'),
    traces: data.length,
    points: pts,
    names: data.map(t => t.name),
    svg_traces: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
    svg_points: gd.querySelectorAll('.scatterlayer .point, .barlayer .point').length,
    svg_lines: gd.querySelectorAll('.scatterlayer .js-line').length,
    xaxis_type: gd._fullLayout ? gd._fullLayout.xaxis.type : null,
  };
}))()
"""

TABLE_JS = r"""
(() => Array.from(document.querySelectorAll('#summary-table tbody tr')).map(tr => {
  const row = {target: tr.dataset.target, cells: {}};
  tr.querySelectorAll('td[data-key]').forEach(td => {
    row.cells[td.dataset.key] = {text: td.textContent.trim(), value: td.dataset.value};
  });
  return row;
}))()
"""

READY_JS = (
    "document.querySelectorAll('div.plot[data-plot]').length > 0 && "
    "Array.from(document.querySelectorAll('div.plot[data-plot]'))"
    ".every(d => d._fullLayout && d.querySelector('svg.main-svg'))"
)


def inspect(path: Path, screenshot: Path, timeout: float = 60.0) -> dict:
    with Chrome(timeout=timeout) as c:
        c.open(path.resolve().as_uri())
        c.wait_for(READY_JS)
        page = {
            "plots": c.evaluate(PLOTS_JS),
            "table": c.evaluate(TABLE_JS),
            "verdict": c.evaluate("document.getElementById('verdict').dataset.status"),
            "alerts_rows": c.evaluate("document.querySelectorAll('#alerts-table tbody tr').length"),
            "text": c.evaluate("document.body.innerText"),
        }
        page["screenshot"] = c.screenshot(screenshot)
        page["requests"] = c.requested_urls()
        page["console_errors"] = c.console_errors()
    return page
