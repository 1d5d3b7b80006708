"""Scripted-scenario accuracy: what the probe measures vs the simulator's ground truth, for
OpenAI Realtime and Gemini Live.

Runs scripted sessions (probes/script.py) against a simulator child process and holds each
measurement against the simulator's own marks (GET /truth, on the same CLOCK_MONOTONIC):

- barge-in   barge_in_ms - (truth cancel_ns - barge_in_ns); cancel delay fixed, 3 s reply at 1x
- tool       tool_ms - (truth tool_args_done_ns - E), and tool_result_ms - (truth first audio
             of the reply after the tool output - tool_result_sent_ns)
- WER        measured WER of a 50-word transcript vs the rate the simulator injected
- long call  expiry_s vs the profile's session_max_s and vs truth (closed_ns - ready_ns)
- G.711      audio_s vs truth reply_audio_ms (OpenAI only; 8 kHz, one byte a sample)

Errors are measured - truth, reported as absolute p50 / p99 / max plus the signed mean (bias).
Sessions run a few at a time in threads; the simulator shares the machine's cores, so on a busy
machine the tails carry its lateness as well as ours. Prints tables; not a test.

    python benchmarks/scenario_accuracy.py [--sessions 20] [--concurrency 4] [--long-sessions 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probes import audio  # noqa: E402
from probes.results import SessionResult  # noqa: E402
from probes.script import parse_script  # noqa: E402
from probes.session import prepare, run_session  # noqa: E402
from probes.spec import Scenario, Target, Timeouts  # noqa: E402
from simulator.process import SimProcess  # noqa: E402

PROVIDERS = ("openai", "gemini")
FIXED = ["--ttfa-ms", "150", "--reply-s", "0.6", "--delta-ms", "50", "--speed", "4"]
SHORT = {"ttfa_ms": 150, "reply_s": 0.6, "speed": 4.0}  # quick replies where length is moot

BARGE = [{"say": 0.8}, {"interrupt_after": {"ms": 300, "say": {"duration": 0.6}}}, "wait_reply"]
TOOLS = [{"type": "function", "name": "lookup_order", "description": "Find an order.",
          "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                         "required": ["order_id"]}}]
SUPPORT = [
    {"say": 0.8},
    {"expect_tool": {"name": "lookup_order", "args": {"order_id": "A1234"}}},
    {"tool_result": {"output": {"status": "shipped"}, "delay_ms": 200}},
    "wait_reply",
]
SCRIPT_50 = ("please book a table for four people at the italian restaurant near the station "
             "on friday evening at half past seven and let them know that one of us cannot eat "
             "gluten so we would like a quiet corner away from the kitchen if that is possible "
             "thanks a lot")
LONG = [{"repeat": {"until": "session_expired", "max": "30s",
                    "steps": [{"say": 0.5}, "wait_reply", {"silence": 300}]}}]
G711 = [{"say": 0.8}, "wait_reply", {"say": 0.6}, "wait_reply"]


def target(sim: SimProcess, provider: str, model: str, **kw) -> Target:
    if provider == "gemini":
        return Target("gsim", sim.gemini_url(), model, provider="gemini", **kw)
    return Target("sim", sim.realtime_url(), model, **kw)


def scripted(steps, expect=None, base_dir="", **kw) -> Scenario:
    kw.setdefault("trailing_silence_s", 0.5)
    return Scenario(name="scripted", script=parse_script(steps, expect, base_dir=base_dir), **kw)


def run_all(jobs: list[tuple], workers: int, failed: Counter) -> list[tuple]:
    """Run (key, target, scenario) jobs `workers` at a time; keep (key, result) of the ok ones."""
    for _, t, sc in jobs:
        prepare(t, sc)  # render the audio once, not inside timed sessions
    with ThreadPoolExecutor(max(1, workers)) as ex:
        futs = [(key, ex.submit(run_session, t, sc, api_key="x")) for key, t, sc in jobs]
        done = [(key, f.result()) for key, f in futs]
    for key, r in done:
        if r.outcome != "ok":
            failed[f"{key[0]}: {r.outcome} {r.error or ''}".strip()] += 1
    return [(key, r) for key, r in done if r.outcome == "ok"]


def responses(sim: SimProcess, r: SessionResult) -> list[dict]:
    return sorted(sim.turns(r.server_session_id), key=lambda t: t["turn_index"])


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, int(-(-p * len(s) // 100)) - 1))]


def error_table(title: str, rows: list[tuple[str, str, list[float]]], failed: Counter) -> None:
    print(f"\n## {title}\n")
    print("| provider | measured vs | n | abs err p50 ms | abs err p99 ms | abs err max ms "
          "| signed mean ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for provider, vs, errs in rows:
        a = [abs(e) for e in errs]
        mean = sum(errs) / len(errs) if errs else float("nan")
        print(f"| {provider} | {vs} | {len(errs)} | {pct(a, 50):.2f} | {pct(a, 99):.2f} "
              f"| {max(a, default=float('nan')):.2f} | {mean:+.2f} |")
    for what, n in failed.items():
        print(f"- not counted ({n}x): {what}")


def barge_in(sim: SimProcess, a) -> None:
    jobs = []
    for p in PROVIDERS:
        model = f"barge-{p}"
        sim.set_profile(model=model, reply_s=3.0, speed=1.0, ttfa_ms=150,
                        cancel_delay_ms=a.cancel_delay_ms)
        jobs += [((p,), target(sim, p, model), scripted(BARGE))] * a.sessions
    failed: Counter = Counter()
    errs: dict[str, list[float]] = {p: [] for p in PROVIDERS}
    for (p,), r in run_all(jobs, a.concurrency, failed):
        cut, truth = r.turns[0], responses(sim, r)[0]
        if truth["status"] != "cancelled" or cut.barge_in_ms is None:
            failed[f"{p}: reply not cut (truth {truth['status']}, {cut.notes})"] += 1
            continue
        errs[p].append(cut.barge_in_ms - (truth["cancel_ns"] - cut.barge_in_ns) / 1e6)
    error_table(f"barge-in (cancel_delay_ms {a.cancel_delay_ms}, reply 3 s at 1x)",
                [(p, "truth cancel - barge-in start", errs[p]) for p in PROVIDERS], failed)


def tools(sim: SimProcess, a) -> None:
    jobs = []
    for p in PROVIDERS:
        sim.set_profile(model=f"tool-{p}", **SHORT)
        jobs += [((p,), target(sim, p, f"tool-{p}", simulator_hints=True),
                  scripted(SUPPORT, tools=TOOLS))] * a.sessions
    failed: Counter = Counter()
    call_errs: dict[str, list[float]] = {p: [] for p in PROVIDERS}
    result_errs: dict[str, list[float]] = {p: [] for p in PROVIDERS}
    for (p,), r in run_all(jobs, a.concurrency, failed):
        ask, truth = r.turns[0], responses(sim, r)
        call = next((t for t in truth if t["tool_call"]), None)
        after = next((t for t in truth if t["tool_output_ns"] is not None), None)
        if call is None or after is None or ask.tool_ms is None or ask.tool_result_ms is None:
            failed[f"{p}: no tool round trip ({ask.notes})"] += 1
            continue
        call_errs[p].append(ask.tool_ms - (call["tool_args_done_ns"] - ask.speech_end_ns) / 1e6)
        result_errs[p].append(
            ask.tool_result_ms - (after["first_audio_ns"] - ask.tool_result_sent_ns) / 1e6)
    rows = [(p, "tool_ms: truth args done - E", call_errs[p]) for p in PROVIDERS]
    rows += [(p, "tool_result_ms: truth first audio - result sent", result_errs[p])
             for p in PROVIDERS]
    error_table("tool calls (result delay 200 ms)", rows, failed)


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    pcm = audio.speech(seconds, rate, seed=7)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def word_errors(sim: SimProcess, a) -> None:
    levels = (0.1, 0.2, 0.3)
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        write_wav(Path(tmp) / "booking.wav")
        steps = [{"say": {"wav": "booking.wav", "transcript": SCRIPT_50}}, "wait_reply"]
        sc = scripted(steps, base_dir=tmp, transcription_model="whisper-1")
        for p in PROVIDERS:
            for w in levels:
                model = f"wer-{p}-{w}"
                sim.set_profile(model=model, wer=w, **SHORT)
                jobs += [((p, w), target(sim, p, model, simulator_hints=True), sc)] * a.sessions
        failed: Counter = Counter()
        got: dict[tuple, list[float]] = {(p, w): [] for p in PROVIDERS for w in levels}
        for key, r in run_all(jobs, a.concurrency, failed):
            if r.turns[0].wer is None:
                failed[f"{key[0]}: no WER ({r.turns[0].notes})"] += 1
            else:
                got[key].append(r.turns[0].wer)
    print("\n## WER (50-word transcript, substitutions injected by the simulator)\n")
    print("| provider | injected | n | measured mean | min | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for (p, w), v in got.items():
        mean = sum(v) / len(v) if v else float("nan")
        print(f"| {p} | {w:.2f} | {len(v)} | {mean:.4f} | {min(v, default=float('nan')):.4f} "
              f"| {max(v, default=float('nan')):.4f} |")
    for what, n in failed.items():
        print(f"- not counted ({n}x): {what}")


def long_calls(sim: SimProcess, a) -> None:
    jobs = []
    for p in PROVIDERS:
        sim.set_profile(model=f"long-{p}", session_max_s=a.session_max_s, **SHORT)
        sc = scripted(LONG, "session_expired", timeouts=Timeouts(session=a.session_max_s + 10))
        jobs += [((p,), target(sim, p, f"long-{p}"), sc)] * a.long_sessions
    failed: Counter = Counter()
    vs_max: dict[str, list[float]] = {p: [] for p in PROVIDERS}
    vs_truth: dict[str, list[float]] = {p: [] for p in PROVIDERS}
    for (p,), r in run_all(jobs, len(jobs), failed):  # all at once: each lasts session_max_s
        st = next((s for s in sim.truth(session_id=r.server_session_id)["sessions"]), None)
        if r.expiry_s is None or st is None or st["closed_ns"] is None:
            failed[f"{p}: no expiry ({r.ended_by or 'not ended'})"] += 1
            continue
        vs_max[p].append((r.expiry_s - a.session_max_s) * 1000)
        vs_truth[p].append((r.expiry_s - (st["closed_ns"] - st["ready_ns"]) / 1e9) * 1000)
    rows = [(p, f"profile session_max_s {a.session_max_s:g} s", vs_max[p]) for p in PROVIDERS]
    rows += [(p, "truth closed - ready", vs_truth[p]) for p in PROVIDERS]
    error_table("long call expiry_s (sessions run concurrently)", rows, failed)


def g711(sim: SimProcess, a) -> None:
    codecs = ("g711_ulaw", "g711_alaw")
    sim.set_profile(model="g711", **SHORT)
    jobs = [((c,), target(sim, "openai", "g711", input_format=c, output_format=c),
             scripted(G711)) for c in codecs for _ in range(a.sessions)]
    failed: Counter = Counter()
    errs: dict[str, list[float]] = {c: [] for c in codecs}
    for (c,), r in run_all(jobs, a.concurrency, failed):
        for mine, tt in zip(r.turns, responses(sim, r), strict=False):
            errs[c].append(mine.audio_s * 1000 - tt["reply_audio_ms"])
    error_table("G.711 reply audio_s (per turn; 50 ms deltas)",
                [(f"openai {c}", "truth reply_audio_ms", errs[c]) for c in codecs], failed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20, help="sessions per provider and case")
    ap.add_argument("--concurrency", type=int, default=4, help="sessions at a time")
    ap.add_argument("--cancel-delay-ms", type=float, default=200.0)
    ap.add_argument("--session-max-s", type=float, default=3.0)
    ap.add_argument("--long-sessions", type=int, default=3, help="long calls per provider")
    ap.add_argument("--no-g711", action="store_true", help="skip the G.711 audio_s table")
    a = ap.parse_args()
    print(f"# {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"# {os.cpu_count()} CPUs, load avg before: {os.getloadavg()[0]:.2f}; "
          f"{a.sessions} sessions per provider and case, {a.concurrency} at a time; "
          f"simulator {' '.join(FIXED)}")
    t0 = time.monotonic()
    with SimProcess(args=FIXED) as sim:
        for case in (barge_in, tools, word_errors, long_calls, *(() if a.no_g711 else (g711,))):
            case(sim, a)
            sim.reset()
    print(f"\nwall {time.monotonic() - t0:.0f} s; load avg after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
