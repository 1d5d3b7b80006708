"""Every place that offers a provider list offers the same one (issue 15: openai-live, GPT-Live):
probes.spec.PROVIDERS, what config accepts, `voicepulse probe --provider`, the engine's
dialects, and the configuration docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from probes.dialects import dialect_for
from probes.spec import PROVIDERS, Target
from voicepulse.cli import main
from voicepulse.config import parse_config
from voicepulse.configkit import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_probe_help_offers_exactly_the_providers():
    out = CliRunner().invoke(main, ["probe", "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    (offered,) = re.findall(r"--provider \[([\w|-]+)\]", out.output)
    assert offered.split("|") == list(PROVIDERS)
    assert "openai-live is GPT-Live" in out.output


def test_probe_refuses_a_provider_outside_the_list():
    out = CliRunner().invoke(main, ["probe", "--url", "ws://127.0.0.1:9/v1/live/sessions",
                                    "--model", "m", "--provider", "gpt-live"])
    assert out.exit_code == 2
    assert "'gpt-live' is not one of" in out.output and "'openai-live'" in out.output


def test_config_accepts_exactly_the_providers():
    for p in PROVIDERS:
        cfg = parse_config({"targets": {"t": {"provider": p, "url": "ws://127.0.0.1:9/x",
                                              "model": "m"}}}, "vp.yaml")
        assert cfg.targets["t"].provider == p
    with pytest.raises(ConfigError) as ei:
        parse_config({"targets": {"t": {"provider": "gpt-live", "url": "ws://x/y", "model": "m"}}},
                     "vp.yaml")
    assert ei.value.key == "targets.t.provider" and "openai-live" in ei.value.message


def test_every_provider_has_a_dialect():
    for p in PROVIDERS:
        d = dialect_for(Target("t", "ws://127.0.0.1:9/x", "m", provider=p))
        assert d is not None


def test_the_configuration_docs_list_the_same_providers():
    text = (DOCS / "configuration.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| `provider` |")]
    cells = re.split(r"(?<!\\)\|", row)  # the values are separated by escaped pipes
    assert re.findall(r"`([\w-]+)`", cells[2]) == list(PROVIDERS)
    (comment,) = re.findall(r"provider: openai +# (.+)", text)
    assert [p.strip() for p in comment.split("|")] == list(PROVIDERS)
    assert "--provider openai-live" in (DOCS / "gpt-live.md").read_text()
