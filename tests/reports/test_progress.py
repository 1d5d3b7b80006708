"""voicepulse.progress on a real pseudo-terminal (tmux) and through a pipe."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tools import require_tool
from voicepulse.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("progress_script.py")
ESC = "\x1b["


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TMUX")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Tmux:
    """A private tmux server (own socket) running one command in a 120x30 pane."""

    def __init__(self, tmp: Path, command: str, env: dict[str, str]):
        self.sock = str(tmp / "tmux.sock")
        self.env = env
        self._tmux("new-session", "-d", "-x", "120", "-y", "30", "-s", "t", command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", *args], env=self.env,
                              capture_output=True, text=True, timeout=10, check=True).stdout

    def screen(self, escapes: bool = False) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t", *(["-e"] if escapes else []))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never showed on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux_run(tmp_path):
    require_tool("tmux")
    sessions = []

    def run(steps: int, **env: str) -> Tmux:
        # `sleep` keeps the pane (and its last screen) alive after the script ends
        cmd = f"{sys.executable} {SCRIPT} {steps}; sleep 60"
        t = Tmux(tmp_path, cmd, _env(**env))
        sessions.append(t)
        return t

    yield run
    for t in sessions:
        t.close()


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_tty_redraws_one_block_in_place(tmux_run):
    t = tmux_run(30)
    live = t.wait_for("started 5 ")  # mid-run: the block is live
    assert "running" in live
    assert live.count("voicepulse load") == 1, live
    final = t.wait_for("END 30")
    # 30 updates, one block: every figure line is on the screen exactly once
    assert final.count("voicepulse load") == 1, final
    assert final.count("ttfa      p50") == 1, final
    assert "done" in final and "running" not in final
    assert "started 30" in final and "p50 330 ms" in final and "p95 530 ms" in final
    assert "left 0:00" in final and "100 %" in final
    assert "errors 1.0 %" in final
    assert "generator overloaded: send lag p99 80 ms" in final  # health warning
    assert ESC in t.screen(escapes=True)  # coloured on a TTY


@pytest.mark.timeout(60)
def test_tty_respects_no_color(tmux_run):
    t = tmux_run(5, NO_COLOR="1")
    t.wait_for("END 5")
    block = t.screen(escapes=True).split("END")[0]
    assert "voicepulse load" in block and ESC not in block


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_piped_prints_plain_periodic_lines():
    out = subprocess.run([sys.executable, str(SCRIPT), "20"], env=_env(), capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert ESC not in out and "\r" not in out
    lines = out.splitlines()
    assert lines[-1] == "END 20"
    progress = [line for line in lines if line.startswith("[voicepulse load] progress")]
    # a 2-second run with a 0.5 s log interval: a handful of lines, not one per update
    assert 2 <= len(progress) <= 8, out
    assert lines[-2].startswith("[voicepulse load] done 0:02/0:02")
    assert "started 20" in lines[-2] and "ttfa p50 320 ms p95 520 ms" in lines[-2]
    assert "WARNING generator overloaded" in lines[-2]


def test_interval_and_figures_with_a_fake_clock():
    now = [100.0]
    out = io.StringIO()
    p = Progress(60, stream=out, interval_s=1.0, log_interval_s=5.0, clock=lambda: now[0])
    p.update(sessions=1, ttfa_p50_ms=300.4, error_rate=0.0)
    for _ in range(4):
        now[0] += 1.0
        p.update(sessions=2)
    now[0] += 1.0
    p.update(cpu_pct=97.0, note="x")
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # first draw, one after 5 s, the final line
    assert lines[0].startswith("[voicepulse load] progress 0:00/1:00")
    assert "WARNING generator overloaded: cpu 97 % > 85 %" in lines[1] and "note x" in lines[1]
    assert lines[2].startswith("[voicepulse load] done 0:05/1:00")


def test_tty_block_fits_the_width_and_restores_the_cursor():
    out = io.StringIO()
    p = Progress(None, stream=out, tty=True, colour=False)
    p.update(sessions=3, warning="x" * 500)
    p.close()
    text = out.getvalue()
    assert text.startswith(f"{ESC}?25l") and text.endswith(f"{ESC}?25h")
    cols = shutil.get_terminal_size().columns
    for line in text.split("\n"):
        visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line).replace("\r", "")
        assert len(visible) < cols
    assert "elapsed 0:00" in text and "left" not in text  # open-ended run: no remaining time


def test_follow_a_status_file_written_by_another_process(tmp_path):
    from voicepulse.progress import follow_jsonl

    status = tmp_path / "status.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import json, sys, time\n"
        "f = open(sys.argv[1], 'a')\n"
        "for i in range(1, 6):\n"
        "    f.write(json.dumps({'sessions': i, 'ttfa_p95_ms': 500 + i}) + '\\n'); f.flush()\n"
        "    time.sleep(0.05)\n"
        "f.write('{\"sessions\": 6')\n"  # a half-written last line is not read
    ), str(status)])
    out = io.StringIO()
    p = Progress(10, stream=out, log_interval_s=0.0)
    n = follow_jsonl(str(status), p, lambda: writer.poll() is not None, poll_s=0.02,
                     timeout_s=30)
    writer.wait(timeout=10)
    assert n == 5 and p.figures == {"sessions": 5, "ttfa_p95_ms": 505}
    assert "started 5" in out.getvalue().splitlines()[-1]
