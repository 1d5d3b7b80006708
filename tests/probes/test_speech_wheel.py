"""Real speech from `pip install` alone: with espeak-ng hidden from PATH, spoken() renders
through the espeakng-loader wheel's libespeak-ng, ending where the system binary's speech ends
(within 10 ms) when both exist; the demo's scenario step then plays instead of skipping."""

from __future__ import annotations

import ctypes.util
import io
import os
import re
import subprocess
import sys
import textwrap
import threading
import wave
from pathlib import Path

import pytest

from probes import audio, espeak
from tests.tools import require_module

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("espeak-ng", "espeak", "speak-ng")
#: short and medium test sentences, then what the example scenarios say
TEXTS = ("Hi.", "Hello there, how are you today?",
         "Hi, I am calling about my order A1234. Can you tell me where it is?",
         "Great, thank you. That is all I needed.",
         "What is the weather going to be like this weekend?")


def path_without_espeak(root: Path) -> str:
    """A PATH of one directory: symlinks to every program on PATH except espeak-ng."""
    farm = root / "bin"
    farm.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            link = farm / e.name
            if e.name not in HIDDEN and not link.exists() and not link.is_symlink():
                link.symlink_to(e.path)
    return str(farm)


@pytest.fixture
def no_system_espeak(monkeypatch, tmp_path):
    require_module("espeakng_loader")
    monkeypatch.setenv("PATH", path_without_espeak(tmp_path))
    audio.spoken.cache_clear()
    yield
    audio.spoken.cache_clear()


def test_backend_is_the_wheel_without_the_binary(no_system_espeak):
    assert espeak.backend() == "wheel"
    assert audio.espeak_available()
    assert os.path.isfile(espeak._wheel_paths()[0])


@pytest.mark.needs_tool("espeak-ng")
@pytest.mark.parametrize("rate, codec", [(24000, "pcm16"), (16000, "pcm16"), (8000, "g711_ulaw")])
def test_wheel_speech_ends_within_10_ms_of_the_binary(rate, codec, monkeypatch, tmp_path):
    require_module("espeakng_loader")
    audio.spoken.cache_clear()
    assert espeak.backend() == "system"
    system = [audio.spoken(t, rate=rate, codec=codec, chunk_ms=20) for t in TEXTS]
    monkeypatch.setenv("PATH", path_without_espeak(tmp_path))
    audio.spoken.cache_clear()
    assert espeak.backend() == "wheel"
    wheel = [audio.spoken(t, rate=rate, codec=codec, chunk_ms=20) for t in TEXTS]
    audio.spoken.cache_clear()
    for t, s, w in zip(TEXTS, system, wheel, strict=True):
        assert abs(w.speech_s - s.speech_s) <= 0.010, (t, s.speech_s, w.speech_s)
        assert abs(w.speech_chunks - s.speech_chunks) <= 1 and w.text == t
        assert (w.rate, w.codec) == (rate, codec)


@pytest.mark.needs_tool("espeak-ng")
@pytest.mark.parametrize("voice, wpm", [("en-us", 165), ("en-gb", 220)])
def test_the_ctypes_driver_is_bit_identical_to_the_binary_on_the_same_library(voice, wpm):
    """The wheel's driver, pointed at the system's own libespeak-ng and data, writes exactly
    the audio `espeak-ng --stdout` writes: any wheel difference is the library's version."""
    lib = ctypes.util.find_library("espeak-ng")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    data = re.search(r"Data at: (\S+)", version)
    if lib is None or data is None:
        pytest.skip(f"no system libespeak-ng to compare with ({version.strip()!r})")
    code = ("import sys; from probes import espeak; sys.stdout.buffer.write(espeak._library_wav("
            f"{lib!r}, {data.group(1)!r}, sys.stdin.read(), {voice!r}, {wpm}))")
    for text in TEXTS[1:3]:
        driver = subprocess.run([sys.executable, "-c", code], input=text.encode(), cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout
        binary = subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout"],
                                input=text.encode(), capture_output=True, check=True, timeout=60).stdout
        assert samples(driver) == samples(binary) and len(samples(driver)) > 20000


def samples(wav: bytes) -> bytes:
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        return w.readframes(w.getnframes())


def test_wheel_speech_follows_voice_and_rate(no_system_espeak):
    slow, fast = audio.spoken(TEXTS[1], wpm=120), audio.spoken(TEXTS[1], wpm=300)
    assert slow.speech_s > 1.8 * fast.speech_s  # the rate reached the library
    assert audio.spoken(TEXTS[1]).chunks != audio.spoken(TEXTS[1], voice="en-gb").chunks
    with pytest.raises(audio.AudioSourceError, match=r"voice 'nosuchvoice'.*no such voice"):
        audio.spoken(TEXTS[0], voice="nosuchvoice")
    assert audio.spoken(TEXTS[0]).speech_s > 0.1  # a bad voice leaves the library usable


def test_wheel_renders_are_reproducible_from_threads(no_system_espeak):
    """The same text gives the same bytes, whatever else renders at the same time (within one
    process, libespeak-ng would carry state from one synthesis into the next)."""
    alone = {t: espeak.wav(t, "en-us", 165) for t in TEXTS}
    got: dict[str, list[bytes]] = {t: [] for t in TEXTS}

    def render(t: str) -> None:
        got[t].append(espeak.wav(t, "en-us", 165))

    threads = [threading.Thread(target=render, args=(t,)) for t in TEXTS * 3]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert all(got[t] == [alone[t]] * 3 for t in TEXTS)


DEMO_STEP = textwrap.dedent("""
    import os, shutil
    os.environ.setdefault("SIM_API_KEY", "local-simulator")
    from probes import espeak
    assert shutil.which("espeak-ng") is None, shutil.which("espeak-ng")
    print("backend:", espeak.backend())
    from simulator.process import SimProcess
    from telemetry.wiring import Telemetry
    from voicepulse import demo
    from voicepulse.config import sim_target
    with SimProcess() as sim:
        demo.run_scenarios(Telemetry(store={store!r}), sim, sim_target("sim-fast", sim.realtime_url()))
""")


@pytest.mark.slow
def test_demo_scenario_step_plays_from_the_wheel(tmp_path):
    """In a fresh interpreter whose PATH has no espeak-ng, as after the README's pip install."""
    require_module("espeakng_loader")
    env = {**os.environ, "PATH": path_without_espeak(tmp_path), "PYTHONPATH": str(ROOT)}
    code = DEMO_STEP.format(store=str(tmp_path / "vp.db"))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=110)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend: wheel" in out
    assert "skipped" not in out, out
    for name in ("support-call", "interrupting-caller"):
        assert name in out, out
