"""`voicepulse load` itself under a pseudo-terminal (tmux) and piped: the live block, plain lines.

The progress renderer itself is tested with a script in test_progress.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import require_tool

from .test_progress import ESC, Tmux, _env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
]


def _config(tmp: Path, sim) -> Path:
    cfg = tmp / "voicepulse.yaml"
    cfg.write_text(
        "targets:\n"
        "  sim-fast:\n"
        f"    url: {sim.ws_url}/v1/realtime\n"
        "    model: sim-fast\n"
        "    api_key_env: SIM_API_KEY\n"
        "scenarios:\n"
        "  default:\n"
        "    turns: 1\n"
        "    utterance_s: 0.6\n"
        f"store: {tmp / 'load.db'}\n"
        f"outbox: {tmp / 'outbox'}\n")
    return cfg


def _argv(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "voicepulse", "load", "sim-fast", "--config", str(cfg),
            "--rate", "2", "--duration", "6s"]


def test_voicepulse_load_on_a_tty_shows_the_live_block(sim, tmp_path):
    import shlex

    require_tool("tmux")
    cmd = (f"cd {shlex.quote(str(tmp_path))} && SIM_API_KEY=x "
           f"{shlex.join(_argv(_config(tmp_path, sim)))}; echo END-OF-RUN; sleep 60")
    t = Tmux(tmp_path, cmd, _env())
    try:
        live = t.wait_for("running", timeout=60)
        assert live.count("voicepulse load") >= 1
        assert "ttfa" in live and "arrivals" in live
        final = t.wait_for("END-OF-RUN", timeout=90)
        assert final.count("running") == 0  # the block was redrawn in place, not appended
    finally:
        t.close()


def test_voicepulse_load_piped_prints_plain_lines(sim, tmp_path):
    r = subprocess.run(_argv(_config(tmp_path, sim)), cwd=str(tmp_path),
                       env=_env(SIM_API_KEY="x"), capture_output=True, text=True, timeout=100)
    out = r.stdout + r.stderr
    assert "[voicepulse load]" in out, out[-2000:]
    assert ESC not in out
