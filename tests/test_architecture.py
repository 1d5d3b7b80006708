"""The house is checked: import-linter's contracts (.importlinter, the arrows of the design page)
hold, and no two modules import each other, directly or round a longer loop.

Grimp (the graph under import-linter) reads every import statement, including those inside
functions (lazy imports) and under TYPE_CHECKING, so a cycle hidden in a function body counts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("probes", "telemetry", "loadtests", "scheduler", "simulator", "voicepulse", "reports")

#: Cycles known and being taken apart. This list may only shrink: the test fails on any cycle
#: not listed here, and on a listed one that no longer exists exactly as written (whoever breaks
#: or changes it deletes or corrects its entry).
KNOWN_CYCLES: set[frozenset[str]] = set()
# Broken in issue 14 and gone from this list: scheduler alerts->service, telemetry
# outbox/sinks/transports, simulator sessions<->server, voicepulse cli<->cmd_load/cmd_report,
# probes play<->session (one driver over the session's public surface) and script<->spec
# (parse_duration moved to probes/durations.py).


def import_cycles(graph: grimp.ImportGraph) -> set[frozenset[str]]:
    """Every set of modules that reach each other by imports (the graph's strongly connected
    components of more than one module, or a module importing itself)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in modules:  # Tarjan, iterative: no recursion limit on a long import chain
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, ()):
                        found.add(frozenset(component))
    return found


def describe(graph: grimp.ImportGraph, cycle: frozenset[str]) -> str:
    """The imports inside one cycle, with their lines: what to cut."""
    lines = []
    for a in sorted(cycle):
        for b in sorted(cycle):
            if b in graph.find_modules_directly_imported_by(a):
                where = ", ".join(str(d["line_number"]) for d in
                                  graph.get_import_details(importer=a, imported=b))
                lines.append(f"    {a} -> {b} (line {where})")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_import_linter_contracts_hold():
    """`lint-imports` on .importlinter: every contract kept (its report names a broken one and
    the import chain that breaks it)."""
    out = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache", "--no-logo", str(ROOT / ".importlinter")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", report)
    assert kept and int(kept[2]) == 0 and int(kept[1]) >= 7, report


def cycle_problems(found: set[frozenset[str]], known: set[frozenset[str]],
                   explain=lambda cycle: "") -> list[str]:
    """What is wrong with `found` against the known list: a cycle not listed, or a listed one
    that is gone (or changed)."""
    problems = [f"import cycle between {', '.join(sorted(c))}:\n{explain(c)}"
                for c in sorted(found - known, key=sorted)]
    problems += [f"KNOWN_CYCLES lists {', '.join(sorted(c))}, which is no longer a cycle (or "
                 "not this one): delete or correct its entry"
                 for c in sorted(known - found, key=sorted)]
    return problems


def test_no_import_cycle_between_modules(graph):
    problems = cycle_problems(import_cycles(graph), KNOWN_CYCLES, lambda c: describe(graph, c))
    assert not problems, "\n".join(problems)


def test_the_known_list_may_only_shrink():
    ab, cd = frozenset({"p.a", "p.b"}), frozenset({"p.c", "p.d"})
    assert cycle_problems({ab}, {ab}) == []
    (new,) = cycle_problems({ab, cd}, {ab})
    assert new.startswith("import cycle between p.c, p.d")
    (gone,) = cycle_problems(set(), {ab})
    assert "no longer a cycle" in gone
    assert len(cycle_problems({frozenset({"p.a", "p.b", "p.e"})}, {ab})) == 2  # it changed


def test_no_import_cycle_between_packages(graph):
    """The arrows between our top-level packages run one way (a cycle here would also break
    the layers contract; this says which packages)."""
    arrows = {(a, b) for a in PACKAGES for b in PACKAGES if a != b and
              graph.direct_import_exists(importer=a, imported=b, as_packages=True)}
    assert arrows, "the package graph is empty: grimp found no imports"
    both_ways = sorted((a, b) for a, b in arrows if (b, a) in arrows and a < b)
    assert not both_ways, f"packages import each other: {both_ways}"


def test_the_cycle_check_sees_lazy_imports(tmp_path, monkeypatch):
    """A cycle closed by an import inside a function body is found (and one via TYPE_CHECKING),
    while one-way imports are not reported."""
    pkg = tmp_path / "vp_archcheck"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from vp_archcheck import b\n")
    (pkg / "b.py").write_text(textwrap.dedent("""
        def late():
            from vp_archcheck import a  # the back-arrow, hidden in a function
            return a
    """))
    (pkg / "c.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from vp_archcheck import d
    """))
    (pkg / "d.py").write_text("import vp_archcheck.c\n")
    (pkg / "e.py").write_text("from vp_archcheck import a\n")  # one way: no cycle
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("vp_archcheck", None)
    found = import_cycles(grimp.build_graph("vp_archcheck", cache_dir=None))
    assert found == {frozenset({"vp_archcheck.a", "vp_archcheck.b"}),
                     frozenset({"vp_archcheck.c", "vp_archcheck.d"})}


#: Small modules named for what they hold (issue 14): no source file of these packages over this.
MAX_LINES = 600


@pytest.mark.parametrize("package", ["probes", "telemetry", "simulator", "scheduler"])
def test_no_source_file_over_the_line_limit(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these by what they hold (limit {MAX_LINES} lines): {long}"
