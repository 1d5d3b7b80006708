"""Builders of realistic results for telemetry tests."""

from __future__ import annotations

import random

from probes.results import SessionResult, TurnResult, Usage


def make_result(
    i: int,
    *,
    target: str = "sim-fast",
    started_at: float = 1_790_000_000.0,
    turns: int = 2,
    outcome: str = "ok",
    ttfa: float | None = None,
    rng: random.Random | None = None,
    kind: str = "probe",
    agent: str = "",
    run_id: str = "",
) -> SessionResult:
    rng = rng or random.Random(i)
    start_ns = 10_000_000_000 + i * 7_000_000_000
    r = SessionResult(
        target=target,
        provider="openai",
        model="gpt-realtime",
        kind=kind,
        agent=agent,
        run_id=run_id,
        session_id=f"sess-{target}-{i}",
        outcome=outcome,
        error="" if outcome == "ok" else f"failed: {outcome}",
        started_at=started_at + i * 7.0,
        connect_ms=5.0 + rng.random() * 10,
        ready_ms=20.0 + rng.random() * 10,
        duration_s=5.0,
        connect_start_ns=start_ns,
    )
    if outcome != "ok":
        return r
    for k in range(turns):
        r.turns.append(
            TurnResult(
                index=k,
                ttfa_ms=ttfa if ttfa is not None else 200.0 + rng.random() * 300.0,
                turn_ms=900.0 + rng.random() * 100.0,
                audio_s=1.5,
                rtf=1.4,
                stalls=k,
                usage=Usage(in_audio=30, out_audio=30, out_text=10),
                cost_usd=0.002,
                speech_end_ns=start_ns + (k + 1) * 2_000_000_000,
            )
        )
    return r
