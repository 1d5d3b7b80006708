"""The instrument: one voice session against one target, measured (docs/design.md, "The packages").

Public API:
- `probes.session.run_session(target, scenario, *, kind, agent, run_id, api_key,
  intended_start_ns, stop) -> SessionResult`: never raises for anything the target does.
- `probes.session.prepare(target, scenario)`: render and encode the audio up front (load
  generators call it once before a run).
- `probes.spec` (Target, Scenario, Timeouts) in, `probes.results` (SessionResult, TurnResult,
  Usage) out.
- `probes.dialects.dialect_for(target, turn_mode)`: the sans-I/O protocol codec.
- `probes.audio`: speech-like utterances, G.711; `probes.prices`: cost of a usage.

Inside, one engine over two seams: `transport` (how bytes reach the server: WebSocket today)
under `session` (I/O and pacing), the dialect's normalised events into `marks` (the receiver's
pure state machine), `measure` (marks -> results), and `play`, the one driver of every scenario
(`turns: N` is compiled into a script).

Imports nothing else of ours.
"""
