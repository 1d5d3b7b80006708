"""The README stays a landing page, and no relative link in it or in docs/ points at nothing.

`mkdocs build --strict` checks the links between docs pages (and their anchors); this test also
covers README.md, which lives outside the docs site, and runs without mkdocs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FRESH_MACHINE = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && voicepulse demo",
    "./scripts/test",
)

#: [text](target) outside code; images too. The target ends at whitespace or ")".
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")


def relative_links(text: str) -> list[str]:
    """Link targets that are paths in this repository: no scheme, no pure #anchor, no absolute
    path. Fenced code blocks and inline code are skipped."""
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in _LINK.findall(_CODE_SPAN.sub("", line)):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
                continue
            out.append(target)
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path.startswith("/") or not (page.parent / path).exists():
            broken.append(target)
    return broken


def test_readme_is_a_landing_page():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"
    for command in FRESH_MACHINE:
        assert command in text, f"README.md lost the fresh-machine command {command!r}"
    assert relative_links(text), "README.md links into docs/ nowhere"


@pytest.mark.parametrize(
    "page",
    [README, *sorted(DOCS.glob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_every_docs_page_is_checked():
    pages = sorted(DOCS.glob("*.md"))
    assert (DOCS / "index.md") in pages and (DOCS / "design.md") in pages


#: The parsers of voicepulse.yaml and scenario files: every key they read has a row in the
#: configuration reference.
CONFIG_PARSERS = ("voicepulse/config.py", "voicepulse/config_service.py",
                  "voicepulse/config_load.py")
_KEY_READ = re.compile(
    r"\.(?:str|url|num|int|bool|duration|percent|env_name|section|list|sections|raw|has)"
    r"\(\"([a-z_]+)\"")


def config_keys() -> set[str]:
    return {k for f in CONFIG_PARSERS for k in _KEY_READ.findall((ROOT / f).read_text())}


def test_configuration_reference_names_every_key():
    keys = config_keys()
    assert len(keys) > 50, "the key pattern no longer matches the config parsers"
    doc = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(k for k in keys if not re.search(rf"`(?:[a-z_]+\.)?{k}`", doc))
    assert missing == [], f"docs/configuration.md does not describe: {missing}"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def test_metric_table_and_storage_schema_name_what_the_code_declares():
    """Every turn metric of probes/results.py is in the metric table (docs/metrics.md), and every
    measurement, tag and field telemetry/schema.py declares is in the design page's schema."""
    from probes.results import TURN_METRICS
    from telemetry import schema

    metrics = (DOCS / "metrics.md").read_text(encoding="utf-8")
    assert [m for m in TURN_METRICS if f"`{m}`" not in metrics] == []
    storage = _section((DOCS / "design.md").read_text(encoding="utf-8"), "## The storage schema")
    missing = []
    for m in schema.MEASUREMENTS.values():
        for name in (m.name, *m.tags, *m.fields):
            if f"`{name}`" not in storage and not (m.name == "turn" and name in TURN_METRICS):
                missing.append(f"{m.name}.{name}")
    assert missing == [], f"docs/design.md's storage schema does not name: {missing}"


def test_link_checker_sees_a_broken_link(tmp_path):
    """The checker itself can fail: a missing file is reported, code and URLs are not links."""
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# there\n")
    page.write_text(
        "[ok](there.md#a) [gone](missing.md) [web](https://example.com/x) [anchor](#top)\n"
        "`[code](nope.md)`\n```\n[fenced](nope2.md)\n```\n[abs](/etc/passwd)\n"
    )
    assert broken_links(page) == ["missing.md", "/etc/passwd"]
