"""Plain-data builders for scheduler tests: results as the probe engine returns them."""

from __future__ import annotations

from probes.results import SessionResult, TurnResult


def result(target: str, at: float, ok: bool = True, ttfa: list[float] | None = None,
           kind: str = "probe") -> SessionResult:
    turns = [TurnResult(index=i, ttfa_ms=v) for i, v in enumerate(ttfa or [])]
    return SessionResult(target=target, provider="openai", model=target, kind=kind,
                         outcome="ok" if ok else "connect_refused", started_at=at, turns=turns,
                         session_id=f"{target}-{at}", duration_s=1.0)
