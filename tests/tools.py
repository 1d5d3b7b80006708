"""The external tools the tests drive, and what a missing one means.

Locally (a plain `pytest`) a test whose tool is missing is skipped, the reason naming the tool
and how to install it. Under CI (`CI=true`) or `./scripts/test` (`VOICEPULSE_TEST_STRICT=1`) it
fails naming the tool instead: a half-installed machine must not pass the gate by skipping the
checks that need a real influxd, browser or speech engine.

Use `require_tool("influxd")` in a fixture or test, `needs_tool("espeak-ng")` as a marker
(checked in tests/conftest.py before the test runs), `require_module("jiwer")` for a Python
package of the `test` extra.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

#: How to install each tool (Debian package names; ./scripts/test installs them when missing).
INSTALL = {
    "influxd": "apt-get install -y influxdb",
    "victoria-metrics": "apt-get install -y victoria-metrics",
    "chromium": "apt-get install -y chromium",
    "espeak-ng": "apt-get install -y espeak-ng",
    "tmux": "apt-get install -y tmux",
}
#: Other names a tool goes by on PATH.
ALIASES = {"chromium": ("chromium-browser",)}


def strict() -> bool:
    """True under CI or ./scripts/test: a missing tool fails the test instead of skipping it."""
    return (os.environ.get("CI", "").strip().lower() in ("true", "1")
            or os.environ.get("VOICEPULSE_TEST_STRICT", "") == "1")


def missing(what: str, hint: str) -> NoReturn:
    """Skip (locally) or fail (strict) because `what` is not installed."""
    reason = f"{what} is not installed ({hint})"
    if strict():
        pytest.fail(f"missing tool: {reason}; CI and ./scripts/test need every tool",
                    pytrace=False)
    pytest.skip(reason)


def find_tool(name: str) -> str | None:
    for candidate in (name, *ALIASES.get(name, ())):
        path = shutil.which(candidate)
        if path:
            return path
    return None


def require_tool(name: str) -> str:
    """The tool's path on PATH; skips or fails (see `strict`) when it is not there."""
    path = find_tool(name)
    if path is None:
        missing(name, INSTALL.get(name, "see ./scripts/test"))
    return path


def require_module(name: str, package: str | None = None) -> ModuleType:
    """Import a Python package the `test` extra installs; skips or fails when it is absent."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"Python package {package or name}", "pip install -e '.[test]'")


def needs_tool(*names: str) -> pytest.MarkDecorator:
    """Mark a test (or a module's `pytestmark`) as driving these tools."""
    return pytest.mark.needs_tool(*names)
